"""TLS (a throwaway CA made here with the openssl CLI) and password auth against a real
mosquitto configured for them."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import make_config, mosquitto_passwd, openssl, running_daemon

from treadctl.daemon.service import Daemon

import aiomqtt  # isort: skip

TID = "lane-1"


async def _online_and_estop(daemon: Daemon, client_kw: dict[str, Any], port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5,
                              **client_kw) as client:
        await client.subscribe(f"treadctl/{TID}/#", qos=1)
        await client.publish(f"treadctl/{TID}/cmd/estop", b"", qos=1)
        seen_online = seen_estopped = False
        async with asyncio_timeout(10):
            async for m in client.messages:
                if m.topic.value.endswith("/status") and m.payload == b"online":
                    seen_online = True
                if m.topic.value.endswith("/state") and b'"estopped"' in bytes(m.payload):
                    seen_estopped = True
                if seen_online and seen_estopped:
                    break
    ctrl = daemon.lanes[TID].controller
    assert ctrl is not None and ctrl.latch.latched


def asyncio_timeout(seconds: float) -> Any:
    import asyncio

    return asyncio.timeout(seconds)


async def test_tls_with_own_ca(mosquitto_factory: Any, pki: Path, tmp_path: Path) -> None:
    broker = mosquitto_factory(listener_extra=[
        f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'server.crt'}",
        f"keyfile {pki / 'server.key'}"])
    config = make_config(broker, tmp_path, mqtt={"tls": {"ca_file": str(pki / "ca.crt")}})
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    async with running_daemon(config) as daemon:
        await _online_and_estop(daemon, {"tls_context": ctx}, broker.port)


async def test_tls_refuses_unknown_ca(mosquitto_factory: Any, pki: Path, tmp_path: Path) -> None:
    broker = mosquitto_factory(listener_extra=[
        f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'server.crt'}",
        f"keyfile {pki / 'server.key'}"])
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", "o.key", "-out", "o.crt", "-subj", "/CN=other", cwd=other)
    config = make_config(broker, tmp_path, mqtt={"tls": {"ca_file": str(other / "o.crt")}})
    daemon = Daemon(config)
    import asyncio

    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(daemon.lanes[TID].broker_up.wait(), 2.5)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 20)


async def test_password_auth(mosquitto_factory: Any, tmp_path: Path) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, {"gym": "s3cret-pw"})
    broker = mosquitto_factory([f"password_file {pw}", "allow_anonymous false"])
    secret = tmp_path / "mqtt.secret"
    secret.write_text("s3cret-pw\n")
    config = make_config(broker, tmp_path,
                         mqtt={"username": "gym", "password_file": str(secret)})
    async with running_daemon(config) as daemon:
        await _online_and_estop(daemon, {"username": "gym", "password": "s3cret-pw"},
                                broker.port)

    # A wrong password never connects (and the daemon keeps retrying, without crashing).
    bad = make_config(broker, tmp_path, mqtt={"username": "gym", "password": "nope"})
    import asyncio

    daemon = Daemon(bad)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(daemon.lanes[TID].broker_up.wait(), 2.5)
        assert not task.done()
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 20)
