"""A daemon lane on a native-protocol profile, end to end: a real mosquitto, the daemon in
this process, and the Biodex simulator personality in ANOTHER process on a real pty
(``serial://``), judged from the simulator's physics (its event lines).

Over MQTT: ``cmd/start`` of a reverse program -> state ``running``, direction
``reverse`` (the belt turned at standstill and runs backward in the physics);
``cmd/stop`` -> a controlled stop (``finished`` with outcome ``stopped``, nothing
latched, no ``estop``, the firmware braking at its controlled-stop rate); ``cmd/estop`` ->
``estopped``, latched, the belt stops; ``cmd/reset`` -> idle, and nothing moves the belt.
Both processes run at the same scaled real time (CTL_SPEEDUP of tests/drivers/helpers.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

from daemon_helpers import Probe, make_config, running_daemon

from soak.mosquitto import Mosquitto
from treadctl import clock
from treadctl.profiles import load_profile


def _drivers_helpers() -> Any:
    name = "drivers_helpers"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "drivers" / "helpers.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


dh = _drivers_helpers()
PROFILE = "biodex-rtm400"
TID = "rtm-1"
REVERSE = {"name": "lane-reverse", "segments": [
    {"duration_s": 40, "speed_kmh": 2.0, "direction": "reverse"}]}  # fmt: skip
FORWARD = {"name": "lane-forward", "segments": [
    {"duration_s": 40, "speed_kmh": 2.0, "direction": "forward"}]}  # fmt: skip


def _events(sp: Any, kind: str, after: float = -1.0) -> list[dict[str, Any]]:
    return [e for e in sp.drain() if e["event"] == kind and e["t"] > after]


async def _telemetry(probe: Probe, direction: str, since: int = 0) -> dict[str, Any]:
    """The first telemetry of the belt cruising (> 1.5 km/h) in ``direction``."""
    msg = await probe.wait_for(
        lambda m: m.topic == f"treadctl/{TID}/telemetry" and m.json["direction"] == direction
        and m.json["speed_kmh"] > 1.5, 30, since, f"telemetry {direction} > 1.5 km/h")
    return dict(msg.json)


async def _scenario(broker: Mosquitto, data_dir: Path, sp: Any) -> dict[str, Any]:
    config = make_config(broker, data_dir, [TID], devices={TID: sp.url})
    lane = dataclasses.replace(config.treadmills[0], profile=PROFILE)
    config = dataclasses.replace(config, treadmills=type(config.treadmills)([lane]))
    seen: dict[str, Any] = {}
    async with Probe(broker.port) as probe, running_daemon(config):
        await probe.state(TID, lambda s: s["state"] == "idle", within_s=20)
        # cmd/start of a reverse program: running, backward.
        ack = await probe.command(TID, "start", {"program": REVERSE})
        assert ack["type"] == "ack", ack
        seen["running"] = await probe.state(
            TID, lambda s: s["state"] == "running" and s["direction"] == "reverse", within_s=30)
        seen["backward"] = await _telemetry(probe, "reverse")
        turn = await dh.wait_sim_event(sp, lambda e: e["event"] == "direction:reverse", 5)
        seen["turn"] = turn
        # cmd/stop: a controlled stop.
        mark = probe.mark()
        t_stop = max(e["t"] for e in sp.drain())
        ack = await probe.command(TID, "stop")
        assert ack["type"] == "ack", ack
        finished = await probe.event(TID, "finished", since=mark, within_s=20)
        seen["finished"] = finished
        idle = await probe.state(TID, lambda s: s["state"] == "idle", since=mark, within_s=20)
        seen["idle_after_stop"] = idle
        seen["estops_after_stop"] = [
            m.json for m in probe.messages[mark:]
            if m.topic == f"treadctl/{TID}/event" and m.json.get("type") == "estop"]
        stop = await dh.wait_sim_event(sp, lambda e: e["event"] == "stop" and e["t"] > t_stop)
        still = await dh.wait_sim_event(
            sp, lambda e: e["event"] == "standstill" and e["at_s"] >= stop["at_s"])
        seen["stop"], seen["still"] = stop, still
        # cmd/estop while running forward: estopped, latched, the belt stops.
        ack = await probe.command(TID, "start", {"program": FORWARD})
        assert ack["type"] == "ack", ack
        await _telemetry(probe, "forward", since=probe.mark())
        mark = probe.mark()
        t_estop = max(e["t"] for e in sp.drain())
        await probe.send(f"treadctl/{TID}/cmd/estop", {"request_id": "e1"})
        estopped = await probe.state(TID, lambda s: s["state"] == "estopped" and s["latched"],
                                     since=mark, within_s=10)
        seen["estopped"] = estopped
        seen["estop_event"] = await probe.event(TID, "estop", since=mark)
        seen["estop_still"] = await dh.wait_sim_event(
            sp, lambda e: e["event"] == "standstill" and e["at_s"] > t_estop, 10)
        await asyncio.sleep(1.0)
        # cmd/reset: idle, unlatched, and nothing moves.
        mark = probe.mark()
        t_reset = max(e["t"] for e in sp.drain())
        ack = await probe.command(TID, "reset", {"reason": "test: belt clear, staff checked"})
        seen["reset_ack"] = ack
        seen["after_reset"] = await probe.state(
            TID, lambda s: s["state"] == "idle" and not s["latched"], since=mark, within_s=10)
        await asyncio.sleep(3.0)
        seen["starts_after_reset"] = _events(sp, "start", after=t_reset)
        seen["last_line"] = sp.drain()[-1]
    return seen


def test_native_lane_over_mqtt(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sp = dh.start_sims([(PROFILE, "")], speedup=dh.CTL_SPEEDUP)[0]
    try:
        seen = clock.run(_scenario(mosquitto, tmp_path, sp), speedup=dh.CTL_SPEEDUP)
    finally:
        dh.stop_sims([sp])
    profile = load_profile(PROFILE)
    # running backward: the state says so, and so does the physics (turned at standstill)
    assert seen["running"]["program"] == "lane-reverse"
    assert seen["backward"]["speed_kmh"] > 1.5
    assert seen["turn"]["speed_at_kmh"] == 0
    # cmd/stop: a controlled stop -- outcome stopped, no latch, no estop event, braked at
    # the controlled-stop rate (not the e-stop's) from a belt running backward.
    assert seen["finished"]["outcome"] == "stopped", seen["finished"]
    assert seen["idle_after_stop"]["latched"] is False
    assert seen["estops_after_stop"] == []
    stop, still = seen["stop"], seen["still"]
    assert stop["speed_at_kmh"] < -1.5, stop
    decel = abs(stop["speed_at_kmh"]) / 3.6 / (still["at_s"] - stop["at_s"])
    assert decel <= profile.motion.stop_decel_mps2 + 0.05, decel
    # cmd/estop: estopped and latched, the belt stood
    assert seen["estop_event"]["interlock"] == "remote-estop", seen["estop_event"]
    assert seen["estop_still"]["speed_kmh"] == 0
    # cmd/reset: acked, idle and unlatched, and the belt was not moved
    assert seen["reset_ack"]["type"] == "ack", seen["reset_ack"]
    assert seen["starts_after_reset"] == []
    assert seen["last_line"]["speed_kmh"] == 0
