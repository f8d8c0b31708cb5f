"""The ``hr`` fuzz target: the Heart Rate Measurement codec and the plausibility filter.

The input is one 0x2A37 value. Only ``HeartRateCodecError`` may escape the decoder; a value
that decodes must agree with an independent reading of the layout (heart rate, contact
bits, energy, RR-intervals), re-encode to the same bytes, render as JSON, and pass through
the plausibility filter (:mod:`treadctl.hr.filter`) without raising, coming out with a
quality of ``good``, ``unreliable`` or ``lost`` and a filtered HR inside the bounds.
"""

from __future__ import annotations

import json

from treadctl.hr.codec import (
    HeartRateCodecError,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
)
from treadctl.hr.filter import QUALITIES, HRFilter

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


def hr_seeds() -> list[bytes]:
    from pathlib import Path

    doc = json.loads((Path(__file__).resolve().parents[1] / VECTORS).read_text())
    return [bytes.fromhex(v["hex"]) for v in doc["vectors"]]
