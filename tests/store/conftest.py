from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers next to the tests import as plain modules whatever the package layout of tests/.
sys.path.insert(0, str(Path(__file__).parent))

from treadctl.store.db import SessionStore

import store_synth as synth


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "sessions.db")
    yield s
    s.close()


@pytest.fixture
def recorded(store: SessionStore) -> str:
    """Id of the synthetic reverse-walk session (ends in a remote e-stop)."""
    return str(synth.record(store))
