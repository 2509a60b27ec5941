"""Tests for coxswain_msg.py: the WIRE.md test vectors (the same bytes the Rust golden test checks), round trips
at the bounds, every error variant, and random inputs that must never raise anything but DecodeError.

Run with:  python3 drivers/msg/python/test_codec.py   (plain asserts, standard library only)
"""

import os
import random
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import coxswain_msg as m  # noqa: E402

WIRE_MD = os.path.join(HERE, "..", "WIRE.md")

# The worked example of WIRE.md section 6; drivers/msg/tests/golden.rs checks the same string.
JOINT_STATE_GOLDEN = (
    "01 01 ac 02 80 94 eb dc 03 02 00 00 00 3f 00 00 a0 bf 02 00 00 00 00 00 00 00 40 02 00 00 c0 3f 00 00 80 be"
)


def vectors():
    """The `vector <name>` blocks of WIRE.md section 7."""
    found, name, hex_lines = {}, None, []
    with open(WIRE_MD, encoding="utf-8") as f:
        for line in f:
            if line.startswith("vector "):
                name, hex_lines = line.split()[1], []
            elif name is not None and line.startswith("```"):
                found[name] = bytes.fromhex(" ".join(hex_lines))
                name = None
            elif name is not None:
                hex_lines.append(line.strip())
    return found


# The values WIRE.md section 7 gives for each vector (the same as drivers/msg/tests/common/mod.rs).
EXAMPLES = {
    "joint_state": m.JointState(m.Header(300, 1_000_000_000), [0.5, -1.25], [0.0, 2.0], [1.5, -0.25]),
    "joint_command": m.JointCommand(
        m.Header(301, 1_000_002_000), [0.5, -1.25], [0.0, 0.0], [0.0, 0.0], [20.0, 15.0], []
    ),
    "imu_sample": m.ImuSample(
        m.Header(7, 123_456_789), m.Quaternion(1.0, 0.0, 0.0, 0.0), [0.0, 0.0, 0.5], [0.0, 0.0, 9.75]
    ),
    "image_header_key": m.ImageHeader(
        m.Header(42, 2_000_000_000),
        640,
        480,
        m.ImageEncoding.Rgb8,
        1920,
        m.PayloadRef(m.KeySuffix("frame"), 921_600, 0xCBF43926),
    ),
    "image_header_shm": m.ImageHeader(
        m.Header(43, 2_033_333_333),
        4,
        2,
        m.ImageEncoding.Mono16,
        8,
        m.PayloadRef(m.SharedMemory(segment_id=3, offset_bytes=4096), 16, None),
    ),
    "estop": m.EStop(m.Header(1, 5), m.EStopAction.Engage, "pendant", "button pressed"),
    "runtime_status": m.RuntimeStatus(
        m.Header(10, 3_000_000_000),
        m.RuntimeState.Running,
        ticks=500_000,
        overruns=3,
        tick_lateness_p99_us=120,
        inference_latency_p50_us=8000,
        inference_latency_p99_us=15_000,
        chunks_received=1000,
        chunks_spliced=990,
        safety_interventions=2,
        last_fault="",
    ),
    "vector_sample": m.VectorSample(m.Header(9, 4_000_000_000), [0.25, -2.0, 100.0]),
    "arm_request": m.ArmRequest(m.Header(2, 6), m.ArmAction.Arm, "operator", "shift start"),
}

DECODERS = [
    m.decode_joint_state,
    m.decode_joint_command,
    m.decode_imu_sample,
    m.decode_image_header,
    m.decode_estop,
    m.decode_runtime_status,
    m.decode_vector_sample,
    m.decode_arm_request,
]


def expect_decode_error(data, decoder, variant, field=None):
    try:
        decoder(bytes(data))
    except m.DecodeError as e:
        assert e.variant == variant, f"{decoder.__name__}: expected {variant}, got {e}"
        assert field is None or e.field == field, f"{decoder.__name__}: expected field {field}, got {e}"
        return
    raise AssertionError(f"{decoder.__name__} accepted {bytes(data).hex(' ')}")


def expect_encode_error(msg, variant, field):
    try:
        m.encode(msg)
    except m.EncodeError as e:
        assert (e.variant, e.field) == (variant, field), f"expected {variant} in {field}, got {e}"
        return
    raise AssertionError(f"encoded {msg!r}")


def test_worked_example():
    state = EXAMPLES["joint_state"]
    assert m.encode_joint_state(state).hex(" ") == JOINT_STATE_GOLDEN
    assert m.decode_joint_state(bytes.fromhex(JOINT_STATE_GOLDEN)) == state
    assert vectors()["joint_state"].hex(" ") == JOINT_STATE_GOLDEN


