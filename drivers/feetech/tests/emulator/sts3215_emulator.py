#!/usr/bin/env python3
"""A bus of emulated Feetech STS3215 servos on a pseudo-terminal: a test fixture.

Python standard library only, so any `python3` runs it. Start it, read one line `PORT <path>` from its
stdout, open that path as the serial port (1 Mbaud, 8N1; a pty ignores the baud rate), speak Feetech's
SCS/STS protocol ("protocol 0", little-endian words) to it. It serves until SIGTERM/SIGINT, or until its
stdin reaches end of file when stdin is a pipe or socket (a harness that dies takes it down), then prints
one JSON summary line to stderr.

    sts3215_emulator.py [--ids 1,2,3,4,5,6] [--positions 2048,...] [--seed N]
                        [--faults "no_answer=3 delay_ms=5"] [--control /tmp/bus.sock]

The control socket (a unix *stream* socket) takes text lines, and answers every line with one line:
    <fault words>            e.g. `checksum_error=0.5 wrong_id=2:7`        -> `ok` or `error ...`
    clear                    all faults off                                -> `ok`
    state                    the register tables and counters, one JSON line
    set <id> <what> <value>  what: position (present position, counts), or a register name/address
                             (e.g. `set 3 present_temperature 80`, `set 3 status 4`) -> `ok` or `error ...`
    power_cycle [<id>]       EEPROM reloads from what was saved (Lock=0 writes), SRAM to power-on values

README.md next to this file has the register map, the write rules, the motion model and the fault grammar.
Where to start reading: `Servo` (one servo's memory and motion), `Bus.handle_packet` (the protocol),
`Faults.apply_spec` (the fault grammar), `Emulator.run` (the I/O loop).
"""

import argparse
import errno
import json
import math
import os
import random
import select
import signal
import socket
import stat
import sys
import termios
import time
import tty

# ---------------------------------------------------------------------------------------------------------
# Protocol constants (Feetech SCS/STS "protocol 0"; the same framing as the vendor SDK's scservo_sdk).

BROADCAST_ID = 0xFE
INST_PING = 0x01
INST_READ = 0x02
INST_WRITE = 0x03
INST_REG_WRITE = 0x04
INST_ACTION = 0x05
INST_SYNC_READ = 0x82
INST_SYNC_WRITE = 0x83

STS3215_MODEL_NUMBER = 777  # what LeRobot's MODEL_NUMBER_TABLE and the SDK's ping() read at address 3

# An instruction packet whose bytes stop arriving this long is dropped (a servo's receive timeout).
STALE_PARTIAL_PACKET_S = 0.1
MAX_CONTROL_LINE = 65536

# ---------------------------------------------------------------------------------------------------------
# The STS3215 memory map (Feetech's SMS/STS memory table; the addresses LeRobot's feetech/tables.py and the
# vendor SDK's sms_sts.py use). (address, size, name, access, power-on default, sign bit or None)
#   access: "ro"     read-only: writes are ignored (the status reply is still sent, with no error bit)
#           "eeprom" takes effect at once; kept across power_cycle only if written while Lock (55) == 0
#           "ram"    takes effect at once; back to its default at power_cycle
# Sign bit: the STS sign-magnitude encoding (bit set = negative, the rest is the magnitude).

