"""The MQTT contract (docs/mqtt.md) end to end: a real mosquitto, the daemon in this loop,
the belt's ground truth from the in-process simulator."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe, make_config, response_properties, running_daemon, until

from treadctl.daemon import mqtt
from treadctl.daemon.service import Daemon

TID = "lane-1"


def truth(daemon: Daemon, tid: str = TID) -> Any:
    ctrl = daemon.lanes[tid].controller
    assert ctrl is not None
    return ctrl.transport.sim.truth()  # type: ignore[attr-defined]


async def start_walk(probe: Probe, daemon: Daemon, tid: str = TID) -> dict[str, Any]:
    reply = await probe.command(tid, "start", {"program": WALK})
    assert reply["type"] == "ack", reply
    await until(lambda: truth(daemon, tid).speed_kmh > 1.0, 15, "belt moving")
    return reply


async def test_status_state_and_full_session_cycle(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status" and m.text == "online",
                             what="online")
        st = await probe.state(TID, lambda s: s["state"] == "idle")
        assert set(st) >= {"state", "latched", "reason", "program", "segment", "direction",
                           "target_speed_kmh", "speed_kmh", "incline_pct", "session_id", "ts"}
        assert st["ts"].endswith("Z")

        mark = probe.mark()
        ack = await start_walk(probe, daemon)
        assert ack["command"] == "start" and ack["session_id"]
        await probe.state(TID, lambda s: s["state"] == "running", since=mark)
        tel = await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/telemetry"
                                   and m.json["speed_kmh"] > 0.5, since=mark, what="telemetry")
        assert set(tel.json) - {"link"} == {"ts", "speed_kmh", "direction", "incline_pct",
                                            "distance_m", "elapsed_s", "hr_bpm", "hr_source",
                                            "hr_quality", "hr_zone_bpm"}
        # Link counters: in the retained state, and in telemetry at a low rate.
        assert st["link"]["frames_received"] > 0 and st["link"]["dropped"] == 0, st
        with_link = [m.json["link"] for m in probe.messages if m.topic.endswith("/telemetry")
                     and "link" in m.json]
        assert with_link and with_link[0]["frames_sent"] > 0
        assert not tel.retain
        await probe.event(TID, "segment", since=mark)

        # heartbeat and set (inside limits)
        assert (await probe.command(TID, "heartbeat"))["type"] == "ack"
        reply = await probe.command(TID, "set", {"speed_kmh": 4.0, "incline_pct": 1.0})
        assert reply["type"] == "ack", reply
        await until(lambda: truth(daemon).speed_kmh > 3.6, 10, "belt at 4 km/h")

        # pause: the belt comes to a standstill; resume: it runs again
        assert (await probe.command(TID, "pause"))["type"] == "ack"
        await probe.state(TID, lambda s: s["state"] == "paused", since=mark, within_s=15)
        assert abs(truth(daemon).speed_kmh) < 0.05
        assert (await probe.command(TID, "resume"))["type"] == "ack"
        await probe.state(TID, lambda s: s["state"] == "running", since=probe.mark() - 1,
                          within_s=15)
        await until(lambda: truth(daemon).speed_kmh > 1.0, 15, "belt moving again")

        # controlled stop: the session finishes as stopped, the belt at 0, state idle
        mark = probe.mark()
        assert (await probe.command(TID, "stop"))["type"] == "ack"
        fin = await probe.event(TID, "finished", since=mark, within_s=20)
        assert fin["outcome"] == "stopped"
        await probe.state(TID, lambda s: s["state"] == "idle", since=mark)
        assert abs(truth(daemon).speed_kmh) < 0.05
        # The session was recorded in the daemon's store; the event carries its summary.
        summary = fin["summary"]
        assert isinstance(summary, dict) and summary, fin
        assert fin["session_id"] == ack["session_id"]
        store = daemon.store
        assert store is not None
        info = store.get_session(ack["session_id"])
        assert str(info.outcome) == "stopped" and info.treadmill_id == TID
        assert store.samples(info.id)


async def test_estop_latches_and_reset_never_moves(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        await start_walk(probe, daemon)
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/estop", {"reason": "test", "request_id": "e1"})
        ack = await probe.reply(TID, "e1", since=mark)
        assert ack["type"] == "ack" and ack["reason"] == "test"
        st = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        assert st["latched"] is True and "remote-estop" in st["reason"]
        await probe.event(TID, "estop", since=mark)
        await until(lambda: abs(truth(daemon).speed_kmh) < 0.05, 10, "belt stopped")
        await probe.event(TID, "finished", since=mark)
        await probe.event(TID, "stopped", since=mark)

        # latched: start is refused, nothing moves
        reply = await probe.command(TID, "start", {"program": WALK})
        assert reply["type"] == "error" and "latched" in reply["error"]
        # reset needs a reason; then clears the latch without moving the belt
        reply = await probe.command(TID, "reset", {})
        assert reply["type"] == "error" and "reason" in reply["error"]
        writes = len(truth_sim(daemon).wire_log)
        mark = probe.mark()
        reply = await probe.command(TID, "reset", {"reason": "checked the runner"})
        assert reply["type"] == "ack", reply
        await probe.state(TID, lambda s: s["state"] == "idle" and not s["latched"], since=mark)
        assert truth(daemon).speed_kmh == 0 and not truth(daemon).running
        assert not any(v[:1] in (b"\x02", b"\x07") for _, _, v in
                       truth_sim(daemon).wire_log[writes:]), "reset sent speed/start"
        # and a new start works again
        await start_walk(probe, daemon)


def truth_sim(daemon: Daemon) -> Any:
    ctrl = daemon.lanes[TID].controller
    assert ctrl is not None
    return ctrl.transport.sim  # type: ignore[attr-defined]


async def test_estop_any_payload_stops(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 100})
    payloads = [b"", b"\xff\xfe garbage {", b"x" * 200_000, b"[1,2,3]", b'{"reason": 5}']
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        for payload in payloads:
            await start_walk(probe, daemon)
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/estop", payload)
            await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
            ack = await probe.event(TID, "ack", since=mark)
            assert ack["command"] == "estop"
            await until(lambda: abs(truth(daemon).speed_kmh) < 0.05, 10, "belt stopped")
            fin = await probe.event(TID, "finished", since=mark)
            assert fin["outcome"] == "estopped"
            await probe.event(TID, "stopped", since=mark)  # measured standstill
            reply = await probe.command(TID, "reset", {"reason": "ok"})
            assert reply["type"] == "ack", reply


async def test_response_topic_and_correlation_data(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port, filters=("treadctl/#", "replies/#")) as probe, \
            running_daemon(config):
        props = response_properties("replies/tablet-7", b"\x01corr-42")
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/heartbeat", {"request_id": "hb"},
                         properties=props)
        resp = await probe.wait_for(lambda m: m.topic == "replies/tablet-7", since=mark,
                                    what="response")
        assert resp.json["type"] == "ack" and resp.json["request_id"] == "hb"
        assert resp.properties.CorrelationData == b"\x01corr-42"
        # an error goes to the response topic as well
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/pause", {"request_id": "p"}, properties=props)
        resp = await probe.wait_for(lambda m: m.topic == "replies/tablet-7", since=mark,
                                    what="error response")
        assert resp.json["type"] == "error" and resp.json["request_id"] == "p"
        # exactly one event for each command
        await asyncio.sleep(0)
        events = [m for m in probe.messages if m.topic == f"treadctl/{TID}/event"
                  and m.json.get("request_id") in ("hb", "p")]
        assert len(events) == 2


async def test_startup_stop_first_ready_watchdog_stopping(mosquitto: Any, tmp_path: Path
                                                          ) -> None:
    config = make_config(mosquitto, tmp_path, ["a", "b"])
    sent: list[str] = []

    def notify(state: str) -> bool:
        sent.append(state)
        return True

    async with running_daemon(config, notify=notify, watchdog_interval_s=0.2) as daemon:
        assert "READY=1" in sent
        for tid in ("a", "b"):
            sim = daemon.lanes[tid].controller.transport.sim  # type: ignore[union-attr]
            control_point = [v for _, uuid, v in sim.wire_log if uuid == 0x2AD9]
            # Request Control (0x00) may precede it; the first real command is Stop (0x08 01).
            first = next(v for v in control_point if v[0] != 0x00)
            assert first[:2] == b"\x08\x01", control_point
        await until(lambda: sent.count("WATCHDOG=1") >= 2, 5, "watchdog pings")
        assert sent.index("READY=1") < sent.index("WATCHDOG=1")
    assert "STOPPING=1" in sent


async def test_corrupted_frames_are_counted_and_logged(mosquitto: Any, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Noise on the link (simulator fault ``garbage``): frames dropped, never acted on,
    counted in ``state``/telemetry ``link`` and logged as a warning."""
    config = make_config(mosquitto, tmp_path, devices={TID: "sim://?seed=3&faults=garbage@0.5"})
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        lane = daemon.lanes[TID]
        await until(lambda: lane.link.get("dropped", 0) > 0, 15, "dropped frames counted")
        assert any("corrupted frame" in r.getMessage() and r.levelno == logging.WARNING
                   for r in caplog.records)
        # Any state change publishes the counters (an e-stop here: with noise on the link a
        # session would rightly trip on a timed-out command).
        await probe.send(f"treadctl/{TID}/cmd/estop", b"")
        st = await probe.state(TID, lambda s: s["state"] == "estopped"
                               and s.get("link", {}).get("dropped", 0) > 0)
        assert st["link"]["crc_errors"] + st["link"]["cobs_errors"] + \
            st["link"]["length_errors"] > 0


async def test_mqtt_sockets_have_nagle_off(mosquitto: Any, tmp_path: Path) -> None:
    """paho leaves Nagle on: a small packet (an e-stop ack, a state message) written while
    an earlier one is unacknowledged would wait ~40 ms for the broker's delayed ACK."""
    import socket

    async with running_daemon(make_config(mosquitto, tmp_path, [TID, "lane-2"])) as daemon:
        clients = [lane.client for lane in daemon.lanes.values()] + [daemon.estop_link.client]
        assert len(clients) == 3 and None not in clients
        for client in clients:
            assert client is not None
            sock = mqtt.raw_socket(client)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
