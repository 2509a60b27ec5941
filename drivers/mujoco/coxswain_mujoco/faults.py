"""Fault text, as `coxswain-sim` takes it (drivers/sim/src/faults.rs), plus transport latency.

Given at start (`--faults "..."`) or at run time as text on `robot/<id>/sim/faults`. Words are `key=value`; a
text replaces all faults (keys not given are off); `clear` (or an empty text) turns everything off.

| key | effect |
|---|---|
| `drop=P` | each joint-state message is lost with probability P |
| `delay_ms=D` | each joint-state message leaves D ms late (0..10000) |
| `freeze=1` | the published positions stop changing (a stuck encoder); sequence numbers still advance |
| `nan=1` | positions are NaN |
| `garbage=P` | a joint-state message is replaced by random bytes with probability P |
| `reorder=1` | consecutive joint-state messages leave in swapped pairs |
| `silence=1` | no joint state is published (a dead driver) |
| `state_latency_ms=D` | joint state leaves D ms after it was sampled (a slow link), 0..10000 |
| `state_jitter_ms=J` | plus a uniform 0..J ms more per message (seeded); order is kept, as on a TCP link |
| `command_latency_ms=D` | a command takes effect D ms after it arrives, 0..10000 |
| `command_jitter_ms=J` | plus a uniform 0..J ms more per command (seeded); order is kept |
| `clear` | all off |

Flags take 1/true/on and 0/false/off. A bad word is a `FaultError` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

_MAX_MS = 10_000.0


class FaultError(ValueError):
    """Fault text that does not parse; the message names the word."""


@dataclass
class Faults:
    drop_probability: float = 0.0
    delay_ms: float = 0.0
    freeze: bool = False
    nan: bool = False
    garbage_probability: float = 0.0
    reorder: bool = False
    silence: bool = False
    state_latency_ms: float = 0.0
    state_jitter_ms: float = 0.0
    command_latency_ms: float = 0.0
    command_jitter_ms: float = 0.0

    def any(self) -> bool:
        return self != Faults()

    def describe(self) -> str:
        words = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                words.append(f"{f.name}={v}")
        return " ".join(words) or "none"


_KEYS = "drop, delay_ms, freeze, nan, garbage, reorder, silence, state_latency_ms, state_jitter_ms, " \
        "command_latency_ms, command_jitter_ms, clear"


def parse(text: str) -> Faults:
    f = Faults()
    for word in text.split():
        if word == "clear":
            f = Faults()
            continue
        if "=" not in word:
            raise FaultError(f"`{word}`: expected key=value or clear")
        k, v = word.split("=", 1)

        def num() -> float:
            try:
                x = float(v)
            except ValueError:
                raise FaultError(f"`{word}`: `{v}` is not a number") from None
            if x != x:
                raise FaultError(f"`{word}`: `{v}` is not a number")
            return x

        def flag() -> bool:
            if v in ("1", "true", "on"):
                return True
            if v in ("0", "false", "off"):
                return False
            raise FaultError(f"`{word}`: `{v}` is not 0/1")

        def prob() -> float:
            p = num()
            if not 0.0 <= p <= 1.0:
                raise FaultError(f"`{word}`: a probability is between 0 and 1")
            return p

        def ms(what: str) -> float:
            d = num()
            if not 0.0 <= d <= _MAX_MS:
                raise FaultError(f"`{word}`: {what} must be 0..10000 ms")
            return d

        if k == "drop":
            f.drop_probability = prob()
        elif k == "delay_ms":
            f.delay_ms = ms("delay")
        elif k == "freeze":
            f.freeze = flag()
        elif k == "nan":
            f.nan = flag()
        elif k == "garbage":
            f.garbage_probability = prob()
        elif k == "reorder":
            f.reorder = flag()
        elif k == "silence":
            f.silence = flag()
        elif k == "state_latency_ms":
            f.state_latency_ms = ms("latency")
        elif k == "state_jitter_ms":
            f.state_jitter_ms = ms("jitter")
        elif k == "command_latency_ms":
            f.command_latency_ms = ms("latency")
        elif k == "command_jitter_ms":
            f.command_jitter_ms = ms("jitter")
        else:
            raise FaultError(f"unknown fault `{k}` ({_KEYS})")
    return f