REGISTERS = [
    (0, 1, "firmware_major_version", "ro", 3, None),
    (1, 1, "firmware_minor_version", "ro", 10, None),
    (2, 1, "end", "ro", 0, None),  # 0 = little-endian words
    (3, 2, "model_number", "ro", STS3215_MODEL_NUMBER, None),
    (5, 1, "id", "eeprom", 1, None),
    (6, 1, "baud_rate", "eeprom", 0, None),  # 0 = 1 Mbaud (not enforced on the pty)
    (7, 1, "return_delay_time", "eeprom", 0, None),  # 2 us units, honoured
    (8, 1, "response_status_level", "eeprom", 1, None),  # 0: only READ and PING answer
    (9, 2, "min_angle_limit", "eeprom", 0, None),
    (11, 2, "max_angle_limit", "eeprom", 4095, None),  # min = max = 0: multi-turn, no clamp
    (13, 1, "max_temperature_limit", "eeprom", 70, None),
    (14, 1, "max_voltage_limit", "eeprom", 140, None),
    (15, 1, "min_voltage_limit", "eeprom", 40, None),
    (16, 2, "max_torque_limit", "eeprom", 1000, None),
    (18, 1, "phase", "eeprom", 0, None),
    (19, 1, "unloading_condition", "eeprom", 44, None),
    (20, 1, "led_alarm_condition", "eeprom", 47, None),
    (21, 1, "p_coefficient", "eeprom", 32, None),
    (22, 1, "d_coefficient", "eeprom", 32, None),
    (23, 1, "i_coefficient", "eeprom", 0, None),
    (24, 1, "minimum_startup_force", "eeprom", 16, None),
    (25, 1, "integral_limit", "eeprom", 0, None),
    (26, 1, "cw_dead_zone", "eeprom", 1, None),
    (27, 1, "ccw_dead_zone", "eeprom", 1, None),
    (28, 2, "protection_current", "eeprom", 511, None),
    (30, 1, "angular_resolution", "eeprom", 1, None),
    (31, 2, "homing_offset", "eeprom", 0, 11),
    (33, 1, "operating_mode", "eeprom", 0, None),  # 0 position, 1 velocity (2 PWM, 3 step: held still)
    (34, 1, "protective_torque", "eeprom", 20, None),
    (35, 1, "protection_time", "eeprom", 200, None),
    (36, 1, "overload_torque", "eeprom", 80, None),
    (37, 1, "velocity_p_coefficient", "eeprom", 10, None),
    (38, 1, "over_current_protection_time", "eeprom", 200, None),
    (39, 1, "velocity_i_coefficient", "eeprom", 10, None),
    (40, 1, "torque_enable", "ram", 0, None),  # 0 off, 1 on, 2 damping (= off here), 128 centre at 2048
    (41, 1, "acceleration", "ram", 0, None),  # 100 counts/s^2 units, 0 = no ramp
    (42, 2, "goal_position", "ram", 0, 15),  # power-on value: the present position
    (44, 2, "goal_time", "ram", 0, None),
    (46, 2, "goal_speed", "ram", 0, 15),  # counts/s, 0 = the default speed
    (48, 2, "torque_limit", "ram", 1000, None),  # power-on value: max_torque_limit; 0 = no torque
    (55, 1, "lock", "ram", 1, None),
    (56, 2, "present_position", "ro", 0, 15),
    (58, 2, "present_speed", "ro", 0, 15),
    (60, 2, "present_load", "ro", 0, 10),
    (62, 1, "present_voltage", "ro", 74, None),
    (63, 1, "present_temperature", "ro", 30, None),
    (64, 1, "async_write_flag", "ro", 0, None),  # 1 while a REG_WRITE waits for ACTION
    (65, 1, "status", "ro", 0, None),  # also the ERR byte of every status packet
    (66, 1, "moving", "ro", 0, None),
    (67, 2, "target_position", "ro", 0, 15),
    (69, 2, "present_current", "ro", 0, 15),
    (80, 1, "moving_velocity_threshold", "eeprom", 2, None),
    (81, 1, "dts", "eeprom", 32, None),
    (82, 1, "velocity_unit_factor", "eeprom", 50, None),
    (83, 1, "hts", "eeprom", 0, None),
    (84, 1, "maximum_velocity_limit", "eeprom", 60, None),
    (85, 1, "maximum_acceleration", "eeprom", 150, None),
    (86, 1, "acceleration_multiplier", "eeprom", 0, None),
]
MEMORY_SIZE = 256  # reads past the table return zeros
REG_BY_NAME = {r[2]: r for r in REGISTERS}
ACCESS_BY_ADDR = ["ro"] * MEMORY_SIZE  # gaps (reserved bytes) are read-only zeros
for _addr, _size, _name, _access, _default, _sign in REGISTERS:
    for _i in range(_size):
        ACCESS_BY_ADDR[_addr + _i] = _access

DEFAULT_SPEED_COUNTS_S = 3000.0  # goal_speed 0 in position mode; also the top speed (~45 rpm)
ACCELERATION_UNIT_COUNTS_S2 = 100.0  # one unit of register 41 (8.7 deg/s^2)
MOTION_STEP_S = 0.002
COUNTS_PER_TURN = 4096


def checksum(body):
    """~(sum of ID..last parameter) & 0xFF."""
    return (~sum(body)) & 0xFF


def status_packet(servo_id, error, params=b""):
    body = bytes([servo_id & 0xFF, len(params) + 2, error & 0xFF]) + bytes(params)
    return b"\xff\xff" + body + bytes([checksum(body)])


def encode_sign(value, sign_bit):
    value = int(round(value))
    limit = (1 << sign_bit) - 1
    magnitude = min(abs(value), limit)
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def decode_sign(raw, sign_bit):
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


# ---------------------------------------------------------------------------------------------------------


