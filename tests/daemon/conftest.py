"""Loads ``helpers.py`` as the module ``daemon_helpers`` (tests run in importlib mode)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load(name: str, file: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("daemon_helpers", "helpers.py")
