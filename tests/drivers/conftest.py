"""Fixtures of the native-driver tests (helpers in helpers.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Lets the test modules here import ``helpers`` (importlib import mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import SimProcess, start_sim


@pytest.fixture
def sim_process() -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(profile: str, faults: str = "", transport: str | None = None) -> SimProcess:
        sp = start_sim(profile, faults, transport)
        started.append(sp)
        return sp

    yield start
    for sp in started:
        sp.proc.terminate()
        try:
            sp.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait(timeout=10)