class Servo:
    """One STS3215: its memory, what was saved to EEPROM, and its shaft.

    The shaft state is `actual_counts` (the raw encoder, before the homing offset) and `velocity_counts_s`;
    `advance(now)` integrates it up to now and refreshes the feedback registers (56..70)."""

    def __init__(self, servo_id, position_counts, now):
        self.mem = bytearray(MEMORY_SIZE)
        for addr, size, name, _access, default, sign in REGISTERS:
            self._put(addr, size, default)
        self._put(5, 1, servo_id)
        self.saved_eeprom = self._eeprom_bytes()
        self.actual_counts = float(round(position_counts))  # an encoder reads whole counts
        self.velocity_counts_s = 0.0
        self.pending_reg_write = None  # (address, data) of a REG_WRITE until ACTION
        self.last_update = now
        self.rx_packets = 0
        self.tx_packets = 0
        self._power_on_ram()

    # -- memory --
    def _put(self, addr, size, value):
        value = int(value) & ((1 << (8 * size)) - 1)
        for i in range(size):
            self.mem[addr + i] = (value >> (8 * i)) & 0xFF

    def word(self, addr):
        return self.mem[addr] | (self.mem[addr + 1] << 8)

    def get(self, name):
        addr, size, _n, _a, _d, sign = REG_BY_NAME[name]
        raw = self.mem[addr] if size == 1 else self.word(addr)
        return decode_sign(raw, sign) if sign is not None else raw

    @property
    def id(self):
        return self.mem[5]

    def _eeprom_bytes(self):
        return {a: self.mem[a] for a in range(MEMORY_SIZE) if ACCESS_BY_ADDR[a] == "eeprom"}

    def _power_on_ram(self):
        for addr, size, _name, access, default, _sign in REGISTERS:
            if access != "eeprom":
                self._put(addr, size, default)
        self._put(48, 2, self.word(16))  # torque limit starts at the max torque limit
        self.pending_reg_write = None
        self.velocity_counts_s = 0.0
        self._refresh_feedback(0.0)
        # At power-on the goal is where the shaft is, so enabling torque does not jump.
        self._put(42, 2, self.word(56))
        self._refresh_feedback(0.0)

    def power_cycle(self, now):
        self.advance(now)
        for addr, value in self.saved_eeprom.items():
            self.mem[addr] = value
        self._power_on_ram()

    # -- frames: present = actual - homing offset (as LeRobot's FeetechMotorsBus documents) --
    def multi_turn(self):
        return self.word(9) == 0 and self.word(11) == 0

    def present_counts(self):
        present = self.actual_counts - self.get("homing_offset")
        if not self.multi_turn():
            present %= COUNTS_PER_TURN
        return present

    def set_present_counts(self, counts):
        self.actual_counts = float(round(counts)) + self.get("homing_offset")
        self.velocity_counts_s = 0.0

    def target_counts(self):
        goal = self.get("goal_position")
        if not self.multi_turn():
            low, high = self.word(9), self.word(11)
            goal = min(max(goal, min(low, high)), max(low, high))
        return goal

    def torque_on(self):
        return self.mem[40] == 1 and self.word(48) > 0

    # -- writes --
    def write(self, addr, data, now):
        """A WRITE/SYNC_WRITE/ACTION body: byte-wise access rules, then the side effects."""
        self.advance(now)
        touched = set()
        for i, value in enumerate(data):
            a = addr + i
            if a >= MEMORY_SIZE:
                break
            access = ACCESS_BY_ADDR[a]
            if access == "ro":
                continue
            self.mem[a] = value
            touched.add(a)
            if access == "eeprom" and self.mem[55] == 0:
                self.saved_eeprom[a] = value
        if 40 in touched and self.mem[40] == 128:
            # "calibrate middle": the present position becomes 2048 through the homing offset.
            offset = int(round(self.actual_counts - 2048)) % COUNTS_PER_TURN
            if offset > 2047:
                offset -= COUNTS_PER_TURN
            self._put(31, 2, encode_sign(offset, 11))
            if self.mem[55] == 0:
                self.saved_eeprom[31], self.saved_eeprom[32] = self.mem[31], self.mem[32]
            self.mem[40] = 0
        if 40 in touched and self.mem[40] != 1:
            self.velocity_counts_s = 0.0
        self._refresh_feedback(0.0)

    # -- motion --
    def advance(self, now):
        """Integrates the shaft from the last update to `now` (registers are constant in between)."""
        dt_total = now - self.last_update
        self.last_update = now
        if dt_total <= 0:
            return
        mode = self.mem[33]
        accel_used = 0.0
        if not self.torque_on() or mode not in (0, 1):
            self.velocity_counts_s = 0.0  # nothing moves a servo without torque but `set <id> position`
        elif mode == 1:
            accel_used = self._advance_velocity_mode(dt_total)
        else:
            accel_used = self._advance_position_mode(dt_total)
        self._refresh_feedback(accel_used)

    def _acceleration(self):
        acc_reg = self.mem[41]
        return acc_reg * ACCELERATION_UNIT_COUNTS_S2 if acc_reg else math.inf

    def _advance_velocity_mode(self, dt_total):
        """Constant speed mode: goal_speed is the signed velocity, reached at the acceleration."""
        goal_v = max(-DEFAULT_SPEED_COUNTS_S, min(DEFAULT_SPEED_COUNTS_S, self.get("goal_speed")))
        accel = self._acceleration()
        v0 = self.velocity_counts_s
        ramp_s = abs(goal_v - v0) / accel if accel != math.inf else 0.0
        if ramp_s >= dt_total:  # still ramping at the end of the interval
            v1 = v0 + math.copysign(accel * dt_total, goal_v - v0)
            distance = (v0 + v1) / 2.0 * dt_total
        else:
            v1 = goal_v
            distance = (v0 + goal_v) / 2.0 * ramp_s + goal_v * (dt_total - ramp_s)
        self.actual_counts += distance
        if not self.multi_turn():
            self.actual_counts %= COUNTS_PER_TURN * 64  # keep the float small; present wraps anyway
        self.velocity_counts_s = v1
        return (v1 - v0) / dt_total

    def _advance_position_mode(self, dt_total):
        """Toward the clamped goal, at most the speed limit, ramped and braked at the acceleration."""
        offset = self.get("homing_offset")
        target = self.target_counts()
        wrap = not self.multi_turn()
        speed_reg = abs(self.get("goal_speed"))
        top = min(speed_reg, DEFAULT_SPEED_COUNTS_S) if speed_reg else DEFAULT_SPEED_COUNTS_S
        accel = self._acceleration()
        v0 = v = self.velocity_counts_s
        present = self.actual_counts - offset
        if wrap:
            present %= COUNTS_PER_TURN
        base = self.actual_counts - present  # actual = base + present during this interval
        remaining = dt_total
        while remaining > 1e-9:
            error = target - present
            if abs(error) < 0.5:
                present, v = float(target), 0.0
                break
            direction = 1.0 if error > 0 else -1.0
            if accel == math.inf:  # no ramp: constant top speed, in one go
                step = min(top * remaining, abs(error))
                present += direction * step
                v = direction * top if step < abs(error) else 0.0
                if v == 0.0:
                    present = float(target)
                break
            dt = min(MOTION_STEP_S, remaining)
            remaining -= dt
            speed = abs(v) if v * direction > 0 else 0.0  # a reversal restarts from rest (roughly)
            speed = min(top, speed + accel * dt, math.sqrt(2.0 * accel * abs(error)))
            step = min(speed * dt, abs(error))
            present += direction * step
            v = direction * speed if step < abs(error) else 0.0
        self.actual_counts = base + present
        self.velocity_counts_s = v
        return (v - v0) / dt_total

    def _refresh_feedback(self, accel_counts_s2):
        present = self.present_counts()
        present_reg = int(round(present))
        if not self.multi_turn():
            present_reg %= COUNTS_PER_TURN  # 4095.6 reads 0, not 4096
        self._put(56, 2, encode_sign(present_reg, 15))
        self._put(58, 2, encode_sign(self.velocity_counts_s, 15))
        # Load (0.1 % of max torque, sign bit 10): a friction term plus an inertia term, made up but
        # monotonic, so a driver sees load while moving and none at rest.
        load = 0.0
        if self.torque_on():
            load = 0.05 * self.velocity_counts_s
            if math.isfinite(accel_counts_s2):
                load += 0.002 * accel_counts_s2
        load = max(-1000.0, min(1000.0, load))
        self._put(60, 2, encode_sign(load, 10))
        self._put(69, 2, encode_sign(abs(load) * 0.5, 15))  # 6.5 mA units
        self.mem[64] = 1 if self.pending_reg_write else 0
        target = self.target_counts()
        self._put(67, 2, encode_sign(target, 15))
        moving = self.velocity_counts_s != 0.0 or (self.torque_on() and self.mem[33] == 0 and abs(target - present) >= 1.0)
        self.mem[66] = 1 if moving else 0

    def registers(self):
        """Named, decoded register values (for the control socket's `state`)."""
        out = {}
        for addr, size, name, _access, _default, sign in REGISTERS:
            raw = self.mem[addr] if size == 1 else self.word(addr)
            out[name] = decode_sign(raw, sign) if sign is not None else raw
        return out


