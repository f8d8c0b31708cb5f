"""FTMS codec benchmark: Treadmill Data decode throughput, ours vs pyftms in the same run.

pyftms needs Python >= 3.12 and treadctl runs on 3.11, so pyftms's side runs in a
subprocess under a Python that has it (``PYFTMS_PYTHON`` or /tmp/treadctl-pyftms, made by
``scripts/pyftms_crosscheck.py --make-venv /tmp/treadctl-pyftms``) and times
``get_serializer(TreadmillData).deserialize(payload)`` on the same payloads. Without it,
our number is reported with no baseline and a ``note`` saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadctl.ftms import decode_treadmill_data, encode_treadmill_data, is_stop

TARGET_RATIO = 5.0
_VENV_PYTHON = "/tmp/treadctl-pyftms/bin/python"

_VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "ftms_vectors.json"


def _payloads() -> list[str]:
    """The Treadmill Data vectors that decode with default quirks: real device payloads
    (Kettler, Horizon, Life Fitness) and hand-made ones, a realistic mix of flag sets."""
    vectors = json.loads(_VECTORS.read_text(encoding="utf-8"))["vectors"]
    return [
        v["hex"]
        for v in vectors
        if v["characteristic"] == "treadmill-data" and "expected" in v and not v.get("quirks")
    ]


PAYLOADS_HEX = _payloads()
PAYLOADS = [bytes.fromhex(h) for h in PAYLOADS_HEX]

# Runs under pyftms's Python: same timing loop as ours, prints decodes/s.
_PYFTMS_TIMER = r"""
import json, sys, time
from pyftms.models import TreadmillData
from pyftms.serializer import get_serializer
payloads = [bytes.fromhex(h) for h in json.loads(sys.argv[1])]
seconds = float(sys.argv[2])
deserialize = get_serializer(TreadmillData).deserialize
for p in payloads:
    deserialize(p)
best = 0.0
for _ in range(3):
    n = 0
    start = time.perf_counter()
    while True:
        for p in payloads:
            deserialize(p)
        n += len(payloads)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    best = max(best, n / elapsed)
print(json.dumps({"decodes_per_s": best, "python": sys.version.split()[0]}))
"""


def _rate(fn: Callable[[Any], object], items: list[Any], seconds: float) -> float:
    """Best of three: calls per second of ``fn`` over ``items`` for about ``seconds`` each."""
    for item in items:
        fn(item)  # warm caches (the per-flags decoders are generated on first use)
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        while True:
            for item in items:
                fn(item)
            n += len(items)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, n / elapsed)
    return best


def _pyftms_python() -> str | None:
    for cand in (os.environ.get("PYFTMS_PYTHON"), _VENV_PYTHON):
        if cand and Path(cand).exists():
            return cand
    return None


def _pyftms_rate(seconds: float) -> tuple[float | None, str]:
    python = _pyftms_python()
    if python is None:
        return None, (
            "pyftms baseline unavailable: no Python >= 3.12 with pyftms (set PYFTMS_PYTHON or run"
            " scripts/pyftms_crosscheck.py --make-venv /tmp/treadctl-pyftms)"
        )
    proc = subprocess.run(
        [python, "-c", _PYFTMS_TIMER, json.dumps(PAYLOADS_HEX), str(seconds)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pyftms baseline unavailable: {python} failed: {last}"
    result = json.loads(proc.stdout)
    return float(result["decodes_per_s"]), (
        f"pyftms {python} (Python {result['python']}) in a subprocess, same payloads"
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 0.05 if quick else 0.5
    ours = _rate(decode_treadmill_data, PAYLOADS, seconds)
    theirs, note = _pyftms_rate(seconds)
    decode: dict[str, Any] = {
        "name": "ftms.treadmill_data.decode",
        "value": round(ours),
        "unit": "decodes/s",
        "note": note,
    }
    if theirs:
        ratio = ours / theirs
        decode.update(
            baseline=round(theirs),
            ratio=round(ratio, 2),
            target=TARGET_RATIO,
            met=ratio >= TARGET_RATIO,
        )
    decoded = [decode_treadmill_data(p) for p in PAYLOADS]
    encode = {
        "name": "ftms.treadmill_data.encode",
        "value": round(_rate(encode_treadmill_data, decoded, seconds)),
        "unit": "encodes/s",
    }
    writes = [b"\x08\x01", b"\x08\x02", b"\x02\xf4\x01", b"\x07"]
    stop = {
        "name": "ftms.control_point.is_stop",
        "value": round(_rate(is_stop, writes, seconds)),
        "unit": "checks/s",
    }
    return [decode, encode, stop]


if __name__ == "__main__":
    for result in run():
        print(json.dumps(result))
