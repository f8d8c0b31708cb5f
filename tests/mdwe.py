"""Run Python under the kernel's MemoryDenyWriteExecute rule (what a systemd unit's
``MemoryDenyWriteExecute=yes`` enforces): Linux >= 6.3 offers it per process with
``prctl(PR_SET_MDWE)``, so a unit's real dependency stack can be exercised under it here.
Shared by the daemon's and the dashboard's unit tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_PREAMBLE = r"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit("W+X mapping was allowed: the check proves nothing")
"""


def run_under_mdwe(body: str, tmp_path: Path) -> None:
    """Run ``body`` (it gets ``sys.argv[1]``, a PNG path, and must print ``ok``) with W+X
    memory refused; skips where the kernel has no PR_SET_MDWE."""
    png = tmp_path / "plot.png"
    result = subprocess.run(
        [sys.executable, "-c", _PREAMBLE + body, str(png)],
        capture_output=True, text=True, timeout=120,
        env={"MPLCONFIGDIR": str(tmp_path / "mpl"), "PATH": "/usr/bin:/bin"},
    )
    if result.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert png.stat().st_size > 0
