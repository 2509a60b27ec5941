"""Starts sts3215_emulator.py as a subprocess for the tests in this folder, and talks to its control socket."""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "sts3215_emulator.py")
START_TIMEOUT_S = 20.0  # generous: the test machine is shared and loaded


class Emulator:
    def __init__(self, *args):
        self._dir = tempfile.TemporaryDirectory(prefix="sts3215-")
        self.control_path = os.path.join(self._dir.name, "control.sock")
        self.proc = subprocess.Popen(
            [sys.executable, EMULATOR, "--control", self.control_path, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError(f"emulator did not start: stdout {line!r}, stderr {err.decode()!r}")
        self.port = line.split(" ", 1)[1].strip()
        self._stopped = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(START_TIMEOUT_S)
        self._sock.connect(self.control_path)
        self._lines = self._sock.makefile("rb")

    def ctl(self, line):
        """One control line; returns its one reply line."""
        self._sock.sendall(line.encode() + b"\n")
        return self._lines.readline().decode().rstrip("\n")

    def state(self):
        return json.loads(self.ctl("state"))

    def regs(self, servo_id):
        return self.state()["servos"][str(servo_id)]["registers"]

    def stop(self, how="sigterm"):
        """Stops it (SIGTERM or closing stdin); returns (exit code, parsed summary line, stderr text)."""
        if self._stopped is not None:
            return self._stopped
        self._lines.close()
        self._sock.close()
        if how == "stdin":
            self.proc.stdin.close()
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read().decode()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if not f.closed:
                f.close()
        self._dir.cleanup()
        lines = [l for l in err.splitlines() if l.startswith("{")]
        summary = json.loads(lines[-1]) if lines else None
        self._stopped = (self.proc.returncode, summary, err)
        return self._stopped

    def close(self):
        if self._stopped is None:
            self.stop()
