"""Who pressed what (docs/daemon.md, "Who pressed what") and what a lane can do ("Lane
capabilities"), end to end: a real mosquitto, the daemon in this loop, the session's
events read back from the store, the belt's truth from the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe, make_config, running_daemon, until

from treadctl.daemon.bridge import MAX_BY_CHARS, MAX_REASON_CHARS
from treadctl.daemon.service import Daemon

TID = "lane-1"


def sim(daemon: Daemon) -> Any:
    ctrl = daemon.lanes[TID].controller
    assert ctrl is not None
    return ctrl.transport.sim  # type: ignore[attr-defined]


def stored(daemon: Daemon, session_id: str) -> list[dict[str, Any]]:
    store = daemon.store
    assert store is not None
    return [{"type": str(e.type), "t_s": e.t_s, **dict(e.data)}
            for e in store.events(session_id)]


async def stored_command(daemon: Daemon, session_id: str, command: str,
                         request_id: str) -> dict[str, Any]:
    """The ``command`` event of ``request_id`` once the store's writer has written it."""
    found: list[dict[str, Any]] = []

    def have() -> bool:
        found[:] = [e for e in stored(daemon, session_id) if e["type"] == "command"
                    and e.get("command") == command and e.get("request_id") == request_id]
        return bool(found)

    await until(have, 10, f"{command} {request_id} in the session's events")
    return found[0]


