#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this): installs ONNX Runtime from PyPI if missing, then
# checks formatting, lints with warnings as errors, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
