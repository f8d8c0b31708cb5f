"""The ``hr`` fuzz target: the Heart Rate Measurement codec and the plausibility filter.

The input is one 0x2A37 value. Only ``HeartRateCodecError`` may escape the decoder; a value
that decodes must agree with an independent reading of the layout (heart rate, contact
bits, energy, RR-intervals), re-encode to the same bytes, render as JSON, and pass through
the plausibility filter (:mod:`treadctl.hr.filter`) without raising, coming out with a
quality of ``good``, ``unreliable`` or ``lost`` and a filtered HR inside the bounds. Every
input, decodable or not, also goes as raw bytes through the lane's supervisor
(:mod:`treadctl.hr.supervisor`) in a governed reverse segment: it must not raise, an
undecodable value is counted and ignored, the interlock only ever gets a ``good`` value,
and the governor's wanted speed stays inside the segment's limits.
"""

from __future__ import annotations

import json

from treadctl.hr.codec import (
    HeartRateCodecError,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
)
from treadctl.hr.filter import QUALITIES, HRFilter
from treadctl.hr.supervisor import HRSupervisor
from treadctl.programs.model import Segment
from treadctl.types import Direction

_SEGMENT = Segment(duration_s=600, speed_kmh=3.0, direction=Direction.REVERSE,
                   hr_zone_bpm=(100.0, 110.0), min_speed_kmh=2.0, max_speed_kmh=4.5)
_LIMITS = None  # effective limits of treadctl-reference, loaded on first use


def _supervised(data: bytes, decodes: bool) -> None:
    global _LIMITS
    if _LIMITS is None:
        from treadctl.limits import effective_limits
        from treadctl.profiles import load_profile

        _LIMITS = effective_limits(load_profile("treadctl-reference"))
    sup = HRSupervisor(strap_bound=True)
    sup.begin_segment(_SEGMENT, _LIMITS, 0.0)
    for k in range(1, 4):
        s = sup.strap(data, float(k))
        _check(s.interlock_bpm is None or s.quality == "good",
               f"interlock fed a {s.quality} reading")
        s = sup.tick(k + 0.5, 3.0, 0.0, Direction.REVERSE)
        w = s.wanted_speed_kmh
        _check(w is not None and 2.0 - 1e-9 <= w <= 4.5 + 1e-9, f"wanted speed {w}")
    _check(sup.bad_values == (0 if decodes else 3), f"bad_values {sup.bad_values}")

#: Where the seeds come from: the captured and hand-made vectors.
VECTORS = "tests/vectors/hr_vectors.json"


class HROracleError(AssertionError):
    """The HR oracle saw a result the documentation rules out."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise HROracleError(message)


def _reference(data: bytes) -> tuple[int, int, int | None, list[int]] | None:
    """An independent reading: (bpm, contact bits, energy, rr) or None when unreadable."""
    if not data:
        return None
    f = data[0]
    i = 1
    width = 2 if f & 1 else 1
    if len(data) < i + width:
        return None
    bpm = int.from_bytes(data[i : i + width], "little")
    i += width
    energy = None
    if f & 8:
        if len(data) < i + 2:
            return None
        energy = int.from_bytes(data[i : i + 2], "little")
        i += 2
    tail = data[i:]
    if (f & 16 and len(tail) % 2) or (not f & 16 and tail):
        return None
    rr = [int.from_bytes(tail[k : k + 2], "little") for k in range(0, len(tail), 2)]
    return bpm, (f >> 1) & 3, energy, rr


def fuzz_hr(data: bytes) -> None:
    ref = _reference(data)
    try:
        m = decode_heart_rate_measurement(data)
    except HeartRateCodecError:
        _check(ref is None, f"decoder refused {data.hex()} that the layout allows")
        _supervised(data, decodes=False)
        return
    _check(ref is not None, f"decoder accepted {data.hex()} that the layout rules out")
    assert ref is not None
    bpm, contact, energy, rr = ref
    _check(m.bpm == bpm and m.energy_expended_kj == energy and list(m.rr_intervals) == rr,
           f"decoded {m} disagrees with the reference {ref}")
    want = {0: "not-supported", 1: "not-supported", 2: "not-detected", 3: "detected"}[contact]
    _check(m.contact == want, f"contact {m.contact} for bits {contact:02b}")
    _check(encode_heart_rate_measurement(m) == data, f"{data.hex()} does not re-encode")
    json.dumps(m.to_jsonable())
    f = HRFilter()
    for k in range(3):
        r = f.update(m, now=float(k), workload_met=4.0)
        _check(r.quality in QUALITIES, f"quality {r.quality!r}")
        _check(r.bpm is None or f.cfg.min_bpm <= r.bpm <= f.cfg.max_bpm,
               f"filtered HR {r.bpm} outside the bounds")
        _check(r.bpm is None or r.quality != "lost", "a lost signal carries no HR")
    _supervised(data, decodes=True)


def hr_seeds() -> list[bytes]:
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / VECTORS).read_text())
    return [bytes.fromhex(v["hex"]) for v in doc["vectors"]]
