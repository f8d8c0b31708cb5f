"""Shared helpers for the transport tests.

The tests run with ``--import-mode=importlib`` (no package), so the radio-less bleak
stand-in is loaded here by path and registered as the module ``fake_bleak``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("fake_bleak")
