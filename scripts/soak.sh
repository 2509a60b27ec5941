#!/usr/bin/env bash
# Soak test: `coxswain serve` against the simulated arm (coxswain-sim in its own process) at 1 kHz, recording,
# for a given time; then a controlled stop. Reports RSS over time (flat or not), overruns, tick lateness
# percentiles and recording drops.
#
#   scripts/soak.sh [--duration-s 3600] [--out DIR] [--priority 80]
#
# Release build (built here if missing). The robot is sim-arm.toml with its rates raised to 1000 Hz; the
# policy is reach-dp, armed over Zenoh once the service is ready, holding its episode's target.
# Writes DIR/rss.csv (seconds, RSS in KiB), DIR/serve.log, DIR/summary.txt; recordings under DIR/rec (deleted
# at the end unless --keep-recordings: an hour at 1 kHz is a few hundred MB).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
duration=3600
out="$repo/target/soak"
priority=80
keep=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration-s) duration="$2"; shift 2 ;;
    --out) out="$(realpath -m "$2")"; shift 2 ;;
    --priority) priority="$2"; shift 2 ;;
    --keep-recordings) keep=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "soak: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$duration" =~ ^[0-9]+$ ]] || (( duration < 10 )); then
  echo "soak: --duration-s $duration: give a whole number of seconds, at least 10" >&2
  exit 2
fi
bin="${COXSWAIN_BIN_DIR:-$repo/target/release}"
if [[ ! -x "$bin/coxswain" || ! -x "$bin/coxswain-sim" ]]; then
  (cd "$repo" && cargo build --release --locked -p coxswain-cli -p coxswain-sim)
fi
"$repo/scripts/install-onnxruntime.sh"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$repo/.ort/lib/libonnxruntime.so.1.31.1}"
rm -rf "$out"
mkdir -p "$out/rec"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port="$(free_port)"
rt_port="$(free_port)"
# The robot at 1 kHz (control and joint state), its zenoh config replaced by the soak's own.
sed -e 's/^control_hz = .*/control_hz = 1000.0/' -e 's/^state_hz = .*/state_hz = 1000.0/' \
  -e 's#^config = "zenoh/peer.json5"#config = "zenoh.json5"#' "$repo/firmware-configs/sim-arm.toml" > "$out/robot.toml"
cat > "$out/zenoh.json5" <<EOF
{ mode: "peer", listen: { endpoints: ["tcp/127.0.0.1:$rt_port"] }, connect: { endpoints: ["tcp/127.0.0.1:$sim_port"] },
  scouting: { multicast: { enabled: false }, gossip: { enabled: false } } }
EOF
cat > "$out/deploy.toml" <<EOF
[deployment]
robot = "robot.toml"
policy = "$repo/models/reach-dp"

[record]
dir = "rec"
max_mib = 64

[rt]
priority = $priority
lock_memory = true

[health]
startup_timeout_s = 30
status_period_s = 10.0
EOF

"$bin/coxswain-sim" --robot "$out/robot.toml" --listen "tcp/127.0.0.1:$sim_port" --episode --seed 1 > "$out/sim.log" 2>&1 &
sim_pid=$!
sleep 1
"$bin/coxswain" serve --config "$out/deploy.toml" > "$out/serve.out" 2> "$out/serve.log" &
serve_pid=$!
cleanup() { kill "$sim_pid" "$serve_pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q "ready:" "$out/serve.log" && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$out/serve.log" >&2; echo "soak: serve exited before it was ready" >&2; exit 1; }
  sleep 0.1
done
grep -q "ready:" "$out/serve.log" || { echo "soak: serve not ready within 30 s" >&2; exit 1; }
"$bin/coxswain" arm --robot "$out/robot.toml" --connect "tcp/127.0.0.1:$rt_port" --source soak >/dev/null

echo "seconds,rss_kib" > "$out/rss.csv"
start=$(date +%s)
while (( $(date +%s) - start < duration )); do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$serve_pid/status" 2>/dev/null || echo "")
  [[ -n "$rss" ]] || { echo "soak: serve died" >&2; tail -20 "$out/serve.log" >&2; exit 1; }
  echo "$(( $(date +%s) - start )),$rss" >> "$out/rss.csv"
  sleep 10
done
kill -TERM "$serve_pid"
wait "$serve_pid" && serve_rc=0 || serve_rc=$?
kill "$sim_pid" 2>/dev/null || true
trap - EXIT

python3 - "$out" "$duration" "$serve_rc" <<'EOF' | tee "$out/summary.txt"
import csv, sys, pathlib
out, duration, rc = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = [(int(a), int(b)) for a, b in list(csv.reader(open(out / "rss.csv")))[1:]]
first = [r for t, r in rows if t <= 300] or [rows[0][1]]
last = [r for t, r in rows if t >= duration - 300] or [rows[-1][1]]
after_warmup = [r for t, r in rows if t >= 60] or [r for _, r in rows]
print(f"soak {duration} s at 1 kHz, serve exit status {rc}")
print(f"rss   first 5 min mean {sum(first) / len(first) / 1024:.1f} MiB, last 5 min mean {sum(last) / len(last) / 1024:.1f} MiB, "
      f"after the first minute min {min(after_warmup) / 1024:.1f} max {max(after_warmup) / 1024:.1f} MiB ({len(rows)} samples)")
for line in (out / "serve.out").read_text().splitlines():
    print(line)
EOF
if (( keep == 0 )); then rm -rf "$out/rec"; fi
exit "$serve_rc"
