"""Locked-down MQTT (issue 7 item 4) against a real mosquitto with TLS, passwords and the
documented ACL (``docs/examples/mosquitto/treadctl.acl``), plus a command flood.

* a client without write access to ``cmd/`` cannot move a belt: the broker drops its
  ``cmd/start``; the simulated belt stays at 0 and the daemon never sees the command;
* a read-only client receives telemetry;
* the MQTT password never appears in any log record, even at DEBUG (paho included);
* a flood of 2,000 ``cmd/set`` to one treadmill: an e-stop still stops the belt at once and
  telemetry keeps flowing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import ssl
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe, make_config, mosquitto_passwd, running_daemon, until

from treadctl.daemon.service import Daemon

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "docs" / "examples" / "mosquitto" / "treadctl.acl"
TID = "lane-1"
PASSWORDS = {
    "treadctl-daemon": "d43mon-S3cret-pw",
    "gym-backend": "backend-pw",
    "viewer": "viewer-pw",
}


def truth(daemon: Daemon) -> Any:
    ctrl = daemon.lanes[TID].controller
    assert ctrl is not None
    return ctrl.transport.sim.truth()  # type: ignore[attr-defined]


async def test_acl_read_only_client_cannot_move_a_belt_but_sees_telemetry(
        mosquitto_factory: Any, pki: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not installed")
    caplog.set_level(logging.DEBUG)  # everything, paho's and aiomqtt's loggers included
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, PASSWORDS)
    acl = tmp_path / "treadctl.acl"
    # The documented ACL, plus a read-only account (a gym display, say).
    acl.write_text(ACL.read_text() + "\nuser viewer\ntopic read treadctl/#\n")
    broker = mosquitto_factory(
        [f"password_file {pw}", "allow_anonymous false", f"acl_file {acl}"],
        listener_extra=[f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'server.crt'}",
                        f"keyfile {pki / 'server.key'}"])
    config = make_config(broker, tmp_path, mqtt={
        "username": "treadctl-daemon", "password": PASSWORDS["treadctl-daemon"],
        "tls": {"ca_file": str(pki / "ca.crt")}})
    assert PASSWORDS["treadctl-daemon"] not in repr(config)
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    async with running_daemon(config) as daemon, \
            Probe(broker.port, tls_context=ctx, username="viewer",
                  password=PASSWORDS["viewer"]) as viewer, \
            Probe(broker.port, tls_context=ctx, username="gym-backend",
                  password=PASSWORDS["gym-backend"]) as backend:
        # The read-only client sees the daemon's telemetry.
        tel = await viewer.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry",
                                    what="telemetry for the viewer")
        assert "speed_kmh" in tel.json
        # It has no write access: its start never reaches the daemon.
        mark = backend.mark()
        await viewer.send(f"treadctl/{TID}/cmd/start",
                          {"program": WALK, "request_id": "sneaky-start"})
        # The backend (write access) is heard; its reply comes after anything the broker
        # would have delivered from the viewer's earlier publish (one queue to the daemon).
        reply = await backend.command(TID, "heartbeat")
        assert reply["type"] == "ack", reply
        assert not [m for m in backend.messages[mark:] if m.topic.endswith("/event")
                    and json.loads(m.payload).get("request_id") == "sneaky-start"]
        sim = truth(daemon)
        assert sim.speed_kmh == 0 and not sim.running
        ctrl = daemon.lanes[TID].controller
        assert ctrl is not None and ctrl.snapshot.session_id is None
        # ...and the backend may start and e-stop (the ACL is not simply closed).
        reply = await backend.command(TID, "start", {"program": WALK})
        assert reply["type"] == "ack", reply
        await until(lambda: truth(daemon).speed_kmh > 0.5, 15, "belt moving")
        mark = backend.mark()
        # The gym-wide e-stop: the daemon's own subscriptions for it pass the ACL too.
        await backend.send("treadctl/all/cmd/estop", b"")
        await backend.state(TID, lambda s: s["state"] == "estopped", since=mark)
        # The documented ACL lets the daemon's dedicated e-stop connection subscribe: the
        # e-stop arrived there (not only on the backup path).
        await until(lambda: daemon.estop_link.handled >= 1, 5, "e-stop on its connection")
    assert not [r for r in caplog.records if "refused the subscription" in r.getMessage()]
    # Secrets never logged, at any level, by us or by the MQTT libraries.
    assert caplog.records, "nothing was logged at all?"
    for secret in PASSWORDS.values():
        assert secret not in caplog.text


async def test_flood_does_not_starve_estop_or_telemetry(mosquitto: Any, tmp_path: Path) -> None:
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto_pub not installed")
    config = make_config(mosquitto, tmp_path)  # default rate limit: 20 commands/s
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command(TID, "start", {"program": WALK})
        assert reply["type"] == "ack", reply
        await until(lambda: truth(daemon).speed_kmh > 1.0, 15, "belt moving")
        lane = daemon.lanes[TID]
        body = "".join(json.dumps({"speed_kmh": 2.0, "request_id": i}) + "\n"
                       for i in range(2000))
        flood = await asyncio.create_subprocess_exec(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1",
            "-t", f"treadctl/{TID}/cmd/set", "-l", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        assert flood.stdin is not None
        flood.stdin.write(body.encode())
        await flood.stdin.drain()
        flood.stdin.close()
        try:
            # In the middle of the flood: the daemon is busy rejecting it.
            await until(lambda: lane.stats["rate_limited"] > 200, 20, "flood under way")
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/estop", b"")
            ctrl = lane.controller
            assert ctrl is not None
            await until(lambda: ctrl.latch.latched, 2, "e-stop latched during the flood")
            await until(lambda: abs(truth(daemon).speed_kmh) < 0.05, 10, "belt stopped")
            # Telemetry keeps flowing while (and after) the flood is handled.
            for _ in range(3):
                seen = probe.mark()
                await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry",
                                     since=seen, within_s=5, what="telemetry during the flood")
            await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
            assert lane.stats["rate_limited"] > 0
            # Rate limiting kept (almost) all of the flood away from the controller.
            assert lane.stats["commands"] < 300
        finally:
            if flood.returncode is None:
                flood.kill()
            await flood.wait()
