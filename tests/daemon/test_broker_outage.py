"""The broker is killed mid-session: the configured policy is followed, and after the
broker is back the daemon republishes ``status`` online and its retained ``state``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon_helpers import WALK, Probe, make_config, running_daemon, until

TID = "lane-1"


async def _running(probe: Probe, daemon: Any) -> Any:
    assert (await probe.command(TID, "start", {"program": WALK}))["type"] == "ack"
    ctrl = daemon.lanes[TID].controller
    await until(lambda: ctrl.snapshot.state.value == "running"
                and ctrl.transport.sim.truth().speed_kmh > 1.0, 15, "running")
    return ctrl


async def test_policy_stop_stops_after_grace_and_state_is_republished(
        mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory()
    config = make_config(broker, tmp_path,
                         daemon={"broker_lost_policy": "stop", "broker_grace_s": 1.0})
    async with running_daemon(config) as daemon:
        async with Probe(broker.port) as probe:
            ctrl = await _running(probe, daemon)
        broker.stop()
        lane = daemon.lanes[TID]
        await until(lambda: not lane.broker_up.is_set(), 10, "daemon notices the outage")
        # Grace expires with the broker still away: latched, belt commanded to stop.
        await until(lambda: ctrl.latch.latched, 10, "broker-lost latch")
        assert ctrl.latch.trip.interlock.value == "broker-lost"
        await until(lambda: abs(ctrl.transport.sim.truth().speed_kmh) < 0.05, 10, "belt stopped")
        broker.start()
        async with Probe(broker.port) as probe:
            # Retained messages from the daemon, after its reconnect.
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                                 and m.text == "online", 20, what="online again")
            st = await probe.state(TID, lambda s: s["state"] == "estopped", within_s=20)
            assert st["latched"] and "broker-lost" in st["reason"]
            # The latch survives the reconnect; reset (no belt motion) clears it.
            await until(lambda: ctrl.session_task.done(), 10, "session ended")
            await until(lambda: ctrl.measured_kmh <= 0.05, 10, "measured standstill")
            assert (await probe.command(TID, "reset", {"reason": "broker back"}))["type"] == "ack"


async def test_short_outage_within_grace_keeps_the_session(
        mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory()
    config = make_config(broker, tmp_path,
                         daemon={"broker_lost_policy": "stop", "broker_grace_s": 60})
    async with running_daemon(config) as daemon:
        async with Probe(broker.port) as probe:
            ctrl = await _running(probe, daemon)
        broker.stop()
        lane = daemon.lanes[TID]
        await until(lambda: not lane.broker_up.is_set(), 10, "daemon notices the outage")
        broker.start()
        async with Probe(broker.port) as probe:
            st = await probe.state(TID, lambda s: s["state"] == "running", within_s=20)
            assert not st["latched"]
            await probe.wait_for(lambda m: m.topic == f"treadctl/{TID}/status"
                                 and m.text == "online", 20, what="online again")
            # The session went on, and the remote e-stop works again.
            assert ctrl.transport.sim.truth().speed_kmh > 1.0
            mark = probe.mark()
            await probe.send(f"treadctl/{TID}/cmd/estop", b"")
            await probe.state(TID, lambda s: s["state"] == "estopped", since=mark)


async def test_policy_continue_keeps_running(mosquitto_factory: Any, tmp_path: Path) -> None:
    broker = mosquitto_factory()
    config = make_config(broker, tmp_path,
                         daemon={"broker_lost_policy": "continue", "broker_grace_s": 0.5})
    async with running_daemon(config) as daemon:
        async with Probe(broker.port) as probe:
            ctrl = await _running(probe, daemon)
        broker.stop()
        lane = daemon.lanes[TID]
        await until(lambda: not lane.broker_up.is_set(), 10, "daemon notices the outage")
        broker.start()
        await until(lambda: lane.broker_up.is_set(), 20, "reconnected")
        assert not ctrl.latch.latched and ctrl.snapshot.state.value == "running"
