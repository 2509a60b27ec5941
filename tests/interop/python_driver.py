"""A motor driver written by somebody else: Python's eclipse-zenoh package and the repo's stand-alone codec
of the written wire specification (drivers/msg/python/coxswain_msg.py), nothing generated from Rust.

It connects to the Rust side, publishes JointState on robot/<id>/state/joints, reads JointCommand from
robot/<id>/cmd/joints and checks each command answers a state it sent (the Rust side echoes position + 0.1
with the state's sequence number). Exits 0 when enough round trips checked out.

    python tests/interop/python_driver.py tcp/127.0.0.1:7447 interop 200
"""

import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "drivers" / "msg" / "python"))

import coxswain_msg as cm  # noqa: E402
import zenoh  # noqa: E402


def main() -> int:
    endpoint, robot, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conf = zenoh.Config()
    conf.insert_json5("mode", '"peer"')
    conf.insert_json5("connect/endpoints", f'["{endpoint}"]')
    conf.insert_json5("scouting/multicast/enabled", "false")
    session = zenoh.open(conf)

    sent = {}
    ok = 0
    bad = []
    lock = threading.Lock()

    def on_command(sample):
        nonlocal ok
        try:
            cmd = cm.decode_joint_command(bytes(sample.payload.to_bytes()))
        except cm.DecodeError as e:
            bad.append(f"decode: {e}")
            return
        with lock:
            state = sent.get(cmd.header.seq)
        if state is None:
            return  # an answer to a state from before this run
        want = [p + 0.1 for p in state]
        if len(cmd.position_rad) == len(want) and all(abs(a - b) < 1e-5 for a, b in zip(cmd.position_rad, want)):
            ok += 1
        else:
            bad.append(f"seq {cmd.header.seq}: got {cmd.position_rad}, want {want}")

    sub = session.declare_subscriber(f"robot/{robot}/cmd/joints", on_command)
    pub = session.declare_publisher(f"robot/{robot}/state/joints")
    deadline = time.time() + 30
    seq = 0
    while ok < count and time.time() < deadline and not bad:
        seq += 1
        q = [0.001 * seq, -0.002 * seq, 0.5]
        with lock:
            sent[seq] = q
        msg = cm.JointState(header=cm.Header(seq=seq, stamp_ns=time.monotonic_ns()), position_rad=q,
                            velocity_rad_s=[0.0, 0.0, 0.0], effort_nm=[0.1, 0.2, 0.3])
        pub.put(cm.encode_joint_state(msg))
        time.sleep(0.002)
    sub.undeclare()
    session.close()
    print(f"python driver: sent {seq} states, {ok} commands checked, {len(bad)} bad")
    for b in bad[:5]:
        print("  " + b)
    return 0 if ok >= count and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
