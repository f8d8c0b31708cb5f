"""Fixtures of the native-driver tests (helpers in helpers.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Lets the test modules here import ``helpers`` (importlib import mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import SimProcess, start_sims, stop_sims


@pytest.fixture
def sim_process() -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(profile: str, faults: str = "", transport: str | None = None,
              speedup: float | None = None) -> SimProcess:
        sp = start_sims([(profile, faults)], transport, speedup)[0]
        started.append(sp)
        return sp

    yield start
    stop_sims(started)


@pytest.fixture
def sim_processes() -> Iterator[Callable[..., list[SimProcess]]]:
    """Several simulator processes at once: ``start([(profile, faults), ...])``."""
    started: list[SimProcess] = []

    def start(specs: list[tuple[str, str]], speedup: float | None = None) -> list[SimProcess]:
        sims = start_sims(specs, speedup=speedup)
        started.extend(sims)
        return sims

    yield start
    stop_sims(started)
