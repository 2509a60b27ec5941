#!/usr/bin/env bash
# The main job (README): installs ONNX Runtime from PyPI if missing, builds coxswain, checks the simulated
# arm's description against the committed diffusion policy, then runs the policy in closed loop on the
# built-in simulated robot (over Zenoh, with the safety filter and real-time chunking) for a few episodes of
# the reaching task and prints the summary. The run is recorded (MCAP, target/demo-recording/<time>/), then
# summarised and plotted (`coxswain report`) and replayed bit for bit (`coxswain replay`).
#
#   scripts/demo.sh            # 3 episodes of reach-dp
#   EPISODES=10 POLICY=models/reach-flow scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
cargo build --release --locked -p coxswain-cli -p coxswain-sim
bin=target/release/coxswain
policy="${POLICY:-models/reach-dp}"
echo "== coxswain check --robot firmware-configs/sim-arm.toml --policy $policy"
"$bin" check --robot firmware-configs/sim-arm.toml --policy "$policy"
echo
rec="target/demo-recording/$(date -u +%Y%m%dT%H%M%SZ)"
echo "== coxswain run --robot firmware-configs/sim-arm.toml --policy $policy --episodes ${EPISODES:-3} --record $rec"
"$bin" run --robot firmware-configs/sim-arm.toml --policy "$policy" --episodes "${EPISODES:-3}" --record "$rec"
echo
echo "== coxswain report $rec"
"$bin" report "$rec"
echo
echo "== coxswain replay $rec"
"$bin" replay "$rec"