def test_every_vector():
    found = vectors()
    assert sorted(found) == sorted(EXAMPLES), sorted(found)
    for name, msg in EXAMPLES.items():
        assert m.encode(msg) == found[name], f"{name}: {m.encode(msg).hex(' ')}"
        assert m.decode(found[name]) == msg, name
        assert len(found[name]) <= m.MAX_ENCODED_LEN[m.peek_kind(found[name])]


def test_crc32_matches_zlib():
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_bounds_round_trip():
    full = [float(i) for i in range(m.MAX_JOINTS)]
    big = m.Header(2**64 - 1, 2**64 - 1)
    state = m.JointState(big, full, full, full)
    data = m.encode_joint_state(state)
    assert len(data) == m.MAX_ENCODED_LEN[m.MessageKind.JointState]
    assert m.decode_joint_state(data) == state
    command = m.JointCommand(big, full, full, full, full, full)
    data = m.encode_joint_command(command)
    assert len(data) == m.MAX_ENCODED_LEN[m.MessageKind.JointCommand]
    assert m.decode_joint_command(data) == command
    assert m.encode_joint_state(m.JointState()) == bytes([1, 1, 0, 0, 0, 0, 0])
    assert m.decode_joint_state(m.encode_joint_state(m.JointState())) == m.JointState()
    estop = m.EStop(big, m.EStopAction.Reset, "é" * 16, "é" * 31 + "xx")  # exactly 32 and 64 bytes
    data = m.encode_estop(estop)
    assert len(data) == m.MAX_ENCODED_LEN[m.MessageKind.EStop]
    assert m.decode_estop(data) == estop
    u64, u32 = 2**64 - 1, 2**32 - 1
    status = m.RuntimeStatus(big, m.RuntimeState.Fault, u64, u64, u32, u32, u32, u64, u64, u64, "x" * 64)
    data = m.encode_runtime_status(status)
    assert len(data) == m.MAX_ENCODED_LEN[m.MessageKind.RuntimeStatus]
    assert m.decode_runtime_status(data) == status
    vector = m.VectorSample(big, [1.0] * m.MAX_VECTOR_LEN)
    data = m.encode_vector_sample(vector)
    assert len(data) == m.MAX_ENCODED_LEN[m.MessageKind.VectorSample]
    assert m.decode_vector_sample(data) == vector
    jpeg = m.ImageHeader(big, u32, u32, m.ImageEncoding.Jpeg, 0, m.PayloadRef(m.KeySuffix("s" * 32), u32, u32))
    assert len(m.encode_image_header(jpeg)) == m.MAX_ENCODED_LEN[m.MessageKind.ImageHeader]
    for encoding in m.ImageEncoding:
        bpp = m.BYTES_PER_PIXEL.get(encoding)
        step = 0 if bpp is None else 640 * bpp + 64
        payload = m.PayloadRef(m.SharedMemory(2**64 - 1, 0), step * 480 or 1234, 2**32 - 1)
        image = m.ImageHeader(m.Header(1, 2), 640, 480, encoding, step, payload)
        data = m.encode_image_header(image)
        assert data[8] == encoding, encoding
        assert m.decode_image_header(data) == image
    nan = m.decode_joint_state(m.encode_joint_state(m.JointState(m.Header(), [float("nan")], [float("inf")], [-0.0])))
    assert nan.position_rad[0] != nan.position_rad[0] and nan.velocity_rad_s == [float("inf")]


