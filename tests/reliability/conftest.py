"""Reliability tests import the ``fuzz`` package (targets and oracles) from the repo root,
which the editable install does not put on ``sys.path``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
