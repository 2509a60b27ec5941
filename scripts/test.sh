#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this). On a fresh machine it installs what the tests
# need: ONNX Runtime's library from PyPI's wheel (.ort/), and a small Python environment (.venv-test/) with
# the eclipse-zenoh package for the interop test and PyPI's mcap reader for the recording test. Then: formatting, lints as errors, every test of the
# workspace, the Python wire codec's tests, the systemd unit and the installed layout (scripts/check-service.sh),
# and a build of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
if [[ ! -x .venv-test/bin/python ]] || ! .venv-test/bin/python -c "import zenoh, mcap" 2>/dev/null; then
  python3 -m venv .venv-test
  .venv-test/bin/pip install --quiet --disable-pip-version-check eclipse-zenoh==1.10.2 mcap==1.6.0
fi
export COXSWAIN_PYTHON="$PWD/.venv-test/bin/python" COXSWAIN_REQUIRE_PYTHON=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
"$COXSWAIN_PYTHON" drivers/msg/python/test_codec.py
scripts/check-service.sh target/debug/coxswain
cargo build --locked --manifest-path drivers/msg/fuzz/Cargo.toml
