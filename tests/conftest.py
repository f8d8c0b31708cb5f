"""Fixtures shared by every test directory: a real mosquitto broker on a free port.

``mosquitto`` is one plain broker (anonymous, 127.0.0.1) for a whole test module;
``mosquitto_factory(lines=[...])`` starts more with custom config lines (TLS, password
files, ...) and kills them at the end of the test. Tests that need the binary skip when
``/usr/sbin/mosquitto`` is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from soak.mosquitto import MOSQUITTO, Mosquitto

MosquittoFactory = Callable[..., Mosquitto]


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    if not (Path(MOSQUITTO).exists() or shutil.which("mosquitto")):
        pytest.skip("mosquitto binary not installed")
    return MOSQUITTO


@pytest.fixture(scope="module")
def mosquitto(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(mosquitto_bin: str, tmp_path: Path) -> Iterator[MosquittoFactory]:
    started: list[Mosquitto] = []

    def make(lines: list[str] | None = None, *, listener_extra: list[str] | None = None,
             start: bool = True) -> Mosquitto:
        broker = Mosquitto(tmp_path, lines, listener_extra=listener_extra)
        started.append(broker)
        return broker.start() if start else broker

    try:
        yield make
    finally:
        for broker in started:
            broker.stop()