def test_every_error_variant():
    good = m.encode_joint_state(EXAMPLES["joint_state"])
    expect_decode_error(good[:1], m.decode_joint_state, "Truncated", "envelope")
    expect_decode_error(bytes([1, 2]) + good[2:], m.decode_joint_state, "UnsupportedVersion")
    expect_decode_error(good, m.decode_joint_command, "WrongKind")
    try:
        m.peek_kind(bytes([9, 1]))
        raise AssertionError("kind 9")
    except m.DecodeError as e:
        assert e.variant == "UnknownKind"
    expect_decode_error(good + b"\x00", m.decode_joint_state, "TrailingBytes")
    expect_decode_error(bytes([1, 1, 0, 0, 33]), m.decode_joint_state, "TooLong", "position_rad")
    six_byte_length = bytes([1, 1, 0, 0, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00])  # lengths are u32 varints
    expect_decode_error(six_byte_length, m.decode_joint_state, "Invalid", "position_rad")
    expect_decode_error(bytes([5, 1, 0, 0, 0, 33]) + b"a" * 33 + b"\x00", m.decode_estop, "TooLong", "source")
    mismatch = bytes([1, 1, 0, 0, 2]) + bytes(8) + bytes([1]) + bytes(4) + bytes([2]) + bytes(8)
    expect_decode_error(mismatch, m.decode_joint_state, "LengthMismatch", "velocity_rad_s")
    estop = bytearray(m.encode_estop(EXAMPLES["estop"]))
    estop[4] = 2
    expect_decode_error(estop, m.decode_estop, "Invalid", "action")
    estop = bytearray(m.encode_estop(EXAMPLES["estop"]))
    estop[6] = 0xFF
    expect_decode_error(estop, m.decode_estop, "Invalid", "source")
    expect_decode_error(bytes([1, 1]) + b"\x80" * 11, m.decode_joint_state, "Invalid", "header.seq")
    expect_decode_error(bytes([4, 1, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F]), m.decode_image_header, "Invalid", "width_px")
    shm = bytearray(m.encode_image_header(EXAMPLES["image_header_shm"]))
    for at, value, field in [
        (10, 11, "encoding"),
        (11, 7, "row_step_bytes"),
        (12, 2, "payload.location"),
        (16, 17, "payload.len_bytes"),
        (17, 2, "payload.crc32"),
    ]:
        bad = bytearray(shm)
        bad[at] = value
        expect_decode_error(bad, m.decode_image_header, "Invalid", field)
    key = m.encode_image_header(EXAMPLES["image_header_key"]).replace(b"frame", b"fr*me")
    expect_decode_error(key, m.decode_image_header, "Invalid", "payload.location.suffix")
    # Non-shortest varints are accepted, as in Rust.
    assert m.decode_joint_state(bytes([1, 1, 0x80, 0x00, 0, 0, 0, 0])).header.seq == 0

    expect_encode_error(m.JointState(m.Header(), [0.0, 1.0], [0.0], [0.0, 1.0]), "LengthMismatch", "velocity_rad_s")
    command = m.JointCommand(m.Header(), [0.0], [0.0], [0.0], [1.0, 2.0], [])
    expect_encode_error(command, "LengthMismatch", "kp_nm_per_rad")
    expect_encode_error(m.JointState(m.Header(), [0.0] * 33, [0.0] * 33, [0.0] * 33), "TooLong", "position_rad")
    expect_encode_error(m.EStop(m.Header(), m.EStopAction.Engage, "x" * 33, ""), "TooLong", "source")
    expect_encode_error(m.JointState(m.Header(-1, 0)), "Invalid", "header.seq")
    expect_encode_error(m.JointState(m.Header(), [1e40], [0.0], [0.0]), "Invalid", "position_rad")
    image = EXAMPLES["image_header_key"]
    expect_encode_error(
        m.ImageHeader(image.header, 640, 480, m.ImageEncoding.Rgb8, 1919, image.payload), "Invalid", "row_step_bytes"
    )
    expect_encode_error(
        m.ImageHeader(image.header, 640, 480, m.ImageEncoding.Rgb8, 1920, m.PayloadRef(m.KeySuffix("a//b"), 921_600)),
        "Invalid",
        "payload.location.suffix",
    )


class Padded:
    """Writes fields the way a decoder must still accept them: every varint at its longest (5 bytes for a u32,
    10 for a u64), so 0 is 80 80 80 80 00."""

    def __init__(self, kind):
        self.out = bytearray([int(kind), m.FORMAT_VERSION])

    def varint(self, value, width):
        for i in range(width - 1):
            self.out.append(((value >> (7 * i)) & 0x7F) | 0x80)
        self.out.append(value >> (7 * (width - 1)))
        return self

    def u32(self, value):
        return self.varint(value, 5)

    def u64(self, value):
        return self.varint(value, 10)

    def header(self, h):
        return self.u64(h.seq).u64(h.stamp_ns)

    def floats(self, values):
        self.u32(len(values))
        self.out += struct.pack(f"<{len(values)}f", *values)
        return self

    def string(self, text):
        data = text.encode("utf-8")
        self.u32(len(data))
        self.out += data
        return self

    def raw(self, data):
        self.out += data
        return self