# ---------------------------------------------------------------------------------------------------------


class FaultError(ValueError):
    pass


class Faults:
    """The injected faults; `apply_spec` parses the grammar (README.md, "Faults")."""

    WORDS = ("no_answer", "checksum_error", "disappear", "wrong_id", "delay_ms", "corrupt", "clear")

    def __init__(self):
        self.clear()

    def clear(self):
        self.no_answer = set()
        self.disappear_at_s = {}  # id -> seconds after start
        self.wrong_id = {}  # id -> id it answers with
        # Per-reply faults: key None is every servo, an id key overrides it for that servo.
        self.checksum_error_p = {}
        self.delay_ms = {}
        self.corrupt_p = {}

    @staticmethod
    def of(table, servo_id):
        return table.get(servo_id, table.get(None, 0.0))

    def apply_spec(self, spec):
        """Apply whitespace/';'-separated words. All words are parsed before any is applied, so a bad word
        changes nothing; raises FaultError naming the first bad word."""
        words = spec.replace(";", " ").split()
        actions = [self._parse(w) for w in words]
        for action in actions:
            action()

    def _parse(self, word):
        if word == "clear":
            return self.clear
        key, sep, value = word.partition("=")
        if not sep or key not in self.WORDS:
            raise FaultError(f"unknown fault word {word!r} (known: {', '.join(self.WORDS)})")
        try:
            if key == "no_answer":
                ids = [_parse_id(x) for x in value.split(",") if x]
                if not ids:
                    raise ValueError("no ids")
                return lambda: self.no_answer.update(ids)
            if key in ("checksum_error", "corrupt", "delay_ms"):
                # P or P@ID[,ID...]: every servo, or only those.
                number, at, ids_text = value.partition("@")
                if key == "delay_ms":
                    x = float(number)
                    if not (0.0 <= x <= 60000.0):
                        raise ValueError("out of 0..60000")
                else:
                    x = _parse_probability(number)
                ids = [_parse_id(i) for i in ids_text.split(",") if i] if at else [None]
                if not ids:
                    raise ValueError("no ids after @")
                table = {"checksum_error": self.checksum_error_p, "corrupt": self.corrupt_p, "delay_ms": self.delay_ms}[key]
                return lambda: table.update({i: x for i in ids})
            if key == "disappear":
                sid, at, seconds = value.partition("@")
                if not at:
                    raise ValueError("expected ID@SECONDS")
                sid, s = _parse_id(sid), float(seconds)
                if s < 0 or math.isnan(s):
                    raise ValueError("negative seconds")
                return lambda: self.disappear_at_s.__setitem__(sid, s)
            if key == "wrong_id":
                sid, colon, other = value.partition(":")
                if not colon:
                    raise ValueError("expected ID:OTHER")
                sid, oid = _parse_id(sid), int(other, 0)
                if not (0 <= oid <= 0xFF):
                    raise ValueError("OTHER out of 0..255")
                return lambda: self.wrong_id.__setitem__(sid, oid)
        except ValueError as e:
            raise FaultError(f"bad value in fault word {word!r}: {e}") from None
        raise FaultError(f"unknown fault word {word!r}")

    def as_json(self):
        return {
            "no_answer": sorted(self.no_answer),
            "checksum_error": self.of(self.checksum_error_p, None),
            "disappear": {str(k): v for k, v in sorted(self.disappear_at_s.items())},
            "wrong_id": {str(k): v for k, v in sorted(self.wrong_id.items())},
            "delay_ms": self.of(self.delay_ms, None),
            "corrupt": self.of(self.corrupt_p, None),
            "by_id": {
                name: {str(k): v for k, v in sorted(table.items()) if k is not None}
                for name, table in (("checksum_error", self.checksum_error_p), ("delay_ms", self.delay_ms), ("corrupt", self.corrupt_p))
            },
        }


