#!/usr/bin/env bash
# Installs coxswain as a systemd service on this machine (run as root), or into a staging root (--root):
#
#   sudo scripts/install-service.sh --deployment firmware-configs/deploy/sim-arm.toml
#   sudo systemctl enable --now coxswain          # then arm it: coxswain arm --robot ... --connect ...
#
# What goes where:
#   /usr/local/bin/coxswain                        the release binary (built here unless --binary is given)
#   /opt/coxswain/lib/libonnxruntime.so.*          ONNX Runtime (scripts/install-onnxruntime.sh, from PyPI)
#   /opt/coxswain/{firmware-configs,models}/       the robot descriptions and model folders, as in the repo
#   /etc/coxswain/deployment.toml                  the deployment, its paths made absolute (edit this one)
#   /etc/systemd/system/coxswain.service           firmware-configs/systemd/coxswain.service
#   /var/lib/coxswain/                             recordings, owned by the service's user
# and a system user `coxswain` (groups dialout) that the service runs as. The service is not started.
#
# Options: --deployment FILE (default firmware-configs/deploy/sim-arm.toml), --binary PATH (skip the build),
# --root DIR (install under DIR, no user, no systemctl: for packaging and for CI's check of the layout).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
deployment="$repo/firmware-configs/deploy/sim-arm.toml"
binary=""
root=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --deployment) deployment="$(realpath "$2")"; shift 2 ;;
    --binary) binary="$(realpath "$2")"; shift 2 ;;
    --root) root="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "install-service: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -f "$deployment" ]] || { echo "install-service: --deployment $deployment: no such file" >&2; exit 1; }
if [[ -z "$root" && "$(id -u)" != 0 ]]; then
  echo "install-service: run as root (sudo), or give --root DIR to stage the files" >&2
  exit 1
fi
case "$deployment" in
  "$repo"/*) ;;
  *) echo "install-service: --deployment must be a file inside this repository ($repo)" >&2; exit 1 ;;
esac

if [[ -z "$binary" ]]; then
  (cd "$repo" && cargo build --release --locked -p coxswain-cli)
  binary="$repo/target/release/coxswain"
fi
[[ -x "$binary" ]] || { echo "install-service: $binary is not an executable" >&2; exit 1; }
"$repo/scripts/install-onnxruntime.sh"

opt="$root/opt/coxswain"
install -d "$root/usr/local/bin" "$opt/lib" "$root/etc/coxswain" "$root/etc/systemd/system" "$root/var/lib/coxswain"
install -m 0755 "$binary" "$root/usr/local/bin/coxswain"
cp -a "$repo/.ort/lib/." "$opt/lib/"
rm -rf "$opt/firmware-configs" "$opt/models"
cp -a "$repo/firmware-configs" "$opt/firmware-configs"
# The model folders without the training scratch (models/tools/.data).
mkdir -p "$opt/models"
tar -C "$repo/models" --exclude=./tools -cf - . | tar -C "$opt/models" -xf -

# The deployment with absolute paths into /opt/coxswain (relative paths in it are relative to its folder).
dir="$(dirname "$deployment")"
rel_dir="${dir#"$repo"/}"
out="$root/etc/coxswain/deployment.toml"
{
  echo "# Installed by scripts/install-service.sh from $rel_dir/$(basename "$deployment"); paths made absolute."
  while IFS= read -r line; do
    if [[ "$line" =~ ^(robot|policy|config|dir)[[:space:]]*=[[:space:]]*\"([^\"]+)\"(.*)$ ]]; then
      key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}" rest="${BASH_REMATCH[3]}"
      if [[ "$value" != /* ]]; then
        abs="$(realpath -m "$dir/$value")"
        value="/opt/coxswain/${abs#"$repo"/}"
      fi
      line="$key = \"$value\"$rest"
    fi
    printf '%s\n' "$line"
  done < "$deployment"
} > "$out"
chmod 0644 "$out"
install -m 0644 "$repo/firmware-configs/systemd/coxswain.service" "$root/etc/systemd/system/coxswain.service"

if [[ -z "$root" ]]; then
  if ! id coxswain >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /var/lib/coxswain --shell /usr/sbin/nologin coxswain
  fi
  usermod -a -G dialout coxswain 2>/dev/null || true
  chown -R coxswain:coxswain /var/lib/coxswain
  if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
  fi
  echo "install-service: installed; check it with: coxswain check --config /etc/coxswain/deployment.toml"
  echo "install-service: start it with: systemctl enable --now coxswain   (it stays disarmed until armed)"
else
  echo "install-service: staged under $root"
fi
