#!/usr/bin/env bash
# The main job (README): installs ONNX Runtime from PyPI if missing, builds coxswain, shows what the committed
# diffusion policy is (ONNX signature, manifest bindings, inference cost) and samples a chunk of joint targets
# for the simulated arm's reaching task from its default pose. The control loop and simulated robot replace
# this with a full demo in the next milestones.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
cargo build --release --locked -p coxswain
bin=target/release/coxswain
echo
echo "== coxswain inspect models/reach-dp"
"$bin" inspect models/reach-dp --runs 200
echo
echo "== coxswain sample models/reach-dp (arm at its default pose, target at the centre of the target box)"
"$bin" sample models/reach-dp --candidates 2 --seed 1 \
  --set joint_pos=-1.2,1.0,0.6 --set target=0.25,0.35
