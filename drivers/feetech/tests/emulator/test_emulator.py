"""Raw-byte tests of the emulator's protocol rules (standard library only).

"No reply" is asserted without a timing window: the test sends the packet that must stay unanswered and
then a PING, and checks that the first bytes to come back are exactly the PING's status packet.

    python3 -m unittest discover -s drivers/feetech/tests/emulator -p 'test_emulator.py' -v
"""

import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_harness import EMULATOR, Emulator  # noqa: E402

READ_TIMEOUT_S = 10.0


def chk(body):
    return (~sum(body)) & 0xFF


def instruction(sid, instr, params=b""):
    body = bytes([sid, len(params) + 2, instr]) + bytes(params)
    return b"\xff\xff" + body + bytes([chk(body)])


def status(sid, params=b"", error=0):
    body = bytes([sid, len(params) + 2, error]) + bytes(params)
    return b"\xff\xff" + body + bytes([chk(body)])


def ping(sid):
    return instruction(sid, 0x01)


def read(sid, addr, length):
    return instruction(sid, 0x02, [addr, length])


def write(sid, addr, data):
    return instruction(sid, 0x03, [addr, *data])


def word(value):
    return [value & 0xFF, (value >> 8) & 0xFF]


class RawBusTest(unittest.TestCase):
    ARGS = ("--ids", "1,2,3,4,5,6", "--positions", "100,200,300,400,500,600")

    def setUp(self):
        self.emu = Emulator(*self.ARGS)
        self.fd = os.open(self.emu.port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)

    def tearDown(self):
        os.close(self.fd)
        self.emu.close()

    def send(self, data):
        os.write(self.fd, data)

    def recv(self, n):
        out = b""
        deadline = time.monotonic() + READ_TIMEOUT_S
        while len(out) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(0.0, left))
            if not ready:
                self.fail(f"expected {n} bytes, got {out.hex(' ')}")
            out += os.read(self.fd, n - len(out))
        return out

    def assert_only_reply_is_ping(self, sid=1):
        """Sends a PING; the next bytes must be its reply, so nothing came back before it."""
        self.send(ping(sid))
        expected = status(sid)
        self.assertEqual(self.recv(len(expected)).hex(" "), expected.hex(" "))

    def read_word(self, sid, addr):
        self.send(read(sid, addr, 2))
        reply = self.recv(8)
        self.assertEqual(reply[:5], bytes([0xFF, 0xFF, sid, 4, 0]))
        self.assertEqual(reply[-1], chk(reply[2:-1]))
        return reply[5] | (reply[6] << 8)

    # -- framing --
    def test_ping_and_read_model_number(self):
        self.send(ping(3))
        self.assertEqual(self.recv(6), status(3))
        self.send(read(3, 3, 2))
        self.assertEqual(self.recv(8), status(3, word(777)))

    def test_packet_split_across_writes(self):
        packet = read(2, 56, 2)
        for i in range(len(packet)):
            self.send(packet[i : i + 1])
            time.sleep(0.002)
        self.assertEqual(self.recv(8), status(2, word(200)))

    def test_concatenated_packets_and_garbage_between(self):
        burst = b"\x00\x13\xff" + ping(1) + read(4, 56, 2) + b"\xfe\xff" + b"\xff\xff\xff" + ping(6)[2:] + ping(2)
        self.send(burst)
        expected = status(1) + status(4, word(400)) + status(6) + status(2)
        self.assertEqual(self.recv(len(expected)).hex(" "), expected.hex(" "))

    def test_bad_checksum_is_ignored_and_the_next_packet_answered(self):
        bad = bytearray(read(1, 56, 2))
        bad[-1] ^= 0x5A
        self.send(bytes(bad) + read(5, 56, 2))
        self.assertEqual(self.recv(8), status(5, word(500)))
        self.send(bytes(bad))
        self.assert_only_reply_is_ping()
        self.assertGreaterEqual(self.emu.state()["counters"]["bad_checksum"], 2)

    def test_corrupted_length_does_not_swallow_the_next_packet(self):
        bad = bytearray(write(1, 42, word(1234)))
        bad[3] = 40  # claims 40 bytes; the checksum (at the claimed end) cannot match
        self.send(bytes(bad) + read(2, 56, 2) + bytes(40))
        self.assertEqual(self.recv(8), status(2, word(200)))
        self.assertEqual(self.emu.regs(1)["goal_position"], 100)

    def test_a_stale_partial_packet_is_dropped(self):
        self.send(read(1, 56, 2)[:4])
        time.sleep(0.3)  # past the servo's 100 ms receive timeout
        self.send(read(3, 56, 2))
        self.assertEqual(self.recv(8), status(3, word(300)))
        self.assert_only_reply_is_ping()

    def test_only_the_addressed_ids_answer(self):
        self.send(ping(7) + read(99, 56, 2))
        self.assert_only_reply_is_ping(4)

    # -- reads and writes --
    def test_read_past_the_table_is_zeros(self):
        self.send(read(1, 250, 10))
        self.assertEqual(self.recv(16), status(1, bytes(10)))

    def test_read_only_register_ignores_writes_but_acknowledges(self):
        self.send(write(2, 56, word(4000)))
        self.assertEqual(self.recv(6), status(2))
        self.assertEqual(self.read_word(2, 56), 200)
        self.send(write(2, 3, word(1)))  # model number
        self.assertEqual(self.recv(6), status(2))
        self.assertEqual(self.read_word(2, 3), 777)

    def test_eeprom_write_saved_only_when_unlocked(self):
        # Lock = 1 (power-on): takes effect now, not saved.
        self.send(write(3, 9, word(50)))
        self.assertEqual(self.recv(6), status(3))
        self.assertEqual(self.read_word(3, 9), 50)
        servo = self.emu.state()["servos"]["3"]
        self.assertEqual(servo["registers"]["min_angle_limit"], 50)
        self.assertEqual((servo["saved_eeprom"]["9"], servo["saved_eeprom"]["10"]), (0, 0))
        self.assertEqual(self.emu.ctl("power_cycle 3"), "ok")
        self.assertEqual(self.read_word(3, 9), 0)
        # Lock = 0: saved.
        self.send(write(3, 55, [0]) + write(3, 9, word(50)) + write(3, 55, [1]))
        self.assertEqual(self.recv(18), status(3) * 3)
        self.assertEqual(self.emu.ctl("power_cycle"), "ok")
        self.assertEqual(self.read_word(3, 9), 50)
        self.assertEqual(self.emu.regs(3)["lock"], 1)  # SRAM back to its power-on value

    def test_homing_offset_is_sign_magnitude_bit_11_and_shifts_present_position(self):
        self.send(write(1, 55, [0]) + write(1, 31, word(0x800 | 100)))  # -100
        self.assertEqual(self.recv(12), status(1) * 2)
        self.assertEqual(self.emu.regs(1)["homing_offset"], -100)
        self.assertEqual(self.read_word(1, 56), 200)  # present = shaft - offset = 100 + 100
        self.send(write(1, 31, word(150)))
        self.assertEqual(self.recv(6), status(1))
        self.assertEqual(self.read_word(1, 56), (100 - 150) % 4096)

    def test_torque_enable_128_centres_the_present_position(self):
        self.send(write(5, 40, [128]))
        self.assertEqual(self.recv(6), status(5))
        self.assertEqual(self.read_word(5, 56), 2048)
        regs = self.emu.regs(5)
        self.assertEqual((regs["torque_enable"], regs["homing_offset"]), (0, 500 - 2048))

    def test_id_change_answers_as_the_old_id_then_lives_at_the_new(self):
        self.send(write(6, 5, [20]))
        self.assertEqual(self.recv(6), status(6))
        self.send(ping(6))
        self.assert_only_reply_is_ping(20)
        self.assertIn("20", self.emu.state()["servos"])

    def test_response_status_level_0_answers_only_read_and_ping(self):
        # The level applies to the write that sets it: the servo answers after executing.
        self.send(write(4, 8, [0]) + write(4, 41, [10]))
        self.assert_only_reply_is_ping(4)
        self.send(read(4, 41, 1))
        self.assertEqual(self.recv(7), status(4, [10]))

    # -- broadcast and sync --
    def test_broadcast_write_reaches_all_and_nobody_answers(self):
        self.send(write(0xFE, 40, [1]))
        self.assert_only_reply_is_ping()
        state = self.emu.state()
        self.assertEqual({s["registers"]["torque_enable"] for s in state["servos"].values()}, {1})

    def test_broadcast_ping_every_servo_answers(self):
        self.send(ping(0xFE))
        expected = b"".join(status(i) for i in range(1, 7))
        self.assertEqual(self.recv(len(expected)), expected)

    def test_sync_read_replies_in_request_order_and_skips_absent_ids(self):
        self.send(instruction(0xFE, 0x82, [56, 2, 5, 2, 77, 4]))
        expected = status(5, word(500)) + status(2, word(200)) + status(4, word(400))
        self.assertEqual(self.recv(len(expected)).hex(" "), expected.hex(" "))
        self.assert_only_reply_is_ping()

    def test_sync_write_sets_each_listed_servo_silently(self):
        params = [42, 2]
        for sid, goal in ((1, 1111), (3, 3333), (6, 666)):
            params += [sid, *word(goal)]
        self.send(instruction(0xFE, 0x83, params))
        self.assert_only_reply_is_ping()
        state = self.emu.state()["servos"]
        self.assertEqual([state[str(i)]["registers"]["goal_position"] for i in (1, 2, 3, 6)], [1111, 200, 3333, 666])

    def test_reg_write_waits_for_action(self):
        self.send(instruction(2, 0x04, [42, *word(2500)]))
        self.assertEqual(self.recv(6), status(2))
        self.assertEqual(self.emu.regs(2)["goal_position"], 200)
        self.assertEqual(self.emu.regs(2)["async_write_flag"], 1)
        self.send(instruction(0xFE, 0x05))
        self.assert_only_reply_is_ping()
        self.assertEqual(self.emu.regs(2)["goal_position"], 2500)
        self.assertEqual(self.emu.regs(2)["async_write_flag"], 0)

    def test_unknown_instruction_is_silent(self):
        self.send(instruction(1, 0x06) + instruction(1, 0x0A))
        self.assert_only_reply_is_ping()

    # -- motion --
    def test_motion_torque_on_converges_torque_off_holds(self):
        self.send(write(1, 42, word(900)))
        self.assertEqual(self.recv(6), status(1))
        time.sleep(0.2)
        self.assertEqual(self.read_word(1, 56), 100)
        self.send(write(1, 41, [50]) + write(1, 40, [1]))  # 5000 counts/s^2 ramp, then torque on
        self.assertEqual(self.recv(12), status(1) * 2)
        deadline = time.monotonic() + READ_TIMEOUT_S
        saw_moving = False
        while time.monotonic() < deadline:
            regs = self.emu.regs(1)
            saw_moving |= regs["moving"] == 1 and regs["present_speed"] > 0 and regs["present_load"] > 0
            if regs["present_position"] == 900 and regs["moving"] == 0:
                break
            time.sleep(0.02)
        self.assertEqual((regs["present_position"], regs["moving"], regs["present_speed"]), (900, 0, 0))
        self.assertTrue(saw_moving, "never saw moving=1 with speed and load while driving")
        self.send(write(1, 40, [0]) + write(1, 42, word(3000)))
        self.assertEqual(self.recv(12), status(1) * 2)
        time.sleep(0.2)
        self.assertEqual(self.read_word(1, 56), 900)
        # A hand turns the limp servo.
        self.assertEqual(self.emu.ctl("set 1 position 1234"), "ok")
        self.assertEqual(self.read_word(1, 56), 1234)

    def test_acceleration_ramps_the_speed(self):
        # 1 unit = 100 counts/s^2: reaching the 3000 counts/s top speed would take 30 s.
        self.send(write(4, 41, [1]) + write(4, 40, [1]) + write(4, 42, word(4000)))
        self.assertEqual(self.recv(18), status(4) * 3)
        time.sleep(0.3)
        regs = self.emu.regs(4)
        self.assertGreater(regs["present_speed"], 0)
        self.assertLess(regs["present_speed"], 3000)
        self.assertEqual(regs["moving"], 1)
        # Without a ramp the speed is the top speed at once.
        self.send(write(5, 40, [1]) + write(5, 42, word(4000)))
        self.assertEqual(self.recv(12), status(5) * 2)
        time.sleep(0.05)
        self.assertEqual(self.emu.regs(5)["present_speed"], 3000)

    def test_goal_is_clamped_to_the_angle_limits(self):
        self.send(write(2, 11, word(1000)) + write(2, 40, [1]) + write(2, 42, word(4000)))
        self.assertEqual(self.recv(18), status(2) * 3)
        self.assertEqual(self.emu.regs(2)["target_position"], 1000)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while self.emu.regs(2)["present_position"] != 1000 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.emu.regs(2)["present_position"], 1000)

    def test_velocity_mode_turns_at_the_signed_goal_speed(self):
        self.send(write(3, 33, [1]) + write(3, 46, word(0x8000 | 1000)) + write(3, 40, [1]))
        self.assertEqual(self.recv(18), status(3) * 3)
        time.sleep(0.1)
        regs = self.emu.regs(3)
        self.assertEqual(regs["present_speed"], -1000)
        self.assertNotEqual(regs["present_position"], 300)

    # -- faults at the byte level --
    def test_checksum_error_and_wrong_id_faults(self):
        self.assertEqual(self.emu.ctl("checksum_error=1 wrong_id=2:9"), "ok")
        self.send(ping(1))
        reply = self.recv(6)
        self.assertEqual(reply[:5], status(1)[:5])
        self.assertNotEqual(reply[5], status(1)[5])
        self.assertEqual(self.emu.ctl("checksum_error=0"), "ok")
        self.send(ping(2))
        self.assertEqual(self.recv(6), status(9))
        self.assertEqual(self.emu.ctl("clear"), "ok")
        self.assert_only_reply_is_ping(2)

    def test_per_id_reply_faults(self):
        self.assertEqual(self.emu.ctl("checksum_error=1@2,3 delay_ms=30@4"), "ok")
        self.send(ping(1) + ping(2))
        reply = self.recv(12)
        self.assertEqual(reply[:6], status(1))
        self.assertEqual(reply[6:11], status(2)[:5])
        self.assertNotEqual(reply[11], status(2)[5])
        self.send(ping(4) + ping(5))  # 5 waits behind 4's late reply
        self.assertEqual(self.recv(12), status(4) + status(5))
        faults = self.emu.state()["faults"]
        self.assertEqual(faults["checksum_error"], 0.0)
        self.assertEqual(faults["by_id"], {"checksum_error": {"2": 1.0, "3": 1.0}, "delay_ms": {"4": 30.0}, "corrupt": {}})
        self.assertTrue(self.emu.ctl("corrupt=0.5@").startswith("error "))

    def test_no_answer_servo_executes_nothing(self):
        self.assertEqual(self.emu.ctl("no_answer=3"), "ok")
        self.send(write(3, 41, [7]) + ping(3))
        self.assert_only_reply_is_ping(4)
        self.assertEqual(self.emu.regs(3)["acceleration"], 0)

    def test_delay_keeps_replies_in_order(self):
        self.assertEqual(self.emu.ctl("delay_ms=50"), "ok")
        self.send(ping(1) + ping(2))
        self.assertEqual(self.recv(12), status(1) + status(2))

    def test_status_register_is_the_error_byte(self):
        self.assertEqual(self.emu.ctl("set 2 status 32"), "ok")
        self.send(ping(2))
        self.assertEqual(self.recv(6), status(2, error=32))

    # -- the control socket --
    def test_control_errors_name_the_word_and_change_nothing(self):
        reply = self.emu.ctl("delay_ms=5 bogus=1")
        self.assertTrue(reply.startswith("error unknown fault word 'bogus=1'"), reply)
        self.assertEqual(self.emu.state()["faults"]["delay_ms"], 0.0)
        for line in ("no_answer=", "checksum_error=2", "disappear=3", "wrong_id=1", "delay_ms=x", "set 1 nope 3",
                     "set 9 position 3", "power_cycle 9", "frobnicate"):
            self.assertTrue(self.emu.ctl(line).startswith("error "), line)
        self.assertEqual(self.emu.ctl("no_answer=1,2 disappear=5@100;corrupt=0.25"), "ok")
        faults = self.emu.state()["faults"]
        self.assertEqual((faults["no_answer"], faults["disappear"], faults["corrupt"]), ([1, 2], {"5": 100.0}, 0.25))
        self.assertEqual(self.emu.ctl("clear"), "ok")
        self.assertEqual(self.emu.state()["faults"]["no_answer"], [])

    def test_summary_on_sigterm(self):
        self.send(ping(1) + ping(2) + ping(42))
        self.recv(12)
        code, summary, _ = self.emu.stop()
        self.assertEqual(code, 0)
        self.assertEqual(summary["stopped_by"], "SIGTERM")
        self.assertEqual(summary["packets"], 3)
        self.assertEqual(summary["per_id"]["1"], {"rx": 1, "tx": 1})


