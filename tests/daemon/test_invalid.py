"""Invalid commands get exactly one error event and change nothing (docs/mqtt.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe, make_config, running_daemon, until

TID = "lane-1"

BAD: list[tuple[str, bytes, str]] = [
    ("start", b"{not json", "invalid JSON"),
    ("start", b'"walk"', "JSON object"),
    ("start", json.dumps({"program": "quick-demo", "colour": "red", "request_id": "r"}).encode(),
     "unknown field"),
    ("start", json.dumps({"program": 42, "request_id": "r"}).encode(), "must be a name"),
    ("start", json.dumps({"program": "/etc/passwd", "request_id": "r"}).encode(), "built-in"),
    ("start", json.dumps({"program": {"name": "x", "segments": [
        {"duration_s": 10, "speed_kmh": 25.0, "direction": "forward"}]},
        "request_id": "r"}).encode(), "speed"),
    ("set", json.dumps({"speed_kmh": "fast", "request_id": "r"}).encode(), "must be a number"),
    ("set", json.dumps({"speed_kmh": True, "request_id": "r"}).encode(), "must be a number"),
    ("set", json.dumps({"request_id": "r"}).encode(), "speed_kmh"),
    ("reset", json.dumps({"reason": "", "request_id": "r"}).encode(), "reason"),
    ("stop", json.dumps({"request_id": ["x"]}).encode(), "request_id"),
    ("stop", b"x" * 20_000, "too large"),
    ("fly", b"{}", "unknown command"),
]


@pytest.fixture
def config(mosquitto: Any, tmp_path: Path) -> Any:
    return make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 200})


async def test_bad_payloads_are_errors_and_change_nothing(config: Any, mosquitto: Any) -> None:
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        await probe.state(TID, lambda s: s["state"] == "idle")
        sim = daemon.lanes[TID].controller.transport.sim  # type: ignore[union-attr]
        writes = len(sim.wire_log)
        for cmd, payload, needle in BAD:
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/{cmd}", payload)
            ev = await probe.event(TID, "error", since=mark)
            assert needle in ev["error"], (cmd, payload[:60], ev)
            assert ev["command"] == cmd
            if b'"request_id": "r"' in payload:
                assert ev["request_id"] == "r"
        # nothing moved, nothing was written to the treadmill but keepalives
        assert sim.truth().speed_kmh == 0 and not sim.truth().running
        assert len(sim.wire_log) == writes
        states = [m.json["state"] for m in probe.messages if m.topic.endswith("/state")]
        assert set(states) == {"idle"}


async def test_wrong_state_and_out_of_range_set_change_nothing(config: Any, mosquitto: Any
                                                               ) -> None:
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        for cmd in ("pause", "resume", "set"):
            body = {"speed_kmh": 3.0} if cmd == "set" else {}
            reply = await probe.command(TID, cmd, body)
            assert reply["type"] == "error" and "cannot" in reply["error"], reply
        assert (await probe.command(TID, "start", {"program": WALK}))["type"] == "ack"
        ctrl = daemon.lanes[TID].controller
        assert ctrl is not None
        await until(lambda: ctrl.snapshot.state.value == "running", 15, "running")
        # a second start while running is refused
        assert (await probe.command(TID, "start", {"program": WALK}))["type"] == "error"
        target = ctrl.snapshot.target_speed_kmh
        for body in ({"speed_kmh": 30.0}, {"speed_kmh": 3.0, "incline_pct": 99.0},
                     {"speed_kmh": 3.05}, {"incline_pct": -5.0}):
            reply = await probe.command(TID, "set", body)
            assert reply["type"] == "error", (body, reply)
            assert ctrl.snapshot.target_speed_kmh == target  # rejected, not clamped
            assert ctrl.snapshot.target_incline_pct == 0.0
        assert (await probe.command(TID, "resume"))["type"] == "error"


async def test_flood_is_rate_limited_and_estop_still_immediate(mosquitto: Any, tmp_path: Path
                                                               ) -> None:
    config = make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 5})
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        assert (await probe.command(TID, "start", {"program": WALK}))["type"] == "ack"
        ctrl = daemon.lanes[TID].controller
        assert ctrl is not None
        await until(lambda: ctrl.snapshot.state.value == "running", 15, "running")
        mark = probe.mark()
        for i in range(200):
            await probe.send(f"treadctl/{TID}/cmd/heartbeat", {"request_id": f"f{i}"}, qos=0)
        await probe.send(f"treadctl/{TID}/cmd/estop", b"")
        await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        replies = await _replies(probe, mark, 200)
        limited = [r for r in replies if r["type"] == "error"]
        assert limited and all("rate limited" in r["error"] for r in limited)
        assert len(replies) == 200  # exactly one reply per command


async def _replies(probe: Probe, mark: int, n: int) -> list[dict[str, Any]]:
    def count() -> int:
        return len({m.json["request_id"] for m in probe.messages[mark:]
                    if m.topic.endswith("/event")
                    and str(m.json.get("request_id")).startswith("f")})

    await until(lambda: count() >= n, 15, "all replies")
    out: dict[str, dict[str, Any]] = {}
    for m in probe.messages[mark:]:
        if m.topic.endswith("/event") and str(m.json.get("request_id")).startswith("f"):
            assert m.json["request_id"] not in out, "two replies to one command"
            out[m.json["request_id"]] = m.json
    return list(out.values())


async def test_retained_command_is_not_replayed(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe:
        await probe.send(f"treadctl/{TID}/cmd/start", {"program": WALK, "request_id": "old"},
                         retain=True)
        try:
            async with running_daemon(config) as daemon:
                ev = await probe.reply(TID, None)  # retained replays are not parsed
                assert ev["type"] == "error" and "retained" in ev["error"]
                ctrl = daemon.lanes[TID].controller
                assert ctrl is not None and ctrl.snapshot.state.value == "idle"
        finally:
            await probe.send(f"treadctl/{TID}/cmd/start", b"", retain=True)  # clear it


async def test_stop_is_never_rate_limited_or_queued(mosquitto: Any, tmp_path: Path) -> None:
    """A flood of other commands has drained the bucket: cmd/stop still stops the belt."""
    config = make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 1})
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        assert (await probe.command(TID, "start", {"program": WALK}))["type"] == "ack"
        ctrl = daemon.lanes[TID].controller
        assert ctrl is not None
        await until(lambda: ctrl.transport.sim.truth().speed_kmh > 1.0, 15, "belt moving")
        mark = probe.mark()
        for i in range(20):
            await probe.send(f"treadctl/{TID}/cmd/heartbeat", {"request_id": f"f{i}"}, qos=0)
        await probe.send(f"treadctl/{TID}/cmd/stop", {"request_id": "halt"})
        replies = await _replies(probe, mark, 20)
        assert any("rate limited" in r.get("error", "") for r in replies)
        reply = await probe.event(TID, "ack", since=mark, request_id="halt")
        assert reply["command"] == "stop"
        await until(lambda: ctrl.transport.sim.truth().speed_kmh == 0.0, 30, "belt stopped")
        assert not ctrl.latch.latched  # a controlled stop, not an interlock


async def test_stop_drops_motion_commands_queued_before_it(mosquitto: Any, tmp_path: Path
                                                           ) -> None:
    """Commands queued before a stop were sent before it: they must not run after it."""
    from treadctl.daemon import bridge
    from treadctl.daemon.service import Queued

    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        lane = daemon.lanes[TID]
        mark = probe.mark()

        def cmd(kind: str, body: dict[str, Any]) -> Any:
            return Queued(bridge.parse_command(kind, json.dumps(body).encode(), 4096), None)

        # One synchronous step: the worker has not run, so both wait in the queue.
        lane.queue.put_nowait(cmd("start", {"program": WALK, "request_id": "early-start"}))
        lane.queue.put_nowait(cmd("heartbeat", {"request_id": "early-beat"}))
        lane.submit_stop(cmd("stop", {"request_id": "halt"}))

        dropped = await probe.event(TID, "error", since=mark, request_id="early-start")
        assert dropped["error"] == "superseded by stop"
        assert (await probe.event(TID, "ack", since=mark, request_id="early-beat"))
        assert (await probe.event(TID, "ack", since=mark, request_id="halt"))
        ctrl = lane.controller
        assert ctrl is not None
        assert ctrl.snapshot.state.value == "idle"
        assert ctrl.transport.sim.truth().speed_kmh == 0.0
        assert not any(w[1] == 0x2AD9 and w[2][:1] == b"\x07"  # no Start reached the firmware
                       for w in ctrl.transport.sim.wire_log)


async def test_stops_arriving_together_are_carried_out_once(mosquitto: Any, tmp_path: Path
                                                            ) -> None:
    """A cmd/stop flood is not a flood of Stop frames (a serial link is slow): the stops of
    one socket read run once, and every one of them is answered."""
    from treadctl.daemon import bridge
    from treadctl.daemon.service import Queued

    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        lane = daemon.lanes[TID]
        ctrl = lane.controller
        assert ctrl is not None
        mark = probe.mark()
        sent_before = ctrl.client.stops_sent
        for i in range(50):  # one synchronous step, as paho hands over one read's messages
            body = json.dumps({"request_id": f"s{i}"}).encode()
            lane.submit_stop(Queued(bridge.parse_command("stop", body, 4096), None))
        for i in range(50):
            await probe.event(TID, "ack", since=mark, request_id=f"s{i}")
        assert ctrl.client.stops_sent == sent_before + 1
