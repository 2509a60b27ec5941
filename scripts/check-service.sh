#!/usr/bin/env bash
# CI's check of the service files: stages scripts/install-service.sh into a temporary root with the debug
# binary, verifies the installed unit with `systemd-analyze verify` (Debian's systemd package; installed here
# if missing), and checks the installed deployment whole with the installed binary (`coxswain check --config`),
# its absolute paths pointed into the staging root.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
binary="${1:-$repo/target/debug/coxswain}"
if ! command -v systemd-analyze >/dev/null; then
  echo "check-service: installing Debian's systemd package for systemd-analyze" >&2
  sudo_=""; [[ "$(id -u)" != 0 ]] && sudo_="sudo"
  $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
"$repo/scripts/install-service.sh" --root "$stage" --binary "$binary" >/dev/null
# The unit and the deployment as they would read in place, their paths redirected into the stage.
redirect() { sed -e "s#/usr/local/bin/coxswain#$stage/usr/local/bin/coxswain#g" -e "s#/opt/coxswain#$stage/opt/coxswain#g" \
  -e "s#/etc/coxswain#$stage/etc/coxswain#g" -e "s#/var/lib/coxswain#$stage/var/lib/coxswain#g" "$1"; }
redirect "$stage/etc/systemd/system/coxswain.service" > "$stage/coxswain.service"
redirect "$stage/etc/coxswain/deployment.toml" > "$stage/etc/coxswain/deployment.staged.toml"
# verify exits 0 on unknown keys and bad values (it only warns): any warning about the unit is a failure.
out="$(systemd-analyze verify "$stage/coxswain.service" 2>&1)" || { echo "$out" >&2; exit 1; }
if grep -q "coxswain.service" <<<"$out"; then
  echo "check-service: systemd-analyze verify warns about the unit:" >&2
  echo "$out" >&2
  exit 1
fi
ORT_DYLIB_PATH="$stage/opt/coxswain/lib/libonnxruntime.so.1.31.1" \
  "$stage/usr/local/bin/coxswain" check --config "$stage/etc/coxswain/deployment.staged.toml" | tail -1
echo "check-service: the unit verifies and the installed deployment checks"
