"""Run scripts/pyftms_crosscheck.py: our decoder and pyftms must agree on the same payloads.

pyftms needs Python >= 3.12; the test runs only where such a Python with pyftms is found
(``PYFTMS_PYTHON`` or /tmp/treadctl-pyftms, made by ``scripts/pyftms_crosscheck.py
--make-venv /tmp/treadctl-pyftms``) and says so when it skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "pyftms_crosscheck.py"
DEFAULT_VENV_PYTHON = "/tmp/treadctl-pyftms/bin/python"


def _pyftms_python() -> tuple[str | None, str]:
    candidates = [p for p in (os.environ.get("PYFTMS_PYTHON"), DEFAULT_VENV_PYTHON) if p]
    tried = []
    for cand in candidates:
        if not Path(cand).exists():
            tried.append(f"{cand} does not exist")
            continue
        probe = subprocess.run(
            [cand, "-c", "import pyftms"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return cand, ""
        tried.append(f"{cand} cannot import pyftms")
    return None, "; ".join(tried)


def test_pyftms_agrees_with_treadctl() -> None:
    python, why = _pyftms_python()
    if python is None:
        pytest.skip(
            "no Python >= 3.12 with pyftms found (" + why + "); create one with "
            "`scripts/pyftms_crosscheck.py --make-venv /tmp/treadctl-pyftms` or set PYFTMS_PYTHON"
        )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--python", python, "--json", "--random", "150"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["mismatches"] == []
    assert report["compared"] >= 150 + 10
    # Known differences are only the documented ones.
    for line in report["known"]:
        assert (
            "pyftms truncates" in line
            or "tolerant agrees with pyftms" in line
            or "flag bits 14-15 (reserved)" in line
        ), line
    # pyftms reads the step count (flag bit 13) of the CITYSPORTS captures as our tolerant
    # decoder does: an independent check of the layout.
    assert sum("cs-wp8" in line and "tolerant agrees" in line for line in report["known"]) >= 4
