"""Every ending of a session is announced and recorded, and the retained ``state`` tells the
truth afterwards (docs/mqtt.md "Endings", "E-stop"): a real mosquitto, the daemon in this
loop, the belt's ground truth from the simulator.

* a link lost mid-session still publishes ``finished`` (outcome, summary) and closes the
  session in the store;
* an e-stop during a controlled stop ends the session ``estopped``, announced and recorded;
* after an e-stop the retained state follows the belt down to 0; after a reset it names
  no session;
* the operator's e-stop reason reaches the state, the ``estop`` and ``finished`` events and
  the session record; a malformed one still stops and keeps the request id;
* events carry no controller-internal ``t_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from daemon_helpers import (
    WALK,
    Probe,
    TcpCable,
    TcpSim,
    make_config,
    running_daemon,
    until,
)

from treadctl.daemon.service import Daemon
from treadctl.store.db import SessionStore, default_db_path

TID = "lane-1"
FAST = {"name": "fast-walk",
        "segments": [{"duration_s": 120, "speed_kmh": 5.0, "direction": "forward"}]}


def sim_of(daemon: Daemon, tid: str = TID) -> Any:
    ctrl = daemon.lanes[tid].controller
    assert ctrl is not None
    return ctrl.transport.sim  # type: ignore[attr-defined]


def with_profile(config: Any, profile: str) -> Any:
    lanes = [dataclasses.replace(t, profile=profile) for t in config.treadmills]
    return dataclasses.replace(config, treadmills=type(config.treadmills)(lanes))


async def retained_state(port: int, tid: str = TID) -> dict[str, Any]:
    """What a back-end that connects now is told: the retained ``state``."""
    async with Probe(port, filters=(f"treadctl/{tid}/state",)) as fresh:
        msg = await fresh.wait_for(lambda m: m.retain, 10, what="retained state")
        return dict(msg.json)


async def test_link_lost_mid_session_publishes_finished_and_closes_the_session(
        mosquitto: Any, tmp_path: Path) -> None:
    treadmill = await TcpSim("treadctl-reference").start()
    cable = await TcpCable(int(treadmill.url.rsplit(":", 1)[1])).start()
    config = make_config(mosquitto, tmp_path, devices={TID: cable.url})
    try:
        async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
            reply = await probe.command(TID, "start", {"program": WALK})
            assert reply["type"] == "ack", reply
            session_id = reply["session_id"]
            await until(lambda: treadmill.sim.truth().speed_kmh > 2.0, 15, "belt moving")
            mark = probe.mark()
            cable.cut()
            fin = await probe.event(TID, "finished", since=mark, within_s=15)
            assert fin["session_id"] == session_id
            assert fin["outcome"] == "estopped" and "link-lost" in fin["reason"], fin
            assert isinstance(fin["summary"], dict) and fin["summary"]["outcome"] == "estopped"
            # The firmware watchdog stopped the belt; the daemon keeps trying to reconnect.
            await until(lambda: treadmill.sim.truth().speed_kmh == 0.0, 10, "belt stopped")
            st = await probe.state(TID, lambda s: s["state"] == "disconnected", since=mark)
            assert st["session_id"] is None
            # Every disconnected state, the controller's and the lane's: speed unknown.
            gone = [m.json for m in probe.messages[mark:] if m.topic.endswith("/state")
                    and m.json["state"] == "disconnected"]
            assert gone and all(s["speed_kmh"] is None for s in gone), gone
            assert daemon.store is not None
            info = daemon.store.get_session(session_id)
            assert str(info.outcome) == "estopped", info
            finished = [m for m in probe.messages[mark:] if m.topic.endswith("/event")
                        and m.json["type"] == "finished"]
            assert len(finished) == 1, finished
    finally:
        await cable.close()
        await treadmill.stop()


async def test_estop_during_a_controlled_stop_is_announced_and_recorded(
        mosquitto: Any, tmp_path: Path) -> None:
    """The operator hits the e-stop while a stop is braking the belt: the session ends
    ``estopped`` (not left ``running``), with one ``finished`` event."""
    config = with_profile(make_config(mosquitto, tmp_path), "kinetic-rx2")
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command(TID, "start", {"program": FAST})
        session_id = reply["session_id"]
        await until(lambda: sim_of(daemon).truth().speed_kmh > 4.0, 30, "belt at speed")
        mark = probe.mark()
        assert (await probe.command(TID, "stop"))["type"] == "ack"
        await until(lambda: 0.5 < sim_of(daemon).truth().speed_kmh < 3.5, 10, "braking")
        await probe.send(f"treadctl/{TID}/cmd/estop", {"reason": "second thoughts"})
        fin = await probe.event(TID, "finished", since=mark, within_s=20)
        assert fin["session_id"] == session_id and fin["outcome"] == "estopped", fin
        assert "second thoughts" in fin["reason"]
        assert isinstance(fin["summary"], dict), fin
        await until(lambda: sim_of(daemon).truth().speed_kmh == 0.0, 10, "belt stopped")
        assert daemon.store is not None
        assert str(daemon.store.get_session(session_id).outcome) == "estopped"
        await asyncio.sleep(0.5)  # nothing else is announced for this session
        finished = [m for m in probe.messages[mark:] if m.topic.endswith("/event")
                    and m.json["type"] == "finished"]
        assert len(finished) == 1, finished


async def test_state_follows_the_belt_after_an_estop_and_reset_clears_the_session(
        mosquitto: Any, tmp_path: Path) -> None:
    config = with_profile(make_config(mosquitto, tmp_path), "kinetic-rx2")
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command(TID, "start", {"program": FAST})
        session_id = reply["session_id"]
        await until(lambda: sim_of(daemon).truth().speed_kmh > 4.5, 30, "belt at speed")
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/estop", b"")
        latched = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        assert latched["speed_kmh"] > 4.0, latched  # the belt was still running at the latch
        await until(lambda: sim_of(daemon).truth().speed_kmh == 0.0, 15, "belt stopped")
        # The retained state follows the belt down: it ends at 0, still latched, and
        # still names the session the e-stop ended.
        st = await probe.state(TID, lambda s: s["speed_kmh"] == 0.0, since=mark, within_s=5)
        assert st["state"] == "estopped" and st["latched"] is True
        assert st["session_id"] == session_id and st["program"] == "fast-walk"
        speeds = [m.json["speed_kmh"] for m in probe.messages[mark:]
                  if m.topic == f"treadctl/{TID}/state"]
        assert speeds == sorted(speeds, reverse=True), speeds
        assert len(speeds) >= 3, speeds  # on the way down, not just the two ends
        retained = await retained_state(mosquitto.port)
        assert retained["speed_kmh"] == 0.0 and retained["state"] == "estopped", retained
        # ... and stays consistent: nothing moves, nothing changes.
        await asyncio.sleep(1.5)
        assert (await retained_state(mosquitto.port))["speed_kmh"] == 0.0

        reply = await probe.command(TID, "reset", {"reason": "runner checked"})
        assert reply["type"] == "ack", reply
        retained = await retained_state(mosquitto.port)
        assert retained["state"] == "idle" and retained["latched"] is False, retained
        assert retained["reason"] is None
        assert (retained["program"], retained["segment"], retained["session_id"]) == (
            None, None, None), retained


async def test_state_names_no_session_after_the_end(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command(TID, "start", {"program": WALK})
        await until(lambda: sim_of(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        running = await retained_state(mosquitto.port)
        assert running["session_id"] == reply["session_id"] and running["segment"] == 1
        mark = probe.mark()
        await probe.command(TID, "stop")
        await probe.event(TID, "finished", since=mark, within_s=20)
        retained = await retained_state(mosquitto.port)
        assert retained["state"] == "idle" and retained["speed_kmh"] == 0.0
        assert (retained["program"], retained["segment"], retained["session_id"]) == (
            None, None, None), retained
        # An e-stop while idle names no session either (none was running).
        await probe.send(f"treadctl/{TID}/cmd/estop", b"")
        st = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        assert st["session_id"] is None and st["program"] is None, st


async def test_operator_estop_reason_reaches_state_events_and_store(
        mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path, ["lane-1", "lane-2"])
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        reply = await probe.command(TID, "start", {"program": WALK})
        session_id = reply["session_id"]
        await until(lambda: sim_of(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        mark = probe.mark()
        await probe.send(f"treadctl/{TID}/cmd/estop",
                         {"reason": "runner fell", "request_id": "e1"})
        ack = await probe.reply(TID, "e1", since=mark)
        assert ack["type"] == "ack" and ack["reason"] == "runner fell" and "warnings" not in ack
        st = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
        assert st["reason"].startswith("remote-estop") and "runner fell" in st["reason"], st
        estop = await probe.event(TID, "estop", since=mark)
        assert estop["interlock"] == "remote-estop" and "runner fell" in estop["reason"]
        fin = await probe.event(TID, "finished", since=mark, within_s=15)
        assert "runner fell" in fin["reason"] and "runner fell" in fin["summary"]["reason"]
        await until(lambda: sim_of(daemon).truth().speed_kmh == 0.0, 10, "belt stopped")
        assert daemon.store is not None
        info = daemon.store.get_session(session_id)
        assert str(info.outcome) == "estopped" and "runner fell" in info.reason, info
        stored = [e for e in daemon.store.events(session_id) if e.type == "estop"]
        assert len(stored) == 1 and "runner fell" in stored[0].data["reason"], stored

        # Gym-wide, with a reason: every treadmill's latch carries it.
        await probe.event(TID, "stopped", since=mark)  # measured standstill
        assert (await probe.command(TID, "reset", {"reason": "ok"}))["type"] == "ack"
        mark = probe.mark()
        await probe.send("treadctl/all/cmd/estop", {"reason": "fire alarm"})
        for tid in ("lane-1", "lane-2"):
            st = await probe.state(tid, lambda s: s["state"] == "estopped", since=mark)
            assert st["reason"].startswith("gym-estop") and "fire alarm" in st["reason"], st
        # A plain-text payload (mosquitto_pub -m 'runner fell') is the reason too.
        for tid in ("lane-1", "lane-2"):
            assert (await probe.command(tid, "reset", {"reason": "ok"}))["type"] == "ack"
        mark = probe.mark()
        await probe.send("treadctl/lane-2/cmd/estop", b"belt slipped")
        st = await probe.state("lane-2", lambda s: s["state"] == "estopped", since=mark)
        assert "belt slipped" in st["reason"], st


async def test_estop_with_a_malformed_reason_stops_and_keeps_the_request_id(
        mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path, daemon={"command_rate_per_s": 100})
    cases: list[tuple[dict[str, Any], str | None, str]] = [
        ({"reason": 5, "request_id": "e2"}, "5", "expected a string"),
        ({"reason": {"who": "staff"}, "request_id": "e3"}, '{"who":"staff"}', "expected a string"),
        ({"reason": "slipped", "request_id": "e4", "who": "tablet"}, "slipped", "unknown field"),
        ({"reason": "x" * 500, "request_id": "e5"}, None, "longer than"),
    ]
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        for payload, reason, warning in cases:
            await probe.command(TID, "start", {"program": WALK})
            await until(lambda: sim_of(daemon).truth().speed_kmh > 1.0, 15, "belt moving")
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/estop", payload)
            st = await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)
            ack = await probe.reply(TID, payload["request_id"], since=mark)
            assert ack["type"] == "ack" and ack["command"] == "estop", ack
            assert any(warning in w for w in ack["warnings"]), ack
            if reason is not None:
                assert ack["reason"] == reason and reason in st["reason"], (ack, st)
            else:  # cut to the documented length, in the ack and in the latch
                assert len(ack["reason"]) == 200 and ack["reason"].endswith("\u2026"), ack
            await until(lambda: sim_of(daemon).truth().speed_kmh == 0.0, 10, "belt stopped")
            await probe.event(TID, "finished", since=mark)
            await probe.event(TID, "stopped", since=mark)  # measured standstill
            reply = await probe.command(TID, "reset", {"reason": "ok"})
            assert reply["type"] == "ack", reply


async def test_events_carry_ts_and_no_controller_clock(mosquitto: Any, tmp_path: Path) -> None:
    config = make_config(mosquitto, tmp_path)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        await probe.command(TID, "start", {"program": WALK})
        await until(lambda: sim_of(daemon).truth().speed_kmh > 2.0, 15, "belt moving")
        mark = probe.mark()
        await probe.command(TID, "stop")
        await probe.event(TID, "finished", since=mark, within_s=20)
        events = [m.json for m in probe.messages if m.topic == f"treadctl/{TID}/event"]
        types = {e["type"] for e in events}
        assert {"session-start", "segment", "finished", "ack"} <= types, types
        for event in events:
            assert "t_s" not in event, event
            assert event["ts"].endswith("Z") and "request_id" in event, event


async def test_sessions_closed_in_the_store_when_the_daemon_stops(
        mosquitto: Any, tmp_path: Path) -> None:
    """Shutdown with sessions on several lanes: each ends ``stopped``, announced, and no
    session is left ``running`` in the store."""
    config = make_config(mosquitto, tmp_path, ["lane-1", "lane-2"])
    async with Probe(mosquitto.port) as probe:
        async with running_daemon(config) as daemon:
            ids = [(await probe.command(tid, "start", {"program": WALK}))["session_id"]
                   for tid in ("lane-1", "lane-2")]
            await until(lambda: all(sim_of(daemon, t).truth().speed_kmh > 1.0
                                    for t in ("lane-1", "lane-2")), 15, "belts moving")
            mark = probe.mark()
        for tid, session_id in zip(("lane-1", "lane-2"), ids, strict=True):
            fin = await probe.event(tid, "finished", since=mark, within_s=5)
            assert fin["session_id"] == session_id and fin["outcome"] == "stopped", fin
            # A back-end tells a shutdown from an operator's cmd/stop ("stopped on request").
            assert fin["reason"] == "daemon shutdown", fin
    with SessionStore(default_db_path(tmp_path)) as store:
        for session_id in ids:
            assert str(store.get_session(session_id).outcome) == "stopped"


async def test_the_retained_state_of_a_disconnected_lane_shows_its_latch(
        mosquitto: Any, tmp_path: Path) -> None:
    """A link that is down does not hide a latch: the lane's disconnected state shows the
    machine's (the link loss's own, as the controller's last state did), an e-stop while
    disconnected takes its place at once with its reason (Home Assistant's "E-stop
    latched"), and a reset clears it (still disconnected, nothing moves)."""
    treadmill = await TcpSim("treadctl-reference").start()
    cable = await TcpCable(int(treadmill.url.rsplit(":", 1)[1])).start()
    config = make_config(mosquitto, tmp_path, devices={TID: cable.url})
    try:
        async with Probe(mosquitto.port) as probe, running_daemon(config):
            await probe.state(TID, lambda s: s["state"] == "idle", within_s=15)
            mark = probe.mark()
            cable.cut()
            await probe.state(TID, lambda s: s["state"] == "disconnected", since=mark,
                              within_s=15)
            # The lane's own disconnected state (after the controller's) agrees with it.
            await until(lambda: sum(1 for m in probe.messages[mark:]
                                    if m.topic.endswith("/state")
                                    and m.json["state"] == "disconnected") >= 2, 10,
                        "the lane's disconnected state")
            downs = [m.json for m in probe.messages[mark:] if m.topic.endswith("/state")
                     and m.json["state"] == "disconnected"]
            assert all(d["latched"] and d["reason"].startswith("link-lost") for d in downs), \
                downs
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/estop", {"reason": "belt unplugged"})
            st = await probe.state(TID, lambda s: s["reason"].startswith("remote-estop"),
                                   since=mark)
            assert st["state"] == "disconnected" and st["speed_kmh"] is None, st
            assert st["latched"] and st["reason"].startswith(
                "remote-estop: e-stop (MQTT): belt unplugged"), st
            # At once: published with the e-stop's ack, not at the next reconnect attempt.
            ack = await probe.wait_for(
                lambda m: m.topic.endswith("/event") and m.json.get("type") == "ack"
                and m.json.get("command") == "estop", 10, mark, "the e-stop's ack")
            shown = next(m for m in probe.messages[mark:] if m.topic.endswith("/state")
                         and m.json["reason"].startswith("remote-estop"))
            assert probe.messages.index(shown) < probe.messages.index(ack)
            assert (await retained_state(mosquitto.port))["latched"] is True
            mark = probe.mark()
            reply = await probe.command(TID, "reset", {"reason": "checked"})
            assert reply["type"] == "ack", reply
            st = await probe.state(TID, lambda s: not s["latched"], since=mark)
            assert st["state"] == "disconnected" and not st["reason"].startswith("remote"), st
            assert treadmill.sim.truth().speed_kmh == 0.0
    finally:
        await cable.close()
        await treadmill.stop()