class LifecycleTest(unittest.TestCase):
    def test_exits_with_a_summary_when_stdin_closes(self):
        emu = Emulator("--ids", "1")
        try:
            code, summary, _ = emu.stop(how="stdin")
            self.assertEqual(code, 0)
            self.assertEqual(summary["stopped_by"], "stdin closed")
        finally:
            emu.close()

    def test_sigint_stops_it_and_dev_null_stdin_does_not(self):
        proc = subprocess.Popen(
            [sys.executable, EMULATOR, "--ids", "3", "--positions", "77"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            line = proc.stdout.readline().decode()
            self.assertTrue(line.startswith("PORT /"), line)
            fd = os.open(line.split()[1], os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd, termios.TCSANOW)
            os.write(fd, read(3, 56, 2))  # still serving: /dev/null's end of file is not a harness dying
            reply = b""
            while len(reply) < 8:
                ready, _, _ = select.select([fd], [], [], READ_TIMEOUT_S)
                self.assertTrue(ready, f"no reply, got {reply.hex(' ')}")
                reply += os.read(fd, 8 - len(reply))
            os.close(fd)
            self.assertEqual(reply, status(3, word(77)))
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=READ_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0)
        summary = json.loads(err.decode().strip().splitlines()[-1])
        self.assertEqual((summary["stopped_by"], summary["packets"], summary["per_id"]), ("SIGINT", 1, {"3": {"rx": 1, "tx": 1}}))

    def test_bad_start_faults_are_reported_not_fatal(self):
        proc = subprocess.Popen(
            [sys.executable, EMULATOR, "--ids", "1", "--faults", "no_answer=1 nonsense"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        line = proc.stdout.readline().decode()
        self.assertTrue(line.startswith("PORT /"), line)
        _, err = proc.communicate(timeout=READ_TIMEOUT_S)  # closes stdin: the emulator exits
        self.assertIn("'nonsense'", err.decode())
        summary = json.loads(err.decode().strip().splitlines()[-1])
        self.assertEqual(summary["stopped_by"], "stdin closed")


if __name__ == "__main__":
    unittest.main()