def test_receive_maxima():
    """The longest accepted form of each message decodes, and is exactly MAX_RECEIVE_LEN long."""
    u64, u32 = 2**64 - 1, 2**32 - 1
    big = m.Header(u64, u64)
    full = [1.0] * m.MAX_JOINTS
    K = m.MessageKind
    cases = [
        (m.JointState(big, full, full, full), Padded(K.JointState).header(big).floats(full).floats(full).floats(full)),
        (
            m.JointCommand(big, full, full, full, full, full),
            Padded(K.JointCommand).header(big).floats(full).floats(full).floats(full).floats(full).floats(full),
        ),
        (
            m.ImuSample(big, m.Quaternion(1.0, 0.0, 0.0, 0.0), [1.0] * 3, [1.0] * 3),
            Padded(K.ImuSample).header(big).raw(struct.pack("<10f", 1.0, 0, 0, 0, *[1.0] * 6)),
        ),
        (
            m.ImageHeader(big, u32, u32, m.ImageEncoding.Jpeg, 0, m.PayloadRef(m.KeySuffix("s" * 32), u32, u32)),
            Padded(K.ImageHeader)
            .header(big)
            .u32(u32)
            .u32(u32)
            .u32(int(m.ImageEncoding.Jpeg))
            .u32(0)
            .u32(0)
            .string("s" * 32)
            .u32(u32)
            .raw(b"\x01")
            .u32(u32),
        ),
        (
            m.EStop(big, m.EStopAction.Reset, "x" * 32, "y" * 64),
            Padded(K.EStop).header(big).u32(int(m.EStopAction.Reset)).string("x" * 32).string("y" * 64),
        ),
        (
            m.RuntimeStatus(big, m.RuntimeState.Fault, u64, u64, u32, u32, u32, u64, u64, u64, "z" * 64),
            Padded(K.RuntimeStatus)
            .header(big)
            .u32(int(m.RuntimeState.Fault))
            .u64(u64)
            .u64(u64)
            .u32(u32)
            .u32(u32)
            .u32(u32)
            .u64(u64)
            .u64(u64)
            .u64(u64)
            .string("z" * 64),
        ),
        (m.VectorSample(big, [1.0] * m.MAX_VECTOR_LEN), Padded(K.VectorSample).header(big).floats([1.0] * 32)),
    ]
    assert sorted(int(type_kind) for type_kind in m.MAX_RECEIVE_LEN) == sorted(int(k) for k in m.MessageKind)
    for msg, padded in cases:
        data = bytes(padded.out)
        kind = m.peek_kind(data)
        assert m.decode(data) == msg, kind
        assert len(data) == m.MAX_RECEIVE_LEN[kind], (kind, len(data))
    # One byte more in a count is refused.
    six_byte_count = Padded(K.VectorSample).header(big).varint(1, 6).raw(struct.pack("<f", 1.0))
    expect_decode_error(six_byte_count.out, m.decode_vector_sample, "Invalid", "values")


def test_documented_lengths():
    """WIRE.md section 2's table gives both lengths of every kind, and they are this codec's constants."""
    rows = {}
    with open(WIRE_MD, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.split("|")]
            lengths = [c.split() for c in cells[3:5]]
            if len(lengths) == 2 and all(len(w) == 2 and w[0].isdigit() and w[1] == "bytes" for w in lengths):
                rows[cells[2].strip("`")] = (int(cells[3].split()[0]), int(cells[4].split()[0]))
    ours = {k.name: (m.MAX_ENCODED_LEN[k], m.MAX_RECEIVE_LEN[k]) for k in m.MessageKind}
    assert rows == ours, (rows, ours)


def test_every_prefix_is_truncated():
    for name, msg in EXAMPLES.items():
        data = m.encode(msg)
        decoder = m._CODECS[m.peek_kind(data)][2]
        for n in range(len(data)):
            expect_decode_error(data[:n], decoder, "Truncated")


def test_random_inputs_only_raise_decode_error():
    rng = random.Random(1234)
    valid = [m.encode(msg) for msg in EXAMPLES.values()]
    for i in range(20_000):
        if i % 2:
            data = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data = bytearray([rng.randint(1, 7), 1] + [rng.randrange(256) for _ in range(rng.randrange(60))])
        for decoder in DECODERS:
            try:
                msg = decoder(bytes(data))
            except m.DecodeError:
                continue
            # Whatever decodes re-encodes, and is stable from then on (compared as bytes: NaN != NaN, and the
            # first pass through a Python float may quieten a signalling NaN).
            again = m.encode(msg)
            assert m.encode(m.decode(again)) == again


def main():
    tests = [(name, fn) for name, fn in sorted(globals().items()) if name.startswith("test_") and callable(fn)]
    for name, fn in tests:
        fn()
        print(f"ok  {name}")
    print(f"{len(tests)} passed")


if __name__ == "__main__":
    main()
