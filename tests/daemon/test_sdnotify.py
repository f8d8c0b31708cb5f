"""sd_notify over a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from treadctl.daemon import sdnotify


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket in tmp_path exported as $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5.0)  # only a guard against a hang: datagrams are already queued
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


def test_not_under_systemd_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False


@pytest.mark.parametrize("value", ["", "relative/notify.sock", "vsock:2:1234"])
def test_unusable_socket_values_return_false(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_missing_socket_file_returns_false_without_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert sdnotify.watchdog() is False


def test_notify_sends_one_datagram(listener: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=hello") is True
    assert _received(listener) == "READY=1\nSTATUS=hello"


def test_helpers_send_the_documented_assignments(listener: socket.socket) -> None:
    assert sdnotify.ready()
    assert _received(listener) == "READY=1"
    assert sdnotify.ready("2 treadmills, broker connected")
    assert _received(listener) == "READY=1\nSTATUS=2 treadmills, broker connected"
    assert sdnotify.status("lane-1: running")
    assert _received(listener) == "STATUS=lane-1: running"
    assert sdnotify.watchdog()
    assert _received(listener) == "WATCHDOG=1"
    assert sdnotify.stopping()
    assert _received(listener) == "STOPPING=1"
    assert sdnotify.extend_timeout(12.5)
    assert _received(listener) == "EXTEND_TIMEOUT_USEC=12500000"


def test_status_text_stays_on_one_line(listener: socket.socket) -> None:
    # A newline would smuggle a second assignment (e.g. READY=1) into the datagram.
    assert sdnotify.status("bad\nREADY=1")
    assert _received(listener) == "STATUS=bad READY=1"


def test_utf8_status(listener: socket.socket) -> None:
    assert sdnotify.status("Laufband 1: rückwärts")
    assert _received(listener) == "STATUS=Laufband 1: rückwärts"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"treadctl-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.watchdog() is True
        assert _received(sock) == "WATCHDOG=1"


def test_child_process_notifies_the_socket(listener: socket.socket) -> None:
    # The daemon runs as its own process under systemd: the environment variable
    # alone must be enough, no state shared with the parent.
    code = "from treadctl.daemon import sdnotify as n\nraise SystemExit(0 if n.ready('up') else 1)"
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), timeout=60)
    assert result.returncode == 0
    assert _received(listener) == "READY=1\nSTATUS=up"


def test_watchdog_interval_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval_s() is None


def test_watchdog_interval_for_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == pytest.approx(10.0)


def test_watchdog_interval_without_pid_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2500000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval_s() == pytest.approx(2.5)


def test_watchdog_interval_meant_for_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None


@pytest.mark.parametrize(
    ("usec", "pid"), [("0", None), ("-5", None), ("ten", None), ("", None), ("1000", "me")]
)
def test_watchdog_interval_malformed(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert sdnotify.watchdog_interval_s() is None
