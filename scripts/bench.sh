#!/usr/bin/env bash
# Runs the benches with their baselines: sets up a small Python environment (.venv-bench: onnxruntime and
# numpy from PyPI, no torch) for the Python baseline, then `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
if [[ ! -x .venv-bench/bin/python ]]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install --quiet onnxruntime==1.31.1 numpy
fi
export COXSWAIN_BENCH_PYTHON="$PWD/.venv-bench/bin/python"
cargo bench --locked -p coxswain --bench sampler
cargo bench --locked -p coxswain --bench control_timing
cargo bench --locked -p coxswain --bench steering
cargo bench --locked -p coxswain-zenoh --bench roundtrip
cargo bench --locked -p coxswain-cli --bench swap
