"""The vendor's own Python SDK (PyPI feetech-servo-sdk==1.0.0, module scservo_sdk) against the emulator.

An independent check: if Feetech's SDK, which real STS3215s answer, reads the emulator the same way, the
emulator's framing, checksums, encodings and sync instructions are right. Skipped when scservo_sdk cannot be
imported, unless COXSWAIN_REQUIRE_PYTHON=1 (then it fails).

    python -m unittest discover -s drivers/feetech/tests/emulator -p 'test_with_vendor_sdk.py' -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator_harness import Emulator  # noqa: E402

try:
    import scservo_sdk as scs

    IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the environment
    scs = None
    IMPORT_ERROR = e

REQUIRED = os.environ.get("COXSWAIN_REQUIRE_PYTHON") == "1"
SKIP_REASON = (
    f"scservo_sdk not importable ({IMPORT_ERROR}); pip install -r drivers/feetech/tests/emulator/requirements.txt"
)

IDS = [1, 2, 3, 4, 5, 6]
# The SDK's own budget is 2 x 16 ms latency timer + 2 ms; on a loaded shared machine a Python emulator can
# miss that now and then. Like LeRobot (which patches this method too), give every status packet more time;
# a lost reply is then a real fault, not the scheduler.
PACKET_TIMEOUT_MS = 500.0
CONVERGE_WAIT_S = 10.0

ADDR_MODEL_NUMBER = 3
ADDR_TORQUE_ENABLE = 40
ADDR_ACCELERATION = 41
ADDR_GOAL_POSITION = 42
ADDR_GOAL_SPEED = 46
ADDR_LOCK = 55
ADDR_PRESENT_POSITION = 56
ADDR_PRESENT_SPEED = 58
ADDR_MOVING = 66


def _patched_timeout(self, packet_length):
    self.packet_start_time = self.getCurrentTime()
    self.packet_timeout = self.tx_time_per_byte * packet_length + PACKET_TIMEOUT_MS


class ImportGuard(unittest.TestCase):
    def test_vendor_sdk_importable(self):
        if scs is None:
            if REQUIRED:
                self.fail(f"COXSWAIN_REQUIRE_PYTHON=1 but {SKIP_REASON}")
            self.skipTest(SKIP_REASON)
        self.assertTrue(hasattr(scs, "GroupSyncRead"))


@unittest.skipIf(scs is None and not REQUIRED, SKIP_REASON)
class VendorSdkTest(unittest.TestCase):
    def setUp(self):
        if scs is None:
            self.fail(f"COXSWAIN_REQUIRE_PYTHON=1 but {SKIP_REASON}")
        self.emu = Emulator("--ids", ",".join(map(str, IDS)), "--positions", "1000,1200,1400,1600,1800,2000")
        self.port = scs.PortHandler(self.emu.port)
        self.port.setPacketTimeout = _patched_timeout.__get__(self.port, scs.PortHandler)
        self.assertTrue(self.port.openPort())
        self.assertTrue(self.port.setBaudRate(1_000_000))
        # Protocol end 0: little-endian words, the STS/SMS series (LeRobot's MODEL_PROTOCOL["sts3215"] == 0).
        self.ph = scs.PacketHandler(0)

    def tearDown(self):
        self.port.closePort()
        self.emu.close()

    # -- helpers --
    def read1(self, sid, addr):
        return self.ph.read1ByteTxRx(self.port, sid, addr)

    def read2(self, sid, addr):
        return self.ph.read2ByteTxRx(self.port, sid, addr)

    def ok_write1(self, sid, addr, value):
        result, error = self.ph.write1ByteTxRx(self.port, sid, addr, value)
        self.assertEqual((result, error), (scs.COMM_SUCCESS, 0), self.ph.getTxRxResult(result))

    def ok_write2(self, sid, addr, value):
        result, error = self.ph.write2ByteTxRx(self.port, sid, addr, value)
        self.assertEqual((result, error), (scs.COMM_SUCCESS, 0), self.ph.getTxRxResult(result))

    def ok_read2(self, sid, addr):
        value, result, error = self.read2(sid, addr)
        self.assertEqual((result, error), (scs.COMM_SUCCESS, 0), self.ph.getTxRxResult(result))
        return value

    def sync_read_positions(self, ids):
        reader = scs.GroupSyncRead(self.port, self.ph, ADDR_PRESENT_POSITION, 2)
        for sid in ids:
            self.assertTrue(reader.addParam(sid))
        result = reader.txRxPacket()
        self.assertEqual(result, scs.COMM_SUCCESS, self.ph.getTxRxResult(result))
        out = {}
        for sid in ids:
            self.assertTrue(reader.isAvailable(sid, ADDR_PRESENT_POSITION, 2))
            out[sid] = scs.SCS_TOHOST(reader.getData(sid, ADDR_PRESENT_POSITION, 2), 15)
        return out

    def drain(self):
        """Drops late or stray status packets a fault left in the receive buffer (the SDK never does)."""
        time.sleep(0.05)
        self.port.ser.reset_input_buffer()

    # -- the basics --
    def test_ping_reads_the_sts3215_model_number(self):
        for sid in IDS:
            model, result, error = self.ph.ping(self.port, sid)
            self.assertEqual((model, result, error), (777, scs.COMM_SUCCESS, 0), f"id {sid}")

    def test_ping_of_an_absent_id_times_out(self):
        model, result, _ = self.ph.ping(self.port, 42)
        self.assertEqual((model, result), (0, scs.COMM_RX_TIMEOUT))

    def test_read_and_write_single_registers(self):
        self.assertEqual(self.ok_read2(3, ADDR_MODEL_NUMBER), 777)
        self.assertEqual(self.ok_read2(3, ADDR_PRESENT_POSITION), 1400)
        self.ok_write1(3, ADDR_ACCELERATION, 37)  # 1 byte
        self.assertEqual(self.read1(3, ADDR_ACCELERATION), (37, scs.COMM_SUCCESS, 0))
        self.ok_write2(3, ADDR_GOAL_SPEED, 1234)  # 2 bytes, little-endian
        self.assertEqual(self.ok_read2(3, ADDR_GOAL_SPEED), 1234)
        value, result, _ = self.ph.read4ByteTxRx(self.port, 3, ADDR_GOAL_POSITION)  # goal + goal time
        self.assertEqual(result, scs.COMM_SUCCESS)
        self.assertEqual(scs.SCS_LOWORD(value), 1400)  # the power-on goal is the present position
        # A read-only register ignores the write; the servo still acknowledges it.
        self.ok_write2(3, ADDR_PRESENT_POSITION, 10)
        self.assertEqual(self.ok_read2(3, ADDR_PRESENT_POSITION), 1400)
        # Other servos were not touched.
        self.assertEqual(self.emu.regs(2)["acceleration"], 0)

    def test_goal_converges_with_torque_on_and_holds_with_torque_off(self):
        self.ok_write2(1, ADDR_GOAL_POSITION, 3000)
        time.sleep(0.3)
        self.assertEqual(self.ok_read2(1, ADDR_PRESENT_POSITION), 1000, "torque off: the shaft must not move")
        self.assertEqual(self.read1(1, ADDR_MOVING)[0], 0)

        # Enabling torque drives to the stored goal, at a bounded speed (goal speed 300 counts/s: ~7 s).
        self.ok_write2(1, ADDR_GOAL_SPEED, 300)
        self.ok_write1(1, ADDR_TORQUE_ENABLE, 1)
        time.sleep(0.2)
        mid = self.ok_read2(1, ADDR_PRESENT_POSITION)
        self.assertGreater(mid, 1000)
        self.assertLess(mid, 3000, "the speed bound was not honoured")
        self.assertEqual(self.read1(1, ADDR_MOVING)[0], 1)
        speed = scs.SCS_TOHOST(self.ok_read2(1, ADDR_PRESENT_SPEED), 15)
        self.assertGreater(speed, 0)
        self.assertLessEqual(speed, 300)

        self.ok_write2(1, ADDR_GOAL_SPEED, 0)  # 0 = the default (top) speed
        deadline = time.monotonic() + CONVERGE_WAIT_S
        while self.ok_read2(1, ADDR_PRESENT_POSITION) != 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.ok_read2(1, ADDR_PRESENT_POSITION), 3000)
        self.assertEqual(self.read1(1, ADDR_MOVING)[0], 0)
        self.assertEqual(self.ok_read2(1, ADDR_PRESENT_SPEED), 0)

        # Moving down: the present speed is negative in the STS sign-magnitude encoding (bit 15).
        self.ok_write2(1, ADDR_GOAL_SPEED, 500)
        self.ok_write2(1, ADDR_GOAL_POSITION, 500)
        time.sleep(0.2)
        raw = self.ok_read2(1, ADDR_PRESENT_SPEED)
        self.assertTrue(raw & 0x8000, f"raw present speed {raw:#06x} has no sign bit")
        self.assertLess(scs.SCS_TOHOST(raw, 15), 0)

        # Torque off mid-motion: it stops where it is.
        self.ok_write1(1, ADDR_TORQUE_ENABLE, 0)
        here = self.ok_read2(1, ADDR_PRESENT_POSITION)
        time.sleep(0.3)
        self.assertEqual(self.ok_read2(1, ADDR_PRESENT_POSITION), here)

    def test_group_sync_write_of_six_goals_and_group_sync_read_of_six_positions(self):
        self.assertEqual(self.sync_read_positions(IDS), dict(zip(IDS, [1000, 1200, 1400, 1600, 1800, 2000])))

        torque = scs.GroupSyncWrite(self.port, self.ph, ADDR_TORQUE_ENABLE, 1)
        for sid in IDS:
            self.assertTrue(torque.addParam(sid, [1]))
        self.assertEqual(torque.txPacket(), scs.COMM_SUCCESS)

        goals = {sid: 500 + 400 * sid for sid in IDS}
        writer = scs.GroupSyncWrite(self.port, self.ph, ADDR_GOAL_POSITION, 2)
        for sid, goal in goals.items():
            self.assertTrue(writer.addParam(sid, [scs.SCS_LOBYTE(goal), scs.SCS_HIBYTE(goal)]))
        self.assertEqual(writer.txPacket(), scs.COMM_SUCCESS)

        deadline = time.monotonic() + CONVERGE_WAIT_S
        positions = self.sync_read_positions(IDS)
        while positions != goals and time.monotonic() < deadline:
            time.sleep(0.05)
            positions = self.sync_read_positions(IDS)
        self.assertEqual(positions, goals)
        state = self.emu.state()
        for sid, goal in goals.items():
            self.assertEqual(state["servos"][str(sid)]["registers"]["goal_position"], goal)
            self.assertEqual(state["servos"][str(sid)]["registers"]["torque_enable"], 1)

    def test_group_sync_read_in_any_id_order(self):
        self.assertEqual(self.sync_read_positions([6, 2, 4]), {6: 2000, 2: 1200, 4: 1600})

    def test_reg_write_then_broadcast_action(self):
        for sid in (2, 5):
            result, error = self.ph.regWriteTxRx(self.port, sid, ADDR_ACCELERATION, 1, [99])
            self.assertEqual((result, error), (scs.COMM_SUCCESS, 0))
        self.assertEqual(self.read1(2, ADDR_ACCELERATION)[0], 0, "REG_WRITE must wait for ACTION")
        self.assertEqual(self.read1(2, 64)[0], 1)
        self.assertEqual(self.ph.action(self.port, scs.BROADCAST_ID), scs.COMM_SUCCESS)
        self.assertEqual(self.read1(2, ADDR_ACCELERATION)[0], 99)
        self.assertEqual(self.read1(5, ADDR_ACCELERATION)[0], 99)
        self.assertEqual(self.read1(5, 64)[0], 0)

    def test_eeprom_write_is_kept_across_power_cycle_only_when_unlocked(self):
        self.ok_write2(4, 11, 3000)  # max_angle_limit with Lock = 1: takes effect, not saved
        self.assertEqual(self.ok_read2(4, 11), 3000)
        self.assertEqual(self.emu.ctl("power_cycle 4"), "ok")
        self.assertEqual(self.ok_read2(4, 11), 4095)
        self.ok_write1(4, ADDR_LOCK, 0)
        self.ok_write2(4, 11, 3000)
        self.ok_write1(4, ADDR_LOCK, 1)
        self.assertEqual(self.emu.ctl("power_cycle 4"), "ok")
        self.assertEqual(self.ok_read2(4, 11), 3000)

    # -- faults, as the SDK sees them --
    def test_no_answer_is_a_timeout_for_that_servo_only(self):
        self.assertEqual(self.emu.ctl("no_answer=2,5"), "ok")
        for sid in IDS:
            _, result, _ = self.ph.ping(self.port, sid)
            expected = scs.COMM_RX_TIMEOUT if sid in (2, 5) else scs.COMM_SUCCESS
            self.assertEqual(result, expected, f"id {sid}: {self.ph.getTxRxResult(result)}")
        reader = scs.GroupSyncRead(self.port, self.ph, ADDR_PRESENT_POSITION, 2)
        for sid in IDS:
            reader.addParam(sid)
        self.assertEqual(reader.txRxPacket(), scs.COMM_RX_TIMEOUT)
        self.drain()
        self.assertEqual(self.emu.ctl("clear"), "ok")
        self.assertEqual(self.ph.ping(self.port, 2)[1], scs.COMM_SUCCESS)

    def test_checksum_error_is_rx_corrupt(self):
        self.assertEqual(self.emu.ctl("checksum_error=1"), "ok")
        _, result, _ = self.read2(3, ADDR_PRESENT_POSITION)
        self.assertEqual(result, scs.COMM_RX_CORRUPT)
        self.assertEqual(self.ph.ping(self.port, 1)[1], scs.COMM_RX_CORRUPT)
        self.drain()
        self.assertEqual(self.emu.ctl("checksum_error=0"), "ok")
        self.assertEqual(self.read2(3, ADDR_PRESENT_POSITION)[1], scs.COMM_SUCCESS)

    def test_corrupt_replies_never_read_as_success(self):
        self.assertEqual(self.emu.ctl("corrupt=1"), "ok")
        for _ in range(4):
            _, result, _ = self.read2(3, ADDR_PRESENT_POSITION)
            self.assertIn(result, (scs.COMM_RX_CORRUPT, scs.COMM_RX_TIMEOUT), self.ph.getTxRxResult(result))
            self.drain()
        self.assertEqual(self.emu.ctl("clear"), "ok")
        self.assertEqual(self.read2(3, ADDR_PRESENT_POSITION)[1], scs.COMM_SUCCESS)

    def test_wrong_id_reply_is_skipped_by_the_sdk_and_times_out(self):
        self.assertEqual(self.emu.ctl("wrong_id=3:9"), "ok")
        _, result, _ = self.read2(3, ADDR_PRESENT_POSITION)
        self.assertEqual(result, scs.COMM_RX_TIMEOUT)
        # The sync read's reader for id 3 skips the packet that says 9, and gives up.
        reader = scs.GroupSyncRead(self.port, self.ph, ADDR_PRESENT_POSITION, 2)
        for sid in (1, 3):
            reader.addParam(sid)
        self.assertEqual(reader.txRxPacket(), scs.COMM_RX_TIMEOUT)
        self.assertEqual(reader.data_dict[1], [0xE8, 0x03])  # id 1 answered: 1000
        self.drain()
        summary_counts = self.emu.state()["counters"]["injected"]
        self.assertGreaterEqual(summary_counts["wrong_id"], 2)

    def test_delay_shorter_than_the_timeout_is_fine_longer_is_a_timeout(self):
        self.assertEqual(self.emu.ctl("delay_ms=20"), "ok")
        self.assertEqual(self.ok_read2(2, ADDR_PRESENT_POSITION), 1200)
        self.assertEqual(self.emu.ctl(f"delay_ms={PACKET_TIMEOUT_MS * 2:.0f}"), "ok")
        _, result, _ = self.read2(2, ADDR_PRESENT_POSITION)
        self.assertEqual(result, scs.COMM_RX_TIMEOUT)
        time.sleep(PACKET_TIMEOUT_MS / 1000.0 * 1.5)  # let the late reply land, then drop it
        self.drain()
        self.assertEqual(self.emu.ctl("clear"), "ok")
        self.assertEqual(self.ok_read2(2, ADDR_PRESENT_POSITION), 1200)

    def test_a_servo_disappears_mid_run_for_good(self):
        self.assertEqual(self.ph.ping(self.port, 4)[1], scs.COMM_SUCCESS)
        uptime = self.emu.state()["uptime_s"]
        self.assertEqual(self.emu.ctl(f"disappear=4@{uptime + 1.0:.3f}"), "ok")
        deadline = time.monotonic() + CONVERGE_WAIT_S
        while self.ph.ping(self.port, 4)[1] == scs.COMM_SUCCESS and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(self.emu.state()["uptime_s"], uptime + 1.0)
        for _ in range(3):
            self.assertEqual(self.ph.ping(self.port, 4)[1], scs.COMM_RX_TIMEOUT)
        self.assertEqual(self.ph.ping(self.port, 5)[1], scs.COMM_SUCCESS)
        self.assertFalse(self.emu.state()["servos"]["4"]["on_bus"])

    def test_status_bits_reach_the_sdk_as_packet_errors(self):
        self.assertEqual(self.emu.ctl("set 6 status 4"), "ok")  # overheat
        _, result, error = self.read2(6, ADDR_PRESENT_POSITION)
        self.assertEqual((result, error), (scs.COMM_SUCCESS, 4))
        self.assertEqual(self.ph.getRxPacketError(error), "[RxPacketError] Overheat error!")


if __name__ == "__main__":
    unittest.main()
