"""The daemon as its own process: SIGKILL mid-session + restart, SIGTERM, --check.

The treadmill is ``treadctl sim --listen tcp://...`` in a separate process, so the belt
outlives the daemon exactly like real hardware would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe

from treadctl.store.db import SessionStore, default_db_path

PY = sys.executable
TID = "lane-1"
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NOTIFY_SOCKET", None)
    return env


@pytest.fixture
async def tcp_sim() -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "treadctl.cli", "sim", "--listen", "tcp://127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, env=_env(), cwd=ROOT)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    assert line.startswith("tcp://"), line
    try:
        yield line
    finally:
        proc.kill()
        await proc.wait()


def _write_config(path: Path, broker: Any, device: str, data_dir: Path) -> Path:
    path.write_text(f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "proc-test"
keepalive_s = 5

[daemon]
data_dir = "{data_dir}"

[[treadmill]]
id = "{TID}"
device = "{device}"
profile = "treadctl-reference"
""")
    return path


async def _start_daemon(config: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PY, "-m", "treadctl.cli", "daemon", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"), env=_env(), cwd=ROOT)


async def test_sigkill_mid_session_then_restart(mosquitto: Any, tcp_sim: str, tmp_path: Path
                                                ) -> None:
    data_dir = tmp_path / "data"
    config = _write_config(tmp_path / "daemon.toml", mosquitto, tcp_sim, data_dir)
    log = tmp_path / "daemon.log"
    async with Probe(mosquitto.port) as probe:
        first = await _start_daemon(config, log)
        try:
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                                 and m.text == "online", 20, what="online")
            reply = await probe.command(TID, "start", {"program": WALK}, within_s=15)
            assert reply["type"] == "ack", reply
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry"
                                 and m.json["speed_kmh"] > 1.5, 20, what="belt moving")
            # Let the recorder's writer flush at least one batch (it batches ~1 s).
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry"
                                 and m.json["elapsed_s"] > 2.5, 20, what="2.5 s recorded")
            session_id = reply["session_id"]
            mark = probe.mark()
            first.kill()  # SIGKILL mid-session
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
        # The broker publishes the Last Will.
        await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                             and m.text == "offline", 20, since=mark, what="last will")

        mark = probe.mark()
        second = await _start_daemon(config, log)
        try:
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                                 and m.text == "online", 20, since=mark, what="online again")
            st = await probe.state(TID, lambda s: s["state"] == "idle", since=mark, within_s=20)
            assert st["session_id"] is None and st["target_speed_kmh"] == 0
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry"
                                 and m.json["speed_kmh"] == 0, 20, since=mark, what="belt at 0")
            # Nothing moves afterwards unless asked.
            moving = [m for m in probe.messages[mark:] if m.topic.endswith("/telemetry")
                      and m.json["speed_kmh"] > 0.05 and m.json["elapsed_s"] > 0]
            assert not moving
            with SessionStore(default_db_path(data_dir)) as store:
                info = store.get_session(session_id)  # recorded by the daemon itself
                assert str(info.outcome) == "aborted", info
                assert info.treadmill_id == TID
                samples = store.samples(info.id)
                assert samples, "its samples are kept"
                assert max(s.speed_kmh for s in samples) > 1.0, "data of the moving belt"
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0, log.read_text()[-2000:]


async def test_sigterm_controlled_stop_offline_exit_0(mosquitto: Any, tcp_sim: str,
                                                      tmp_path: Path) -> None:
    config = _write_config(tmp_path / "daemon.toml", mosquitto, tcp_sim, tmp_path / "data")
    log = tmp_path / "daemon.log"
    async with Probe(mosquitto.port) as probe:
        proc = await _start_daemon(config, log)
        try:
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                                 and m.text == "online", 20, what="online")
            reply = await probe.command(TID, "start", {"program": WALK}, within_s=15)
            assert reply["type"] == "ack", reply
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry"
                                 and m.json["speed_kmh"] > 1.5, 20, what="belt moving")
            mark = probe.mark()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-2000:]
        finally:
            if proc.returncode is None:
                proc.kill()
        fin = await probe.event(TID, "finished", since=mark)
        assert fin["outcome"] == "stopped"
        # idle is published after the controller measured standstill
        await probe.state(TID, lambda s: s["state"] == "idle" and s["speed_kmh"] <= 0.05,
                          since=mark, within_s=5)
        await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                             and m.text == "offline", 10, since=mark, what="offline")


def test_check_and_config_errors(tmp_path: Path) -> None:
    good = _write_config(tmp_path / "good.toml", type("B", (), {"port": 1883})(),
                         "sim://", tmp_path)
    out = subprocess.run([PY, "-m", "treadctl.cli", "daemon", "--config", str(good), "--check"],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("port = 1883", "port = 99999"))
    out = subprocess.run([PY, "-m", "treadctl.cli", "daemon", "--config", str(bad), "--check"],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "[mqtt].port" in out.stderr, out.stderr
    out = subprocess.run([PY, "-m", "treadctl.cli", "daemon", "--config",
                          str(tmp_path / "missing.toml")],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 2 and "cannot read" in out.stderr