def _parse_id(text):
    value = int(text, 0)
    if not (0 <= value <= 253):
        raise ValueError(f"id {value} out of 0..253")
    return value


def _parse_probability(text):
    p = float(text)
    if not (0.0 <= p <= 1.0):
        raise ValueError("probability out of 0..1")
    return p


# ---------------------------------------------------------------------------------------------------------


class Bus:
    """The servos on one wire: frames the incoming byte stream, answers as the addressed servos would."""

    def __init__(self, ids, positions, seed, start):
        self.start = start
        self.servos = [Servo(i, p, start) for i, p in zip(ids, positions)]
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.rx = bytearray()
        self.rx_last_byte = start
        self.counters = {
            "packets": 0,
            "bad_checksum": 0,
            "dropped_bytes": 0,
            "stale_partial_packets": 0,
            "replies": 0,
            "injected": {"no_answer": 0, "checksum_error": 0, "disappeared": 0, "wrong_id": 0, "delayed": 0, "corrupt": 0},
        }

    # -- framing --
    def feed(self, data, now):
        """Bytes from the wire; returns [(due_time, reply_bytes)] in wire order."""
        if self.rx and now - self.rx_last_byte > STALE_PARTIAL_PACKET_S:
            self._drop_stale()
        self.rx_last_byte = now
        self.rx.extend(data)
        replies = []
        while True:
            packet = self._next_packet()
            if packet is None:
                break
            replies.extend(self.handle_packet(packet, now))
        return replies

    def _drop_stale(self):
        # A half-received packet whose sender went quiet: a servo's receive timeout discards it.
        self.counters["stale_partial_packets"] += 1
        self.counters["dropped_bytes"] += len(self.rx)
        del self.rx[:]

    def _next_packet(self):
        while True:
            start = self.rx.find(b"\xff\xff")
            if start < 0:
                keep = 1 if self.rx[-1:] == b"\xff" else 0
                self.counters["dropped_bytes"] += len(self.rx) - keep
                del self.rx[: len(self.rx) - keep]
                return None
            if start:
                self.counters["dropped_bytes"] += start
                del self.rx[:start]
            if len(self.rx) < 4:
                return None
            if self.rx[2] == 0xFF:  # FF FF FF ...: the header starts one byte later
                del self.rx[:1]
                self.counters["dropped_bytes"] += 1
                continue
            length = self.rx[3]
            if length < 2:
                del self.rx[:1]
                self.counters["dropped_bytes"] += 1
                continue
            total = length + 4
            if len(self.rx) < total:
                return None
            packet = bytes(self.rx[:total])
            if checksum(packet[2:-1]) != packet[-1]:
                # A real servo stays silent; resynchronise one byte on, so a corrupted length byte
                # cannot swallow the packets behind it.
                self.counters["bad_checksum"] += 1
                del self.rx[:1]
                self.counters["dropped_bytes"] += 1
                continue
            del self.rx[:total]
            return packet

    # -- servos as seen from the wire --
    def _present(self, servo, now):
        """Whether this servo is on the bus now (not silenced, not disappeared)."""
        if servo.id in self.faults.no_answer:
            self.counters["injected"]["no_answer"] += 1
            return False
        at = self.faults.disappear_at_s.get(servo.id)
        if at is not None and now - self.start >= at:
            self.counters["injected"]["disappeared"] += 1
            return False
        return True

    def _addressed(self, target_id, now):
        return [s for s in self.servos if s.id == target_id and self._present(s, now)]

    def _reply(self, servo, params, now, as_id=None):
        """One status packet from `servo` (as `as_id`, the id it was addressed by, if its id just changed),
        with faults applied; returns (due_time, bytes)."""
        own_id = servo.id if as_id is None else as_id
        reply_id = self.faults.wrong_id.get(own_id, own_id)
        if reply_id != own_id:
            self.counters["injected"]["wrong_id"] += 1
        packet = bytearray(status_packet(reply_id, servo.mem[65], params))
        p = Faults.of(self.faults.checksum_error_p, own_id)
        if p and self.rng.random() < p:
            packet[-1] ^= 1 + self.rng.randrange(255)
            self.counters["injected"]["checksum_error"] += 1
        p = Faults.of(self.faults.corrupt_p, own_id)
        if p and self.rng.random() < p:
            packet[self.rng.randrange(len(packet))] ^= 1 + self.rng.randrange(255)
            self.counters["injected"]["corrupt"] += 1
        delay_s = servo.mem[7] * 2e-6
        delay_ms = Faults.of(self.faults.delay_ms, own_id)
        if delay_ms:
            delay_s += delay_ms / 1000.0
            self.counters["injected"]["delayed"] += 1
        servo.tx_packets += 1
        self.counters["replies"] += 1
        return (now + delay_s, bytes(packet))

    def handle_packet(self, packet, now):
        self.counters["packets"] += 1
        target, instr, params = packet[2], packet[4], packet[5:-1]
        out = []
        if instr == INST_SYNC_READ and target == BROADCAST_ID:
            # addr, len, id...: each listed servo answers with its own status packet, in list order.
            if len(params) < 2:
                return out
            addr, length = params[0], params[1]
            for sid in params[2:]:
                for servo in self._addressed(sid, now):
                    servo.rx_packets += 1
                    servo.advance(now)
                    out.append(self._reply(servo, self._read(servo, addr, length), now))
            return out
        if instr == INST_SYNC_WRITE and target == BROADCAST_ID:
            # addr, len, then (id, len bytes) per servo; nobody answers.
            if len(params) < 2 or params[1] == 0:
                return out
            addr, length = params[0], params[1]
            body = params[2:]
            for k in range(0, len(body) - length, length + 1):
                sid, data = body[k], body[k + 1 : k + 1 + length]
                for servo in self._addressed(sid, now):
                    servo.rx_packets += 1
                    servo.write(addr, data, now)
            return out
        servos = [s for s in self.servos if self._present(s, now)] if target == BROADCAST_ID else self._addressed(target, now)
        for servo in servos:
            servo.rx_packets += 1
            addressed_as = servo.id
            params_out = self._execute(servo, instr, params, now)
            if params_out is None:
                continue
            answers = instr in (INST_PING, INST_READ) or servo.mem[8] >= 1
            # Broadcasts get no status packet, except PING (LeRobot's broadcast_ping finds servos this way).
            if target == BROADCAST_ID and instr != INST_PING:
                answers = False
            if answers:
                out.append(self._reply(servo, params_out, now, as_id=addressed_as))
        return out

    def _execute(self, servo, instr, params, now):
        """Runs one instruction on one servo; returns the status packet's parameters, None for no reply."""
        if instr == INST_PING:
            return b""
        if instr == INST_READ:
            if len(params) != 2:
                return None
            servo.advance(now)
            return self._read(servo, params[0], params[1])
        if instr == INST_WRITE:
            if len(params) < 2:
                return None
            servo.write(params[0], params[1:], now)
            return b""
        if instr == INST_REG_WRITE:
            if len(params) < 2:
                return None
            servo.advance(now)
            servo.pending_reg_write = (params[0], bytes(params[1:]))
            servo.mem[64] = 1
            return b""
        if instr == INST_ACTION:
            pending = servo.pending_reg_write
            servo.pending_reg_write = None
            if pending:
                servo.write(pending[0], pending[1], now)
            servo.mem[64] = 0
            return b""
        return None  # unknown instruction: silence

    @staticmethod
    def _read(servo, addr, length):
        data = bytes(servo.mem[addr : addr + length])
        return data + bytes(length - len(data))

    def advance_all(self, now):
        for servo in self.servos:
            servo.advance(now)

    def state(self, now):
        self.advance_all(now)
        return {
            "uptime_s": round(now - self.start, 6),
            "faults": self.faults.as_json(),
            "counters": self.counters,
            "servos": {
                str(s.id): {
                    "registers": s.registers(),
                    "raw": list(s.mem[:87]),
                    "saved_eeprom": {str(a): v for a, v in sorted(s.saved_eeprom.items())},
                    "pending_reg_write": None
                    if not s.pending_reg_write
                    else {"address": s.pending_reg_write[0], "data": list(s.pending_reg_write[1])},
                    "position_counts": s.present_counts(),
                    "velocity_counts_s": s.velocity_counts_s,
                    "rx_packets": s.rx_packets,
                    "tx_packets": s.tx_packets,
                    "on_bus": s.id not in self.faults.no_answer
                    and not (s.id in self.faults.disappear_at_s and now - self.start >= self.faults.disappear_at_s[s.id]),
                }
                for s in self.servos
            },
        }

    def summary(self, now):
        return {
            "packets": self.counters["packets"],
            "replies": self.counters["replies"],
            "bad_checksum": self.counters["bad_checksum"],
            "dropped_bytes": self.counters["dropped_bytes"],
            "errors_injected": self.counters["injected"],
            "per_id": {str(s.id): {"rx": s.rx_packets, "tx": s.tx_packets} for s in self.servos},
            "uptime_s": round(now - self.start, 3),
        }

    # -- control commands other than fault words --
    def control(self, line, now):
        """One control line -> one reply line (no newline)."""
        words = line.split()
        if not words:
            return "error empty line"
        if words[0] == "state" and len(words) == 1:
            return json.dumps(self.state(now), separators=(",", ":"))
        if words[0] == "set":
            return self._control_set(words, now)
        if words[0] == "power_cycle":
            targets = self.servos
            if len(words) == 2:
                try:
                    sid = _parse_id(words[1])
                except ValueError as e:
                    return f"error power_cycle: {e}"
                targets = [s for s in self.servos if s.id == sid]
                if not targets:
                    return f"error power_cycle: no servo with id {sid}"
            elif len(words) > 2:
                return "error usage: power_cycle [<id>]"
            for s in targets:
                s.power_cycle(now)
            return "ok"
        try:
            self.faults.apply_spec(line)
        except FaultError as e:
            return f"error {e}"
        return "ok"

    def _control_set(self, words, now):
        if len(words) != 4:
            return "error usage: set <id> <position|register name|address> <value>"
        try:
            sid = _parse_id(words[1])
            value = float(words[3])
        except ValueError as e:
            return f"error set: {e}"
        targets = [s for s in self.servos if s.id == sid]
        if not targets:
            return f"error set: no servo with id {sid}"
        what = words[2]
        for servo in targets:
            servo.advance(now)
            if what in ("position", "present_position"):
                servo.set_present_counts(value)
                servo._refresh_feedback(0.0)
                continue
            reg = REG_BY_NAME.get(what)
            if reg is None:
                try:
                    addr = int(what, 0)
                except ValueError:
                    return f"error set: unknown register {what!r}"
                reg = next((r for r in REGISTERS if r[0] == addr), None)
                if reg is None:
                    return f"error set: no register at address {addr}"
            addr, size, _name, _access, _default, sign = reg
            raw = encode_sign(value, sign) if sign is not None else int(value)
            if raw < 0 or raw >= 1 << (8 * size):
                return f"error set: {value} does not fit {reg[2]}"
            servo._put(addr, size, raw)  # bypasses the access rules: a test's hand on the hardware
        return "ok"