async def test_operator_and_reason_go_into_the_session_events(
        mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        mark = probe.mark()
        ack = await probe.command(TID, "start", {"program": WALK, "by": "sam"}, rid="s1")
        assert ack["type"] == "ack", ack
        sid = ack["session_id"]
        await until(lambda: sim(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        ev = await probe.event(TID, "command", request_id="s1", since=mark)
        assert (ev["command"], ev["by"], ev["reason"]) == ("start", "sam", None)
        assert "t_s" not in ev and ev["ts"].endswith("Z")
        assert (await stored_command(daemon, sid, "start", "s1"))["by"] == "sam"

        # set: the controller's own command event carries who and why (one event, not two)
        reply = await probe.command(TID, "set", {"speed_kmh": 3.5, "by": "sam",
                                                 "reason": "runner asked"}, rid="t1")
        assert reply["type"] == "ack", reply
        rec = await stored_command(daemon, sid, "set", "t1")
        assert (rec["by"], rec["reason"], rec["speed_kmh"]) == ("sam", "runner asked", 3.5)
        assert len([e for e in stored(daemon, sid) if e.get("request_id") == "t1"]) == 1

        # stop with a reason: in the session that it stopped, before the session's end
        mark = probe.mark()
        reply = await probe.command(TID, "stop", {"by": "sam", "reason": "runner unwell"},
                                    rid="p1")
        assert reply["type"] == "ack", reply
        ev = await probe.event(TID, "command", request_id="p1", since=mark)
        assert (ev["command"], ev["by"], ev["reason"]) == ("stop", "sam", "runner unwell")
        # The reply is the first event with the request id; the command event follows it.
        same = [m.json["type"] for m in probe.messages[mark:]
                if m.topic.endswith("/event") and m.json.get("request_id") == "p1"]
        assert same == ["ack", "command"], same
        fin = await probe.event(TID, "finished", since=mark, within_s=20)
        assert fin["outcome"] == "stopped"
        rec = await stored_command(daemon, sid, "stop", "p1")
        assert (rec["by"], rec["reason"]) == ("sam", "runner unwell")
        finished = next(e for e in stored(daemon, sid) if e["type"] == "finished")
        assert rec["t_s"] <= finished["t_s"]


async def test_estop_and_reset_after_it_are_recorded_with_the_ended_session(
        mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        ack = await probe.command(TID, "start", {"program": WALK})
        sid = ack["session_id"]
        await until(lambda: sim(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/estop",
                         {"reason": "runner fell", "by": "ada", "request_id": "e1"})
        ev = await probe.event(TID, "command", request_id="e1", since=mark)
        assert (ev["command"], ev["by"], ev["reason"], ev["scope"]) == (
            "estop", "ada", "runner fell", TID)
        st = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        assert st["reason"].endswith("e-stop (MQTT): runner fell (by ada)"), st
        await probe.event(TID, "finished", since=mark, within_s=20)
        await until(lambda: sim(daemon).truth().speed_kmh == 0.0, 10, "belt stopped")
        assert (await stored_command(daemon, sid, "estop", "e1"))["by"] == "ada"

        # The session is over (estopped, its record closed); the reset that clears its
        # latch is appended to that session's record.
        assert str(daemon.store.get_session(sid).outcome) == "estopped"  # type: ignore[union-attr]
        mark = probe.mark()
        reply = await probe.command(TID, "reset", {"reason": "runner checked", "by": "ada"},
                                    rid="r1")
        assert reply["type"] == "ack", reply
        ev = await probe.event(TID, "command", request_id="r1", since=mark)
        assert (ev["command"], ev["by"], ev["reason"]) == ("reset", "ada", "runner checked")
        rec = await stored_command(daemon, sid, "reset", "r1")
        assert (rec["by"], rec["reason"]) == ("ada", "runner checked")
        assert rec["at"].endswith("Z")
        assert str(daemon.store.get_session(sid).outcome) == "estopped"  # type: ignore[union-attr]

        # An e-stop while idle belongs to no session: MQTT and the log only.
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/estop", {"by": "vic", "request_id": "e2"})
        ev = await probe.event(TID, "command", request_id="e2", since=mark)
        assert ev["by"] == "vic" and ev["reason"] is None


@pytest.mark.parametrize(
    ("command", "body", "needle"),
    [
        ("stop", {"by": "x" * (MAX_BY_CHARS + 1)}, f"by: longer than {MAX_BY_CHARS}"),
        ("stop", {"reason": "y" * (MAX_REASON_CHARS + 1)},
         f"reason: longer than {MAX_REASON_CHARS}"),
        ("stop", {"by": 7}, "by: must be a string"),
        ("stop", {"by": "  "}, "by: must not be empty"),
        ("stop", {"by": "sam\nroot"}, "by: must be one line"),
        ("pause", {"reason": ["slow"]}, "reason: must be a string"),
        ("set", {"speed_kmh": 3.5, "by": "z" * 65}, "by: longer than"),
        ("heartbeat", {"by": "sam"}, "unknown field 'by'"),
        ("reset", {"reason": "ok", "by": "b" * 65}, "by: longer than"),
    ],
)
async def test_bad_operator_fields_are_errors_and_change_nothing(
        mosquitto: Any, tmp_path: Path, command: str, body: dict[str, Any],
        needle: str) -> None:
    config = make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 100})
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        ack = await probe.command(TID, "start", {"program": WALK})
        await until(lambda: sim(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        if command == "reset":  # a latch to (not) clear
            await probe.send(f"treadctl/{TID}/cmd/estop", {"request_id": "e"})
            await probe.state(TID, lambda s: s["state"] == "estopped")
            await until(lambda: sim(daemon).truth().speed_kmh == 0.0, 10, "belt stopped")
        before = sim(daemon).truth().speed_kmh
        mark = probe.mark()
        reply = await probe.command(TID, command, body, rid="bad")
        assert reply["type"] == "error" and needle in reply["error"], reply
        assert reply["request_id"] == "bad"
        # Nothing changed: still running (or still latched), the belt where it was, and no
        # command event for it (not on MQTT, not in the session).
        await asyncio.sleep(0)
        ctrl = daemon.lanes[TID].controller
        assert ctrl is not None
        if command == "reset":
            assert ctrl.snapshot.latched
        else:
            assert ctrl.snapshot.state.value == "running"
            assert sim(daemon).truth().speed_kmh >= min(before, 2.0)
        assert not [m for m in probe.messages[mark:] if m.topic.endswith("/event")
                    and m.json.get("type") == "command"
                    and m.json.get("request_id") == "bad"]
        assert not [e for e in stored(daemon, ack["session_id"])
                    if e.get("request_id") == "bad"]


async def test_info_is_retained_and_names_what_the_lane_can_do(
        mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path, ["lane-1", "lane-2"],
                         extra={"site_limits": {"max_speed_kmh": 12.0}})
    # lane-2: a forward-only profile (make_config gives every lane the reference profile).
    from dataclasses import replace

    lanes = (config.treadmills[0], replace(config.treadmills[1], profile="generic-ftms"))
    config = replace(config, treadmills=lanes)
    # The probe subscribes after the daemon is up: a back-end that connects later gets it
    # retained.
    async with running_daemon(config), Probe(mosquitto.port, ("treadctl/+/info",)) as probe:
        m1 = await probe.wait_for(lambda m: m.topic == "treadctl/lane-1/info", what="info")
        m2 = await probe.wait_for(lambda m: m.topic == "treadctl/lane-2/info", what="info")
    assert m1.retain and m2.retain
    one, two = m1.json, m2.json
    assert (one["profile"], one["protocol"], one["can_reverse"], one["rear_facing"]) == (
        "treadctl-reference", "ftms", True, False)
    assert one["limits"]["max_speed_kmh"] == 12.0 and one["limits"]["reverse_max_speed_kmh"] > 0
    assert (two["profile"], two["can_reverse"], two["reverse_programs"]) == (
        "generic-ftms", False, False)
    assert two["limits"]["reverse_max_speed_kmh"] is None
    assert "start" in one["commands"] and one["ts"].endswith("Z")
    json.dumps(one)  # plain JSON all the way down


REAR = {
    "name": "rear-test",
    "segments": [{"duration_s": 120, "speed_kmh": 2.0, "direction": "reverse"}],
}


async def test_rear_facing_lane_waits_for_resume_and_never_reverses_the_belt(
        mosquitto: Any, tmp_path: Path) -> None:
    """``rear_facing = true`` reaches the lane's controller: a reverse segment on the
    forward-only generic-ftms belt waits for cmd/resume (recorded with who confirmed),
    then runs with the belt forward (sim truth)."""
    config = make_config(mosquitto, tmp_path, devices={TID: "sim://?profile=generic-ftms"},
                         daemon={"command_rate_per_s": 100})
    from dataclasses import replace

    lane = replace(config.treadmills[0], profile="generic-ftms", rear_facing=True)
    config = replace(config, treadmills=(lane,))
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        assert daemon.lanes[TID].info["reverse_programs"] is True
        mark = probe.mark()
        ack = await probe.command(TID, "start", {"program": REAR, "by": "sam"})
        assert ack["type"] == "ack", ack
        turn = await probe.event(TID, "turn-around", since=mark, within_s=15)
        assert turn["face"] == "reverse"
        await probe.state(TID, lambda s: s["state"] == "paused", since=mark)
        assert sim(daemon).truth().speed_kmh == 0.0  # nothing moves before the confirmation
        reply = await probe.command(TID, "resume", {"by": "sam", "reason": "runner turned"},
                                    rid="c1")
        assert reply["type"] == "ack", reply
        await probe.event(TID, "turn-confirmed", since=mark, within_s=10)
        await until(lambda: sim(daemon).truth().speed_kmh > 1.0, 20, "belt moving")
        assert sim(daemon).truth().speed_kmh > 0  # forward: the user walks backward
        rec = await stored_command(daemon, ack["session_id"], "resume", "c1")
        assert (rec["by"], rec["reason"]) == ("sam", "runner turned")
        assert (await probe.command(TID, "stop"))["type"] == "ack"
