"""Python codec for the coxswain wire format, version 1.

A second implementation of ``drivers/msg/WIRE.md``, written from that text (not generated from the Rust crate),
so that the two agreeing on the test vectors means the specification says what both do. Standard library only.

Messages are dataclasses whose field names are the Rust field names. Each message type has an
``encode_<name>(msg) -> bytes`` and a ``decode_<name>(data) -> msg``; ``encode(msg)`` and ``decode(data)``
dispatch on the type and on the kind byte. Decoding raises :class:`DecodeError` whose ``variant`` and ``field``
are the Rust ``DecodeError`` variant and field names; encoding raises :class:`EncodeError`.

Floats travel as f32: a Python float is rounded to the nearest f32 on encode, so decode(encode(x)) returns the
rounded value. NaN and infinities are carried (a NaN's payload bits may not survive Python's float conversion).

Example, with the eclipse-zenoh package::

    import zenoh, coxswain_msg as m
    state = m.JointState(m.Header(seq=1, stamp_ns=0), [0.0, 0.5], [0.0, 0.0], [0.0, 0.0])
    session.put("robot/arm1/state/joints", m.encode_joint_state(state))
    # in a subscriber callback:  m.decode_joint_command(sample.payload.to_bytes())
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, List, Optional, Union

FORMAT_VERSION = 1
ENVELOPE_LEN = 2
MAX_JOINTS = 32
ESTOP_SOURCE_MAX_LEN = 32
ARM_SOURCE_MAX_LEN = 32
ARM_REASON_MAX_LEN = 64
ESTOP_REASON_MAX_LEN = 64
FAULT_REASON_MAX_LEN = 64
PAYLOAD_KEY_SUFFIX_MAX_LEN = 32

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


class MessageKind(IntEnum):
    """Envelope byte 0."""

    JointState = 1
    JointCommand = 2
    ImuSample = 3
    ImageHeader = 4
    EStop = 5
    RuntimeStatus = 6
    VectorSample = 7
    ArmRequest = 8


# The longest message an encoder writes (shortest-form varints), envelope included (WIRE.md section 2).
MAX_ENCODED_LEN = {
    MessageKind.JointState: 409,
    MessageKind.JointCommand: 667,
    MessageKind.ImuSample: 62,
    MessageKind.ImageHeader: 79,
    MessageKind.EStop: 121,
    MessageKind.RuntimeStatus: 153,
    MessageKind.VectorSample: 151,
    MessageKind.ArmRequest: 121,
}

# The longest message a decoder must accept: varints, counts and tags may come in non-shortest forms up to
# 5 bytes (u32) or 10 (u64). Size receive buffers with these (WIRE.md section 2).
MAX_RECEIVE_LEN = {
    MessageKind.JointState: 421,
    MessageKind.JointCommand: 687,
    MessageKind.ImuSample: 62,
    MessageKind.ImageHeader: 95,
    MessageKind.EStop: 133,
    MessageKind.RuntimeStatus: 161,
    MessageKind.VectorSample: 155,
    MessageKind.ArmRequest: 133,
}


class DecodeError(ValueError):
    """A received buffer is not a valid message. ``variant`` is the Rust ``DecodeError`` variant name
    (``Truncated``, ``WrongKind``, ``UnsupportedVersion``, ``UnknownKind``, ``TrailingBytes``, ``TooLong``,
    ``LengthMismatch``, ``Invalid``); ``field`` names the field where there is one."""

    def __init__(self, variant: str, field: Optional[str] = None, detail: str = ""):
        self.variant = variant
        self.field = field
        text = variant + (f" in `{field}`" if field else "") + (f": {detail}" if detail else "")
        super().__init__(text)


class EncodeError(ValueError):
    """A message cannot be encoded. ``variant`` is ``LengthMismatch``, ``TooLong`` or ``Invalid`` (Rust's type
    system rules out the last two there; Python checks them here); ``field`` names the field."""

    def __init__(self, variant: str, field: Optional[str] = None, detail: str = ""):
        self.variant = variant
        self.field = field
        text = variant + (f" in `{field}`" if field else "") + (f": {detail}" if detail else "")
        super().__init__(text)


# --- message types -------------------------------------------------------------------------------------------


@dataclass
class Header:
    seq: int = 0
    stamp_ns: int = 0


@dataclass
class JointState:
    header: Header = field(default_factory=Header)
    position_rad: List[float] = field(default_factory=list)
    velocity_rad_s: List[float] = field(default_factory=list)
    effort_nm: List[float] = field(default_factory=list)


@dataclass
class JointCommand:
    """Empty ``kp_nm_per_rad`` / ``kd_nm_s_per_rad`` mean "the driver keeps its gains"."""

    header: Header = field(default_factory=Header)
    position_rad: List[float] = field(default_factory=list)
    velocity_rad_s: List[float] = field(default_factory=list)
    effort_nm: List[float] = field(default_factory=list)
    kp_nm_per_rad: List[float] = field(default_factory=list)
    kd_nm_s_per_rad: List[float] = field(default_factory=list)


@dataclass
class Quaternion:
    w: float = 1.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


@dataclass
class ImuSample:
    header: Header = field(default_factory=Header)
    orientation: Quaternion = field(default_factory=Quaternion)
    angular_velocity_rad_s: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    linear_acceleration_m_s2: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


class ImageEncoding(IntEnum):
    Rgb8 = 0
    Bgr8 = 1
    Rgba8 = 2
    Bgra8 = 3
    Mono8 = 4
    Mono16 = 5
    DepthU16Mm = 6
    DepthF32M = 7
    Yuyv = 8
    Jpeg = 9
    Png = 10


# Bytes per pixel of uncompressed encodings; compressed ones are absent.
BYTES_PER_PIXEL = {
    ImageEncoding.Mono8: 1,
    ImageEncoding.Mono16: 2,
    ImageEncoding.DepthU16Mm: 2,
    ImageEncoding.Yuyv: 2,
    ImageEncoding.Rgb8: 3,
    ImageEncoding.Bgr8: 3,
    ImageEncoding.Rgba8: 4,
    ImageEncoding.Bgra8: 4,
    ImageEncoding.DepthF32M: 4,
}


@dataclass
class KeySuffix:
    """PayloadLocation tag 0: bytes on ``<header key>/<suffix>``."""

    suffix: str = ""


@dataclass
class SharedMemory:
    """PayloadLocation tag 1."""

    segment_id: int = 0
    offset_bytes: int = 0


PayloadLocation = Union[KeySuffix, SharedMemory]


@dataclass
class PayloadRef:
    location: PayloadLocation = field(default_factory=SharedMemory)
    len_bytes: int = 0
    crc32: Optional[int] = None  # zlib.crc32 of the payload bytes, or None when not computed


@dataclass
class ImageHeader:
    header: Header = field(default_factory=Header)
    width_px: int = 0
    height_px: int = 0
    encoding: ImageEncoding = ImageEncoding.Rgb8
    row_step_bytes: int = 0
    payload: PayloadRef = field(default_factory=PayloadRef)


class EStopAction(IntEnum):
    Engage = 0
    Reset = 1


@dataclass
class EStop:
    header: Header = field(default_factory=Header)
    action: EStopAction = EStopAction.Engage
    source: str = ""
    reason: str = ""


class ArmAction(IntEnum):
    Arm = 0
    Disarm = 1
    Takeover = 2


@dataclass
class ArmRequest:
    header: Header = field(default_factory=Header)
    action: ArmAction = ArmAction.Disarm
    source: str = ""
    reason: str = ""


class RuntimeState(IntEnum):
    Idle = 0
    Homing = 1
    Running = 2
    Holding = 3
    Stopping = 4
    Fault = 5


@dataclass
class RuntimeStatus:
    header: Header = field(default_factory=Header)
    state: RuntimeState = RuntimeState.Idle
    ticks: int = 0
    overruns: int = 0
    tick_lateness_p99_us: int = 0
    inference_latency_p50_us: int = 0
    inference_latency_p99_us: int = 0
    chunks_received: int = 0
    chunks_spliced: int = 0
    safety_interventions: int = 0
    last_fault: str = ""


# --- primitives (WIRE.md section 3) ----------------------------------------------------------------------------


class _Writer:
    def __init__(self, kind: MessageKind):
        self.out = bytearray([int(kind), FORMAT_VERSION])

    def varint(self, value: int, bits: int, name: str) -> None:
        if not isinstance(value, int) or not 0 <= value < (1 << bits):
            raise EncodeError("Invalid", name, f"{value!r} is not a u{bits}")
        while value >= 0x80:
            self.out.append((value & 0x7F) | 0x80)
            value >>= 7
        self.out.append(value)

    def f32(self, value: float, name: str) -> None:
        try:
            self.out += struct.pack("<f", value)
        except (struct.error, OverflowError, TypeError) as e:
            raise EncodeError("Invalid", name, str(e)) from None

    def f32_array(self, values: List[float], bound: int, name: str) -> None:
        if len(values) > bound:
            raise EncodeError("TooLong", name, f"{len(values)} > {bound}")
        self.varint(len(values), 32, name)
        for v in values:
            self.f32(v, name)

    def string(self, text: str, bound: int, name: str) -> None:
        data = text.encode("utf-8")
        if len(data) > bound:
            raise EncodeError("TooLong", name, f"{len(data)} bytes > {bound}")
        self.varint(len(data), 32, name)
        self.out += data

    def tag(self, value: int, allowed: type, name: str) -> None:
        if value not in set(allowed):
            raise EncodeError("Invalid", name, f"{value!r} is not a {allowed.__name__}")
        self.varint(int(value), 32, name)

    def header(self, header: Header) -> None:
        self.varint(header.seq, 64, "header.seq")
        self.varint(header.stamp_ns, 64, "header.stamp_ns")


class _Reader:
    def __init__(self, data: bytes, kind: MessageKind):
        data = bytes(data)
        if len(data) < ENVELOPE_LEN:
            raise DecodeError("Truncated", "envelope")
        # Version before kind: the version says what the kind byte means.
        if data[1] != FORMAT_VERSION:
            raise DecodeError("UnsupportedVersion", detail=str(data[1]))
        if data[0] != kind:
            raise DecodeError("WrongKind", detail=f"expected {int(kind)}, found {data[0]}")
        self.data = data
        self.pos = ENVELOPE_LEN

    def take(self, n: int, name: str) -> bytes:
        if len(self.data) - self.pos < n:
            raise DecodeError("Truncated", name)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, bits: int, name: str) -> int:
        max_len = (bits + 6) // 7  # 5 for u32, 10 for u64
        value = 0
        for i in range(max_len):
            byte = self.take(1, name)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                # The last possible byte may only carry the bits the type has left.
                if i == max_len - 1 and byte > (1 << (bits - 7 * i)) - 1:
                    raise DecodeError("Invalid", name, "varint overflows its type")
                return value
        raise DecodeError("Invalid", name, "varint too long")

    def f32s(self, n: int, name: str) -> List[float]:
        return list(struct.unpack(f"<{n}f", self.take(4 * n, name)))

    def bounded_len(self, bound: int, name: str) -> int:
        # Checked before reading the elements, so a huge length on a short buffer is TooLong, not Truncated.
        n = self.varint(32, name)
        if n > bound:
            raise DecodeError("TooLong", name, f"{n} > {bound}")
        return n

    def f32_array(self, bound: int, name: str) -> List[float]:
        return self.f32s(self.bounded_len(bound, name), name)

    def string(self, bound: int, name: str) -> str:
        data = self.take(self.bounded_len(bound, name), name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("Invalid", name, "invalid UTF-8") from None

    def tag(self, enum: type, name: str):
        value = self.varint(32, name)
        try:
            return enum(value)
        except ValueError:
            raise DecodeError("Invalid", name, f"unknown tag {value}") from None

    def option_byte(self, name: str) -> bool:
        byte = self.take(1, name)[0]
        if byte not in (0, 1):
            raise DecodeError("Invalid", name, f"option byte {byte}")
        return byte == 1

    def header(self) -> Header:
        return Header(seq=self.varint(64, "header.seq"), stamp_ns=self.varint(64, "header.stamp_ns"))

    def finish(self) -> None:
        left = len(self.data) - self.pos
        if left:
            raise DecodeError("TrailingBytes", detail=f"{left} bytes")


def _same_len(error: type, name: str, values: List[float], joints: int) -> None:
    if len(values) != joints:
        raise error("LengthMismatch", name, f"{len(values)} entries, {joints} joints")


def peek_kind(data: bytes) -> MessageKind:
    """Checks the envelope and returns the kind, for keys that carry more than one message type."""
    if len(data) < ENVELOPE_LEN:
        raise DecodeError("Truncated", "envelope")
    if data[1] != FORMAT_VERSION:
        raise DecodeError("UnsupportedVersion", detail=str(data[1]))
    try:
        return MessageKind(data[0])
    except ValueError:
        raise DecodeError("UnknownKind", detail=str(data[0])) from None


# --- JointState, JointCommand ----------------------------------------------------------------------------------


def _check_joint_state(msg: JointState, error: type) -> None:
    n = len(msg.position_rad)
    _same_len(error, "velocity_rad_s", msg.velocity_rad_s, n)
    _same_len(error, "effort_nm", msg.effort_nm, n)


def encode_joint_state(msg: JointState) -> bytes:
    _check_joint_state(msg, EncodeError)
    w = _Writer(MessageKind.JointState)
    w.header(msg.header)
    w.f32_array(msg.position_rad, MAX_JOINTS, "position_rad")
    w.f32_array(msg.velocity_rad_s, MAX_JOINTS, "velocity_rad_s")
    w.f32_array(msg.effort_nm, MAX_JOINTS, "effort_nm")
    return bytes(w.out)


def decode_joint_state(data: bytes) -> JointState:
    r = _Reader(data, MessageKind.JointState)
    msg = JointState(
        header=r.header(),
        position_rad=r.f32_array(MAX_JOINTS, "position_rad"),
        velocity_rad_s=r.f32_array(MAX_JOINTS, "velocity_rad_s"),
        effort_nm=r.f32_array(MAX_JOINTS, "effort_nm"),
    )
    r.finish()
    _check_joint_state(msg, DecodeError)
    return msg


def _check_joint_command(msg: JointCommand, error: type) -> None:
    n = len(msg.position_rad)
    _same_len(error, "velocity_rad_s", msg.velocity_rad_s, n)
    _same_len(error, "effort_nm", msg.effort_nm, n)
    if msg.kp_nm_per_rad:
        _same_len(error, "kp_nm_per_rad", msg.kp_nm_per_rad, n)
    if msg.kd_nm_s_per_rad:
        _same_len(error, "kd_nm_s_per_rad", msg.kd_nm_s_per_rad, n)


def encode_joint_command(msg: JointCommand) -> bytes:
    _check_joint_command(msg, EncodeError)
    w = _Writer(MessageKind.JointCommand)
    w.header(msg.header)
    w.f32_array(msg.position_rad, MAX_JOINTS, "position_rad")
    w.f32_array(msg.velocity_rad_s, MAX_JOINTS, "velocity_rad_s")
    w.f32_array(msg.effort_nm, MAX_JOINTS, "effort_nm")
    w.f32_array(msg.kp_nm_per_rad, MAX_JOINTS, "kp_nm_per_rad")
    w.f32_array(msg.kd_nm_s_per_rad, MAX_JOINTS, "kd_nm_s_per_rad")
    return bytes(w.out)


def decode_joint_command(data: bytes) -> JointCommand:
    r = _Reader(data, MessageKind.JointCommand)
    msg = JointCommand(
        header=r.header(),
        position_rad=r.f32_array(MAX_JOINTS, "position_rad"),
        velocity_rad_s=r.f32_array(MAX_JOINTS, "velocity_rad_s"),
        effort_nm=r.f32_array(MAX_JOINTS, "effort_nm"),
        kp_nm_per_rad=r.f32_array(MAX_JOINTS, "kp_nm_per_rad"),
        kd_nm_s_per_rad=r.f32_array(MAX_JOINTS, "kd_nm_s_per_rad"),
    )
    r.finish()
    _check_joint_command(msg, DecodeError)
    return msg


# --- ImuSample ------------------------------------------------------------------------------------------------


def encode_imu_sample(msg: ImuSample) -> bytes:
    w = _Writer(MessageKind.ImuSample)
    w.header(msg.header)
    q = msg.orientation
    for v in (q.w, q.x, q.y, q.z):
        w.f32(v, "orientation")
    for name in ("angular_velocity_rad_s", "linear_acceleration_m_s2"):
        values = getattr(msg, name)
        if len(values) != 3:
            raise EncodeError("Invalid", name, "needs exactly 3 values")
        for v in values:
            w.f32(v, name)
    return bytes(w.out)


def decode_imu_sample(data: bytes) -> ImuSample:
    r = _Reader(data, MessageKind.ImuSample)
    header = r.header()
    msg = ImuSample(
        header=header,
        orientation=Quaternion(*r.f32s(4, "orientation")),
        angular_velocity_rad_s=r.f32s(3, "angular_velocity_rad_s"),
        linear_acceleration_m_s2=r.f32s(3, "linear_acceleration_m_s2"),
    )
    r.finish()
    return msg


# --- ImageHeader ----------------------------------------------------------------------------------------------


def _valid_key_suffix(suffix: str) -> bool:
    return (
        suffix != ""
        and all(chunk != "" for chunk in suffix.split("/"))
        and not any(c in suffix for c in "*$?#")
    )


def _check_image_header(msg: ImageHeader, error: type) -> None:
    bpp = BYTES_PER_PIXEL.get(ImageEncoding(msg.encoding))
    if bpp is not None:
        if msg.row_step_bytes < msg.width_px * bpp:
            raise error("Invalid", "row_step_bytes", "shorter than a row of pixels")
        if msg.row_step_bytes * msg.height_px != msg.payload.len_bytes:
            raise error("Invalid", "payload.len_bytes", "is not row_step_bytes * height_px")
    elif msg.row_step_bytes != 0:
        raise error("Invalid", "row_step_bytes", "must be 0 for a compressed encoding")
    if isinstance(msg.payload.location, KeySuffix) and not _valid_key_suffix(msg.payload.location.suffix):
        raise error("Invalid", "payload.location.suffix", repr(msg.payload.location.suffix))


def encode_image_header(msg: ImageHeader) -> bytes:
    w = _Writer(MessageKind.ImageHeader)
    w.header(msg.header)
    w.varint(msg.width_px, 32, "width_px")
    w.varint(msg.height_px, 32, "height_px")
    w.tag(msg.encoding, ImageEncoding, "encoding")
    w.varint(msg.row_step_bytes, 32, "row_step_bytes")
    location = msg.payload.location
    if isinstance(location, KeySuffix):
        w.varint(0, 32, "payload.location")
        w.string(location.suffix, PAYLOAD_KEY_SUFFIX_MAX_LEN, "payload.location.suffix")
    elif isinstance(location, SharedMemory):
        w.varint(1, 32, "payload.location")
        w.varint(location.segment_id, 64, "payload.location.segment_id")
        w.varint(location.offset_bytes, 64, "payload.location.offset_bytes")
    else:
        raise EncodeError("Invalid", "payload.location", f"{location!r} is neither KeySuffix nor SharedMemory")
    w.varint(msg.payload.len_bytes, 32, "payload.len_bytes")
    if msg.payload.crc32 is None:
        w.out.append(0)
    else:
        w.out.append(1)
        w.varint(msg.payload.crc32, 32, "payload.crc32")
    _check_image_header(msg, EncodeError)  # after the range checks, so the arithmetic is on valid integers
    return bytes(w.out)


def decode_image_header(data: bytes) -> ImageHeader:
    r = _Reader(data, MessageKind.ImageHeader)
    header = r.header()
    width_px = r.varint(32, "width_px")
    height_px = r.varint(32, "height_px")
    encoding = r.tag(ImageEncoding, "encoding")
    row_step_bytes = r.varint(32, "row_step_bytes")
    tag = r.varint(32, "payload.location")
    if tag == 0:
        location: PayloadLocation = KeySuffix(r.string(PAYLOAD_KEY_SUFFIX_MAX_LEN, "payload.location.suffix"))
    elif tag == 1:
        location = SharedMemory(
            segment_id=r.varint(64, "payload.location.segment_id"),
            offset_bytes=r.varint(64, "payload.location.offset_bytes"),
        )
    else:
        raise DecodeError("Invalid", "payload.location", f"unknown tag {tag}")
    len_bytes = r.varint(32, "payload.len_bytes")
    crc32 = r.varint(32, "payload.crc32") if r.option_byte("payload.crc32") else None
    r.finish()
    msg = ImageHeader(header, width_px, height_px, encoding, row_step_bytes, PayloadRef(location, len_bytes, crc32))
    _check_image_header(msg, DecodeError)
    return msg


# --- EStop ----------------------------------------------------------------------------------------------------


def encode_estop(msg: EStop) -> bytes:
    w = _Writer(MessageKind.EStop)
    w.header(msg.header)
    w.tag(msg.action, EStopAction, "action")
    w.string(msg.source, ESTOP_SOURCE_MAX_LEN, "source")
    w.string(msg.reason, ESTOP_REASON_MAX_LEN, "reason")
    return bytes(w.out)


def decode_estop(data: bytes) -> EStop:
    r = _Reader(data, MessageKind.EStop)
    msg = EStop(
        header=r.header(),
        action=r.tag(EStopAction, "action"),
        source=r.string(ESTOP_SOURCE_MAX_LEN, "source"),
        reason=r.string(ESTOP_REASON_MAX_LEN, "reason"),
    )
    r.finish()
    return msg


# --- ArmRequest -----------------------------------------------------------------------------------------------


def encode_arm_request(msg: ArmRequest) -> bytes:
    w = _Writer(MessageKind.ArmRequest)
    w.header(msg.header)
    w.tag(msg.action, ArmAction, "action")
    w.string(msg.source, ARM_SOURCE_MAX_LEN, "source")
    w.string(msg.reason, ARM_REASON_MAX_LEN, "reason")
    return bytes(w.out)


def decode_arm_request(data: bytes) -> ArmRequest:
    r = _Reader(data, MessageKind.ArmRequest)
    msg = ArmRequest(
        header=r.header(),
        action=r.tag(ArmAction, "action"),
        source=r.string(ARM_SOURCE_MAX_LEN, "source"),
        reason=r.string(ARM_REASON_MAX_LEN, "reason"),
    )
    r.finish()
    return msg


# --- RuntimeStatus --------------------------------------------------------------------------------------------

# (field, varint bits) in wire order, after the header and the state tag.
_STATUS_COUNTERS = (
    ("ticks", 64),
    ("overruns", 64),
    ("tick_lateness_p99_us", 32),
    ("inference_latency_p50_us", 32),
    ("inference_latency_p99_us", 32),
    ("chunks_received", 64),
    ("chunks_spliced", 64),
    ("safety_interventions", 64),
)


def encode_runtime_status(msg: RuntimeStatus) -> bytes:
    w = _Writer(MessageKind.RuntimeStatus)
    w.header(msg.header)
    w.tag(msg.state, RuntimeState, "state")
    for name, bits in _STATUS_COUNTERS:
        w.varint(getattr(msg, name), bits, name)
    w.string(msg.last_fault, FAULT_REASON_MAX_LEN, "last_fault")
    return bytes(w.out)


def decode_runtime_status(data: bytes) -> RuntimeStatus:
    r = _Reader(data, MessageKind.RuntimeStatus)
    header = r.header()
    state = r.tag(RuntimeState, "state")
    counters = {name: r.varint(bits, name) for name, bits in _STATUS_COUNTERS}
    last_fault = r.string(FAULT_REASON_MAX_LEN, "last_fault")
    r.finish()
    return RuntimeStatus(header=header, state=state, last_fault=last_fault, **counters)


# --- dispatch -------------------------------------------------------------------------------------------------

MAX_VECTOR_LEN = 32


@dataclass
class VectorSample:
    header: Header = field(default_factory=Header)
    values: List[float] = field(default_factory=list)


def encode_vector_sample(msg: VectorSample) -> bytes:
    w = _Writer(MessageKind.VectorSample)
    w.header(msg.header)
    w.f32_array(msg.values, MAX_VECTOR_LEN, "values")
    return bytes(w.out)


def decode_vector_sample(data: bytes) -> VectorSample:
    r = _Reader(data, MessageKind.VectorSample)
    msg = VectorSample(header=r.header(), values=r.f32_array(MAX_VECTOR_LEN, "values"))
    r.finish()
    return msg


Message = Union[JointState, JointCommand, ImuSample, ImageHeader, EStop, RuntimeStatus, VectorSample, ArmRequest]

_CODECS: dict = {
    MessageKind.JointState: (JointState, encode_joint_state, decode_joint_state),
    MessageKind.JointCommand: (JointCommand, encode_joint_command, decode_joint_command),
    MessageKind.ImuSample: (ImuSample, encode_imu_sample, decode_imu_sample),
    MessageKind.ImageHeader: (ImageHeader, encode_image_header, decode_image_header),
    MessageKind.EStop: (EStop, encode_estop, decode_estop),
    MessageKind.RuntimeStatus: (RuntimeStatus, encode_runtime_status, decode_runtime_status),
    MessageKind.VectorSample: (VectorSample, encode_vector_sample, decode_vector_sample),
    MessageKind.ArmRequest: (ArmRequest, encode_arm_request, decode_arm_request),
}


def encode(msg: Message) -> bytes:
    """Encodes any message type."""
    for cls, enc, _ in _CODECS.values():
        if isinstance(msg, cls):
            return enc(msg)
    raise TypeError(f"not a coxswain message: {type(msg).__name__}")


def decode(data: bytes) -> Message:
    """Decodes whatever message the kind byte names."""
    decoder: Callable[[bytes], Message] = _CODECS[peek_kind(data)][2]
    return decoder(data)