# ---------------------------------------------------------------------------------------------------------


class Emulator:
    """The I/O loop: the pty master, the control socket and its clients, stdin, signals, timed replies."""

    def __init__(self, args):
        ids = _parse_int_list(args.ids, "--ids")
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 253 for i in ids):
            raise SystemExit(f"--ids: expected distinct ids in 0..253, got {args.ids!r}")
        if args.positions:
            positions = _parse_int_list(args.positions, "--positions")
            if len(positions) == 1:
                positions = positions * len(ids)
            if len(positions) != len(ids):
                raise SystemExit(f"--positions has {len(positions)} values for {len(ids)} ids")
        else:
            positions = [2048] * len(ids)
        self.bus = Bus(ids, positions, args.seed, time.monotonic())
        if args.faults:
            try:
                self.bus.faults.apply_spec(args.faults)
            except FaultError as e:
                print(f"sts3215_emulator: error: {e}; starting without --faults", file=sys.stderr, flush=True)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self.outbox = bytearray()
        self.scheduled = []  # [(due, bytes)] in wire order
        self.control_path = args.control
        self.control = None
        self.clients = {}  # socket -> bytearray of unanswered input
        if self.control_path:
            if os.path.exists(self.control_path):
                os.unlink(self.control_path)
            self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.control.bind(self.control_path)
            except OSError as e:
                raise SystemExit(f"--control {self.control_path!r}: {e}") from None
            self.control.listen(8)
            self.control.setblocking(False)
        mode = os.fstat(0).st_mode
        self.watch_stdin = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.stop_reason = None

    def _on_signal(self, signum, _frame):
        self.stop_reason = signal.Signals(signum).name
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self):
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        print(f"PORT {self.port}", flush=True)
        try:
            while self.stop_reason is None:
                self._once()
        finally:
            summary = self.bus.summary(time.monotonic())
            summary["stopped_by"] = self.stop_reason
            print(json.dumps(summary, separators=(",", ":")), file=sys.stderr, flush=True)
            if self.control is not None:
                self.control.close()
                try:
                    os.unlink(self.control_path)
                except OSError:
                    pass

    def _once(self):
        now = time.monotonic()
        timeout = None
        if self.scheduled:
            timeout = max(0.0, self.scheduled[0][0] - now)
        if self.bus.rx:  # a partial packet goes stale even if nothing else arrives
            stale_in = STALE_PARTIAL_PACKET_S - (now - self.bus.rx_last_byte) + 0.001
            timeout = max(0.0, stale_in) if timeout is None else min(timeout, max(0.0, stale_in))
        readers = [self.master, self.wake_r] + list(self.clients)
        if self.control is not None:
            readers.append(self.control)
        if self.watch_stdin:
            readers.append(0)
        writers = [self.master] if self.outbox else []
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except InterruptedError:
            return
        now = time.monotonic()
        if self.wake_r in readable:
            try:
                os.read(self.wake_r, 64)
            except BlockingIOError:
                pass
        if self.stop_reason is not None:
            return
        if 0 in readable and not os.read(0, 4096):
            self.stop_reason = "stdin closed"
            return
        if self.master in readable:
            self._read_wire(now)
        if self.bus.rx and now - self.bus.rx_last_byte > STALE_PARTIAL_PACKET_S:
            self.bus._drop_stale()
        while self.scheduled and self.scheduled[0][0] <= now:
            self.outbox.extend(self.scheduled.pop(0)[1])
        if self.outbox:
            self._write_wire()
        if self.control is not None and self.control in readable:
            self._accept()
        for client in [c for c in self.clients if c in readable]:
            self._serve_client(client, now)

    def _read_wire(self, now):
        try:
            data = os.read(self.master, 4096)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:  # no one has the slave open; we hold it, so this is transient
                time.sleep(0.01)
                return
            raise
        if data:
            replies = self.bus.feed(data, now)
            # Replies leave in order: a later packet's reply never overtakes an earlier, delayed one.
            for due, packet in replies:
                if self.scheduled:
                    due = max(due, self.scheduled[-1][0])
                self.scheduled.append((due, packet))

    def _write_wire(self):
        try:
            n = os.write(self.master, self.outbox)
            del self.outbox[:n]
        except BlockingIOError:
            pass

    def _accept(self):
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.clients[conn] = bytearray()

    def _serve_client(self, client, now):
        try:
            data = client.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            client.close()
            del self.clients[client]
            return
        buf = self.clients[client]
        buf.extend(data)
        if len(buf) > MAX_CONTROL_LINE and b"\n" not in buf:
            buf.clear()
            buf.extend(b"(line too long)\n")
        while b"\n" in buf:
            raw, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            line = raw.decode("utf-8", "replace").strip()
            reply = self.bus.control(line, now)
            if reply.startswith("error"):
                print(f"sts3215_emulator: control: {line!r}: {reply}", file=sys.stderr, flush=True)
            try:
                client.setblocking(True)
                client.sendall(reply.encode() + b"\n")
                client.setblocking(False)
            except OSError:
                client.close()
                del self.clients[client]
                return


def _parse_int_list(text, flag):
    try:
        return [int(x, 0) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated integers, got {text!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Emulated Feetech STS3215 servos on a pty (a test fixture).")
    parser.add_argument("--ids", default="1,2,3,4,5,6", help="servo ids, comma-separated (default 1..6)")
    parser.add_argument("--positions", default="", help="initial present positions in counts, per id (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice (default 0)")
    parser.add_argument("--faults", default="", help='initial faults, e.g. "no_answer=3 delay_ms=5"')
    parser.add_argument("--control", default="", help="unix stream socket path for run-time control lines")
    args = parser.parse_args(argv)
    Emulator(args).run()


if __name__ == "__main__":
    main()
