"""Loads ``stack.py`` as the module ``dash_stack`` (tests run in importlib mode); the
``gym`` fixture: mosquitto, ``treadctl daemon`` with three simulated lanes (two that can run
reverse, one forward-only) and ``treadctl dashboard`` reading the daemon's config."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _load(name: str, file: Path) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("dash_stack", Path(__file__).with_name("stack.py"))

from dash_stack import Dashboard, Proc, daemon_toml  # noqa: E402

LANES = [("lane-1", "treadctl-reference"), ("lane-2", "treadctl-reference"),
         ("lane-3", "generic-ftms")]


@dataclass
class Gym:
    broker: Any
    daemon: Proc
    dashboard: Dashboard
    data_dir: Path
    workdir: Path


@pytest.fixture
def gym(mosquitto_factory: Any, tmp_path: Path) -> Iterator[Gym]:
    broker = mosquitto_factory(["set_tcp_nodelay true"])
    data = tmp_path / "data"
    daemon_cfg = tmp_path / "daemon.toml"
    daemon_cfg.write_text(daemon_toml(broker.port, data, LANES, f"d-{uuid.uuid4().hex[:6]}"))
    daemon = Proc(["daemon", "--config", str(daemon_cfg)], tmp_path / "daemon.log")
    dash = Dashboard(tmp_path, broker.port, f'daemon_config = "{daemon_cfg}"')
    try:
        dash.wait_lanes(3)
        yield Gym(broker, daemon, dash, data, tmp_path)
    finally:
        dash.stop()
        daemon.stop()
