#!/usr/bin/env python3
"""Cross-check treadctl.ftms against pyftms (an independent FTMS decoder) on the same payloads.

pyftms needs Python >= 3.12 and treadctl runs on 3.11, so the two sides run in different
interpreters: this script (under treadctl's Python) decodes with treadctl, then runs itself
with ``--worker`` under a Python that has pyftms, which decodes the same hex payloads and
prints JSON. Payloads: every Treadmill Data vector in tests/vectors/ftms_vectors.json without
firmware quirks (pyftms has no pace-format or signed-speed option), plus ``--random N``
payloads encoded by treadctl from random field values.

    .venv/bin/python scripts/pyftms_crosscheck.py --make-venv /tmp/treadctl-pyftms
    .venv/bin/python scripts/pyftms_crosscheck.py --python /tmp/treadctl-pyftms/bin/python

Known, documented differences (not counted as mismatches):
- pyftms treats the all-ones value of EVERY field as "not available" (None); FTMS defines
  that only for inclination, ramp angle and the energy fields, so treadctl decodes e.g.
  uint16 0xffff elevation as 6553.5 m. Random payloads avoid all-ones values.
- pyftms decodes Treadmill Data flag bit 13 (Step Count, a later spec revision); treadctl
  follows FTMS 1.0, where bits 13-15 are reserved, and rejects it.
- pyftms (0.4.x) declares the elevation gains ``int`` although they are uint16 in 0.1 m,
  so it truncates 12.4 m to 12; treadctl keeps the 0.1 m resolution. Counted as known when
  pyftms's value is treadctl's truncated to an integer.

Exit status: 0 all compared payloads agree, 1 a mismatch, 2 pyftms unavailable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors" / "ftms_vectors.json"
DEFAULT_PYTHON_312 = "/root/.pyenv/versions/3.12.1/bin/python"

# pyftms TreadmillData field (after _asdict flattening) -> treadctl TreadmillData field.
FIELD_MAP = {
    "speed_instant": "speed_kmh",
    "speed_average": "average_speed_kmh",
    "distance_total": "total_distance_m",
    "inclination": "inclination_pct",
    "ramp_angle": "ramp_angle_deg",
    "elevation_gain_positive": "positive_elevation_gain_m",
    "elevation_gain_negative": "negative_elevation_gain_m",
    "pace_instant": "instantaneous_pace",
    "pace_average": "average_pace",
    "energy_total": "total_energy_kcal",
    "energy_per_hour": "energy_per_hour_kcal",
    "energy_per_minute": "energy_per_minute_kcal",
    "heart_rate": "heart_rate_bpm",
    "metabolic_equivalent": "metabolic_equivalent",
    "time_elapsed": "elapsed_time_s",
    "time_remaining": "remaining_time_s",
    "step_count": "step_count",
    "force_on_belt": "force_on_belt_n",
    "power_output": "power_output_w",
}


# --- worker side: runs under Python >= 3.12 with pyftms ------------------------------------


def worker() -> int:
    """Decode hex payloads from stdin (JSON list) with pyftms; print JSON results."""
    from pyftms.models import TreadmillData
    from pyftms.serializer import get_serializer

    serializer = get_serializer(TreadmillData)
    out: list[dict[str, Any]] = []
    for hexdata in json.load(sys.stdin):
        try:
            fields = serializer.deserialize(bytes.fromhex(hexdata))._asdict()
            out.append({"ok": True, "fields": fields})
        except Exception as exc:  # pyftms raises EOFError, AssertionError, ValueError, ...
            out.append({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    json.dump(out, sys.stdout)
    return 0


# --- treadctl side ---------------------------------------------------------------------------


def pyftms_python(explicit: str | None) -> str | None:
    """A Python that can import pyftms, or None."""
    candidates = [explicit, os.environ.get("PYFTMS_PYTHON"), "/tmp/treadctl-pyftms/bin/python"]
    for cand in candidates:
        if cand and Path(cand).exists() and _imports_pyftms(cand):
            return cand
    return None


def _imports_pyftms(python: str) -> bool:
    probe = subprocess.run(
        [python, "-c", "import pyftms"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def make_venv(path: Path, base_python: str) -> str:
    """Create a throwaway venv with pyftms (needs Python >= 3.12 and a package index)."""
    if not Path(base_python).exists():
        raise SystemExit(f"no Python >= 3.12 at {base_python}")
    subprocess.run([base_python, "-m", "venv", str(path)], check=True)
    python = str(path / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "pyftms"], check=True)
    return python


def vector_payloads() -> list[tuple[str, str]]:
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    return [
        (v["id"], v["hex"])
        for v in data["vectors"]
        if v["characteristic"] == "treadmill-data" and not v.get("quirks")
    ]


def random_payloads(n: int, seed: int) -> list[tuple[str, str]]:
    from treadctl.ftms import TreadmillData, encode_treadmill_data

    rng = random.Random(seed)

    def maybe(lo: int, hi: int, div: int = 1) -> float | int | None:
        if rng.random() < 0.4:
            return None
        value = rng.randint(lo, hi)  # never the all-ones "n/a" value of the field
        return value / div if div != 1 else value

    out = []
    for i in range(n):
        elevation = rng.random() < 0.5
        force = rng.random() < 0.5
        td = TreadmillData(
            speed_kmh=maybe(0, 0xFFFE, 100),
            average_speed_kmh=maybe(0, 0xFFFE, 100),
            total_distance_m=maybe(0, 0xFFFFFE),  # type: ignore[arg-type]
            inclination_pct=maybe(-0x8000, 0x7FFE, 10),
            ramp_angle_deg=maybe(-0x8000, 0x7FFE, 10),
            positive_elevation_gain_m=rng.randint(0, 0xFFFE) / 10 if elevation else None,
            negative_elevation_gain_m=rng.randint(0, 0xFFFE) / 10 if elevation else None,
            instantaneous_pace=maybe(0, 0xFE, 10),
            average_pace=maybe(0, 0xFE, 10),
            total_energy_kcal=maybe(0, 0xFFFE),  # type: ignore[arg-type]
            energy_per_hour_kcal=maybe(0, 0xFFFE),  # type: ignore[arg-type]
            energy_per_minute_kcal=maybe(0, 0xFE),  # type: ignore[arg-type]
            heart_rate_bpm=maybe(0, 0xFE),  # type: ignore[arg-type]
            metabolic_equivalent=maybe(0, 0xFE, 10),
            elapsed_time_s=maybe(0, 0xFFFE),  # type: ignore[arg-type]
            remaining_time_s=maybe(0, 0xFFFE),  # type: ignore[arg-type]
            force_on_belt_n=rng.randint(-0x8000, 0x7FFE) if force else None,
            power_output_w=rng.randint(-0x8000, 0x7FFE) if force else None,
        )
        out.append((f"random-{i}", encode_treadmill_data(td).hex()))
    return out


def ours(hexdata: str, strict: bool = True) -> dict[str, Any] | str:
    from treadctl.ftms import FTMSDecodeError, decode_treadmill_data, to_jsonable

    try:
        fields = to_jsonable(decode_treadmill_data(bytes.fromhex(hexdata), strict=strict))
    except FTMSDecodeError as exc:
        return f"FTMSDecodeError: {exc}"
    fields.pop("type")
    fields.pop("more_data")
    # How the record was read (docs/ftms.md): no pyftms counterpart.
    for meta in ("deviations", "missing", "not_available"):
        fields.pop(meta, None)
    return fields


_ELEVATION = ("positive_elevation_gain_m", "negative_elevation_gain_m")


def compare(ours_fields: dict[str, Any], theirs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(mismatches, known differences) between the two decodings of one payload."""
    problems: list[str] = []
    known: list[str] = []
    mapped = {}
    for key, value in theirs.items():
        if key not in FIELD_MAP:
            problems.append(f"pyftms field {key}={value!r} has no treadctl counterpart")
            continue
        mapped[FIELD_MAP[key]] = value
    for key in sorted(set(mapped) | set(ours_fields)):
        a, b = ours_fields.get(key), mapped.get(key)
        if a is None or b is None:
            if a != b:
                problems.append(f"{key}: treadctl {a!r} vs pyftms {b!r}")
        elif math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6):
            continue
        elif key in _ELEVATION and b == math.floor(a):
            known.append(f"{key}: pyftms truncates {a!r} to {b!r}")
        else:
            problems.append(f"{key}: treadctl {a!r} vs pyftms {b!r}")
    return problems, known


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--python", help="a Python >= 3.12 that has pyftms")
    parser.add_argument("--make-venv", metavar="DIR", help="create DIR with pyftms first")
    parser.add_argument("--base-python", default=DEFAULT_PYTHON_312)
    parser.add_argument("--random", type=int, default=200, metavar="N")
    parser.add_argument("--seed", type=int, default=1826)
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if args.worker:
        return worker()

    sys.path.insert(0, str(REPO))
    python = make_venv(Path(args.make_venv), args.base_python) if args.make_venv else None
    python = pyftms_python(python or args.python)
    if python is None:
        print(
            "pyftms_crosscheck: no Python with pyftms found (use --python or --make-venv)",
            file=sys.stderr,
        )
        return 2

    payloads = vector_payloads() + random_payloads(args.random, args.seed)
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--worker"],
        input=json.dumps([h for _, h in payloads]),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    theirs_all = json.loads(proc.stdout)
    report: dict[str, Any] = {
        "python": python,
        "compared": 0,
        "agree": 0,
        "known": [],
        "mismatches": [],
    }
    for (name, hexdata), theirs in zip(payloads, theirs_all, strict=True):
        report["compared"] += 1
        mine = ours(hexdata)
        flags = int.from_bytes(bytes.fromhex(hexdata)[:2], "little") if len(hexdata) >= 4 else 0
        if isinstance(mine, str) or not theirs["ok"]:
            if isinstance(mine, str) and not theirs["ok"]:
                report["agree"] += 1  # both reject the payload
            elif isinstance(mine, str) and flags & 0xC000:
                report["known"].append(
                    f"{name}: flag bits 14-15 (reserved): treadctl rejects, pyftms ignores them"
                )
            elif isinstance(mine, str) and flags & 0x2000:
                # Step count: the strict decoder refuses it; the tolerant one must agree.
                tolerant = ours(hexdata, strict=False)
                problems = (
                    [f"tolerant: {tolerant}"] if isinstance(tolerant, str)
                    else compare(tolerant, theirs["fields"])[0]
                )
                if problems:
                    report["mismatches"].append(f"{name} {hexdata}: " + "; ".join(problems))
                else:
                    report["known"].append(
                        f"{name}: flag bit 13 (step count): treadctl strict rejects, tolerant"
                        " agrees with pyftms"
                    )
            else:
                report["mismatches"].append(
                    f"{name} {hexdata}: treadctl {mine!r} / pyftms {theirs!r}"
                )
            continue
        problems, known = compare(mine, theirs["fields"])
        if problems:
            report["mismatches"].append(f"{name} {hexdata}: " + "; ".join(problems))
        elif known:
            report["known"].append(f"{name}: " + "; ".join(known))
        else:
            report["agree"] += 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"pyftms ({python}): {report['agree']}/{report['compared']} payloads agree, "
            f"{len(report['known'])} known differences, {len(report['mismatches'])} mismatches"
        )
        for line in report["known"][:5]:
            print("  known: " + line)
        if len(report["known"]) > 5:
            print(f"  known: ... {len(report['known']) - 5} more (--json lists all)")
        for line in report["mismatches"]:
            print("  MISMATCH: " + line)
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
