"""Does a Python node hold a 500 Hz MuJoCo loop? Measures it.

1. Physics: `Physics.step()` on the SO-101 pick scene, one step at a time (mean, p99, max, in us), and the cost of
   one `JointState` encode with the reference codec (the state-rate work besides the physics).
2. The node: `coxswain-mujoco` as a process for `--duration-s`, a client commanding it at the description's
   control rate (200 Hz, as the runtime does) and counting the joint states that arrive. Reported: the node's own
   wake-up lateness of physics ticks (p50/p99/max), overruns (ticks woken more than one period late), skipped steps,
   achieved physics and state rates, and the state rate the client saw.
   (a) alone; (b) with `--load busy` (a busy-loop process per `--load-procs`, to take the other core), or
   `--load-cmd "..."` (any command, e.g. the runtime driving the sim arm).

    .venv-hil/bin/python drivers/mujoco/bench.py --duration-s 20
    .venv-hil/bin/python drivers/mujoco/bench.py --duration-s 20 --load busy

The per-tick budget at 500 Hz is 2000 us: physics + inputs + (2 of 5 ticks) a state message.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tests"))

from coxswain_mujoco.physics import Physics  # noqa: E402
from support import Collector, NodeProcess, ROBOT, msg  # noqa: E402


def bench_physics(steps: int) -> dict:
    p = Physics(ROBOT)
    target = p.q()
    target[0] = 0.5
    p.set_targets(target)
    for _ in range(200):
        p.step()
    t = np.zeros(steps, dtype=np.int64)
    for i in range(steps):
        t0 = time.perf_counter_ns()
        p.step()
        t[i] = time.perf_counter_ns() - t0
    enc = np.zeros(2000, dtype=np.int64)
    for i in range(len(enc)):
        t0 = time.perf_counter_ns()
        state = msg.JointState(msg.Header(i, time.monotonic_ns()), p.q().tolist(), p.qd().tolist(), p.effort().tolist())
        msg.encode_joint_state(state)
        enc[i] = time.perf_counter_ns() - t0
    return {
        "step_mean_us": t.mean() / 1e3,
        "step_p99_us": np.percentile(t, 99) / 1e3,
        "step_max_us": t.max() / 1e3,
        "state_msg_mean_us": enc.mean() / 1e3,
        "state_msg_p99_us": np.percentile(enc, 99) / 1e3,
    }


def bench_node(duration_s: float, control_hz: float, rt_priority: int) -> dict:
    node = NodeProcess("--duration-s", str(duration_s + 2.0), "--rt-priority", str(rt_priority))
    states = Collector(node.client, "robot/so101/state/joints")
    pub = node.client.declare_publisher("robot/so101/cmd/joints")
    stop = threading.Event()
    q0 = msg.decode_joint_state(states.wait(1)[-1][1]).position_rad

    def commander():
        seq, period = 0, 1.0 / control_hz
        nxt = time.monotonic()
        while not stop.is_set():
            seq += 1
            t = seq * period
            q = list(q0)
            q[0] = 0.4 * np.sin(2 * np.pi * 0.5 * t)
            stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            pub.put(msg.encode_joint_command(msg.JointCommand(msg.Header(seq, stamp), q, [0.0] * 6, [0.0] * 6)))
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    th = threading.Thread(target=commander, daemon=True)
    th.start()
    states.take()
    t0 = time.monotonic()
    time.sleep(duration_s)
    got = states.take()
    seen_s = time.monotonic() - t0
    stop.set()
    th.join()
    node.proc.wait(timeout=duration_s + 30)
    rc, err = node.stop()
    line = [l for l in err.splitlines() if " steps in " in l]
    if rc != 0 or not line:
        raise RuntimeError(f"node failed ({rc}):\n{err}")
    s = line[-1]

    def num(pattern):
        m = re.search(pattern, s)
        return float(m.group(1)) if m else float("nan")

    arrivals = np.array([a for a, _ in got])
    gaps_ms = np.diff(arrivals) * 1e3 if len(arrivals) > 1 else np.array([0.0])
    return {
        "summary": s,
        "physics_hz": num(r"\(([\d.]+) Hz\), \d+ states"),
        "state_hz_node": num(r"states published \(([\d.]+) Hz\)"),
        "state_hz_seen": len(got) / seen_s,
        "state_gap_p99_ms": float(np.percentile(gaps_ms, 99)),
        "state_gap_max_ms": float(gaps_ms.max()),
        "overruns": num(r"overruns (\d+)"),
        "skipped": num(r"skipped steps (\d+)"),
        "steps": num(r"^coxswain-mujoco: (\d+) steps"),
        "lateness_p50_us": num(r"lateness p50 (\d+) us"),
        "lateness_p99_us": num(r"p99 (\d+) us"),
        "lateness_max_us": num(r"max (\d+) us"),
        "accepted": num(r"accepted (\d+)"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--physics-steps", type=int, default=20000)
    ap.add_argument("--control-hz", type=float, default=200.0)
    ap.add_argument("--load", choices=["none", "busy"], default="none")
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument("--rt-priority", type=int, default=0, help="passed to the node (SCHED_FIFO loop thread)")
    ap.add_argument("--load-cmd", help="a command to run as load instead (shell words)")
    args = ap.parse_args()

    loads = []
    if args.load_cmd:
        loads.append(subprocess.Popen(shlex.split(args.load_cmd), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    elif args.load == "busy":
        for _ in range(args.load_procs):
            loads.append(subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True))
    try:
        load_desc = args.load_cmd or (f"{args.load_procs} busy-loop process(es)" if args.load == "busy" else "none")
        print(f"machine: {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}; extra load: {load_desc}")
        ph = bench_physics(args.physics_steps)
        print(f"physics step (SO-101 pick scene, {args.physics_steps} steps): mean {ph['step_mean_us']:.1f} us, "
              f"p99 {ph['step_p99_us']:.1f} us, max {ph['step_max_us']:.0f} us; JointState build+encode: "
              f"mean {ph['state_msg_mean_us']:.1f} us, p99 {ph['state_msg_p99_us']:.1f} us; budget 2000 us per tick")
        nd = bench_node(args.duration_s, args.control_hz, args.rt_priority)
        print(f"node (rt priority {args.rt_priority or 'none'}) over {args.duration_s:g} s, commanded at {args.control_hz:g} Hz: physics {nd['physics_hz']:.1f} Hz, "
              f"state published {nd['state_hz_node']:.1f} Hz, seen by the client {nd['state_hz_seen']:.1f} Hz "
              f"(arrival gap p99 {nd['state_gap_p99_ms']:.1f} ms, max {nd['state_gap_max_ms']:.1f} ms); "
              f"tick lateness p50 {nd['lateness_p50_us']:.0f} us, p99 {nd['lateness_p99_us']:.0f} us, "
              f"max {nd['lateness_max_us']:.0f} us; overruns {nd['overruns']:.0f} of {nd['steps']:.0f} ticks, "
              f"skipped steps {nd['skipped']:.0f}; commands accepted {nd['accepted']:.0f}")
        print(f"load average after {os.getloadavg()[0]:.2f}")
        print(nd["summary"])
    finally:
        for p in loads:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
