"""Cold start of the command line: ``python -m treadctl --help`` in a new interpreter.

Reported (median wall time of fresh processes, this machine, same run):

* ``treadctl --help`` — target <= 150 ms (issue: a Pi is ~4x slower than this machine);
* ``treadctl run --help`` (imports the controller: what a session start pays);
* baseline ``python -c pass`` (the interpreter alone);
* baseline "every command module imported" (what --help cost while the parser imported
  every command group to build itself; ``ratio`` = that / the lazy --help).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

TARGET_MS = 150.0


def _median_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs = 5 if quick else 15
    py = sys.executable
    bare = _median_ms([py, "-c", "pass"], runs)
    eager = _median_ms([py, "-c", "from treadctl.cli import build_parser; build_parser()"], runs)
    lazy = _median_ms([py, "-m", "treadctl", "--help"], runs)
    run_help = _median_ms([py, "-m", "treadctl", "run", "--help"], runs)
    return [
        {"name": "cli_help_cold_ms", "value": round(lazy, 1), "unit": "ms",
         "baseline": round(eager, 1), "ratio": round(eager / lazy, 2), "target": TARGET_MS,
         "met": lazy <= TARGET_MS,
         "note": f"median of {runs}; baseline: every command module imported"},
        {"name": "cli_run_help_cold_ms", "value": round(run_help, 1), "unit": "ms",
         "baseline": round(bare, 1), "note": "baseline: `python -c pass`"},
        {"name": "python_bare_start_ms", "value": round(bare, 1), "unit": "ms"},
    ]  # fmt: skip
