"""What the daemon's and the dashboard's systemd unit tests share: reading a unit file
(:func:`unit_directives`), and running Python under the kernel's MemoryDenyWriteExecute
rule (what a unit's ``MemoryDenyWriteExecute=yes`` enforces): Linux >= 6.3 offers it per
process with ``prctl(PR_SET_MDWE)``, so a unit's real dependency stack can be exercised
under it here (:func:`run_under_mdwe`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (systemd allows repeated keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


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
