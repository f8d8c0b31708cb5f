"""Heart rate in the daemon (issue 14, docs/daemon.md "Heart rate", docs/mqtt.md "Heart
rate"): a lane's strap from its config (``hr = "..."``), a session's strap from
``cmd/start``'s ``hr_device``, the heart-rate fields of ``state``/``telemetry``, Home
Assistant's heart-rate sensors and the ``info`` topic.

End to end with a real mosquitto and the daemon in this process on jumping virtual time
(the in-process simulators are the treadmills, their physics is the judge; the simulated
strap ``sim-hr://`` follows its own lane's simulated belt): the built-in governed backward
walk over MQTT; a strap dropout in a governed reverse walk (``hr-unreliable``, walking
speed, then a controlled stop, never an e-stop); straps refused across lanes (nothing
moves); a governed program on a lane with no heart-rate source refused; a lane whose
Bluetooth strap never connects still runs an ungoverned program.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Msg, Probe, frozen, make_config, virtual_daemon

from soak.mosquitto import Mosquitto
from treadctl import clock, ftms
from treadctl.clock import wait_until
from treadctl.control.client import is_motion_write
from treadctl.control.heart import HR_LOSS_STOP_REASON
from treadctl.daemon import bridge
from treadctl.daemon.config import ConfigError, parse_config
from treadctl.daemon.discovery import HR_QUALITIES, HR_SOURCES
from treadctl.hr.governor import GovernorConfig
from treadctl.hr.registry import STRAPS
from treadctl.profiles import load_profile
from treadctl.programs import load_builtin

EPS = 1e-6
PROFILE = "treadctl-reference"  # runs the belt backward itself
GOVERNED = "hr-zone"  # the built-in governed backward walk, to its end
DROPOUT = "hr-drop"  # a governed reverse walk whose strap drops out for good
BLE = "hr-ble"  # a Bluetooth strap that never connects (no radio here)
NONE = "hr-none"  # no strap, a treadmill that sends no HR field
LANE_STRAP = "ble://AA:BB:CC:DD:EE:FF"
SESSION_STRAP = "ble://11:22:33:44:55:66"
DROPOUT_AT_S = 240  # seconds since the strap started (the lane's link came up)
WALK = GovernorConfig().walk_speed_kmh
LOSS_STOP_S = GovernorConfig().loss_stop_s
GOVERNED_REVERSE = {"name": "hr-reverse", "segments": [
    {"duration_s": 600, "speed_kmh": 2.5, "direction": "reverse", "hr_zone_bpm": [100, 110],
     "min_speed_kmh": 2.0, "max_speed_kmh": 5.0, "label": "governed"}]}  # fmt: skip
SHORT_WALK = {"name": "short-walk", "segments": [
    {"duration_s": 60, "speed_kmh": 3.0, "direction": "forward"}]}  # fmt: skip


@dataclass
class Lane:
    tid: str
    sim: Any = None
    ctrl: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)  # controller's, + sim_t
    true_hr: list[tuple[float, float]] = field(default_factory=list)  # (sim t, model HR)
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def first(self, type_: str) -> float | None:
        return next((e["sim_t"] for e in self.events if e["type"] == type_), None)

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.events]


@dataclass
class World:
    lanes: dict[str, Lane]
    messages: list[Msg]
    straps_after: dict[str, str] = field(default_factory=dict)  # the registry after the end

    def on(self, tid: str, kind: str) -> list[dict[str, Any]]:
        return [m.json for m in self.messages if m.topic == f"treadctl/{tid}/{kind}"]

    def retained(self, topic: str) -> dict[str, Any]:
        return next(json.loads(m.payload) for m in self.messages if m.topic == topic)


def _config(broker: Mosquitto, data_dir: Path) -> Any:
    ids = [GOVERNED, DROPOUT, BLE, NONE]
    # short-record: the simulated treadmills send no HR field (as older consoles do), so
    # the strap is each lane's only heart-rate source.
    config = make_config(broker, data_dir, ids,
                         devices={t: f"sim://?seed={i}&quirks=short-record"
                                  for i, t in enumerate(ids)},
                         extra={"homeassistant": {"enabled": True}})
    straps = {GOVERNED: "sim-hr://", DROPOUT: f"sim-hr://?faults=dropout@{DROPOUT_AT_S}",
              BLE: LANE_STRAP, NONE: None}
    lanes = [dataclasses.replace(t, profile=PROFILE, hr=straps[t.id])
             for t in config.treadmills]
    return dataclasses.replace(config, treadmills=type(config.treadmills)(lanes))


async def _send(probe: Probe, lane: Lane, cmd: str, body: dict[str, Any] | None = None,
                key: str | None = None) -> dict[str, Any]:
    """A command through the broker, carried out at this very virtual instant."""
    reply = await frozen(probe.command(lane.tid, cmd, body))
    lane.replies[key or cmd] = reply
    return reply


def _watch(lane: Lane, daemon: Any) -> asyncio.Task[None]:
    ctrl = lane.ctrl = daemon.lanes[lane.tid].controller
    sim = lane.sim = ctrl.transport.sim
    ctrl.event_listeners.append(lambda e: lane.events.append({**e, "sim_t": sim.now_s()}))

    async def watch() -> None:
        while True:
            strap = getattr(ctrl.hr_strap, "strap", None)  # the simulated strap's model
            if strap is not None:
                lane.true_hr.append((sim.now_s(), strap.true_hr()))
            await asyncio.sleep(0.5)

    return asyncio.create_task(watch())


async def _governed(lane: Lane, probe: Probe) -> None:
    reply = await _send(probe, lane, "start", {"program": "backward-walk-hr-zone"})
    assert reply["type"] == "ack", reply
    assert await wait_until(lambda: lane.first("finished") is not None, 1500, 0.5)
    assert await wait_until(lambda: lane.sim.truth().speed_kmh == 0.0, 30, 0.05)


async def _dropout(lane: Lane, probe: Probe) -> None:
    reply = await _send(probe, lane, "start", {"program": GOVERNED_REVERSE})
    assert reply["type"] == "ack", reply
    assert await wait_until(lambda: lane.first("finished") is not None, 900, 0.5)
    assert await wait_until(lambda: lane.sim.truth().speed_kmh == 0.0, 30, 0.05)
    await asyncio.sleep(3.0)  # anything that would still move the belt shows now


async def _refusals(ble: Lane, none: Lane, probe: Probe) -> None:
    """hr-none: governed without a source, another lane's strap, a bad URL: refused, the
    belt stands. Then a session with its own strap (bound for it, released at its end)."""
    t0 = none.sim.now_s()
    await _send(probe, none, "start", {"program": GOVERNED_REVERSE}, "governed-no-source")
    await _send(probe, none, "start", {"program": SHORT_WALK, "hr_device": "ble://aa:bb:cc:dd:ee:ff"},
                "other-lanes-strap")
    await _send(probe, none, "start", {"program": SHORT_WALK, "hr_device": "sim://"}, "bad-url")
    await asyncio.sleep(5.0)
    none.notes["moved_after_refusals"] = [p for p in none.sim.trace
                                          if p.t_s >= t0 and p.speed_kmh != 0]
    none.notes["idle_after_refusals"] = none.ctrl.snapshot.state.value
    # A session strap of its own: bound to hr-none while the session runs.
    reply = await _send(probe, none, "start", {"program": SHORT_WALK,
                                               "hr_device": SESSION_STRAP}, "session-strap")
    assert reply["type"] == "ack", reply
    assert await wait_until(lambda: abs(none.sim.truth().speed_kmh) > 2.5, 60, 0.05)
    none.notes["holder_during"] = STRAPS.holder(SESSION_STRAP)
    none.notes["hr_source_during"] = none.ctrl.snapshot.hr_source
    # The lane with the never-connecting Bluetooth strap runs an ungoverned walk meanwhile,
    # and may not take hr-none's session strap.
    reply = await _send(probe, ble, "start", {"program": SHORT_WALK})
    assert reply["type"] == "ack", reply
    assert await wait_until(lambda: abs(ble.sim.truth().speed_kmh) > 2.5, 60, 0.05)
    ble.notes["strap_state"] = ble.ctrl.hr_strap.state
    assert await wait_until(lambda: none.first("finished") is not None, 200, 0.5)
    await asyncio.sleep(2.0)
    none.notes["holder_after"] = STRAPS.holder(SESSION_STRAP)
    none.notes["strap_after"] = none.ctrl.hr_strap
    assert await wait_until(lambda: ble.first("finished") is not None, 200, 0.5)
    ble.notes["lane_strap_holder"] = STRAPS.holder(LANE_STRAP)


async def _scenario(broker: Mosquitto, data_dir: Path) -> World:
    config = _config(broker, data_dir)
    probe = Probe(broker.port, ("treadctl/#", "homeassistant/#"))
    await frozen(probe.__aenter__())
    lanes = {tid: Lane(tid) for tid in (GOVERNED, DROPOUT, BLE, NONE)}
    try:
        async with virtual_daemon(config) as daemon:
            watchers = [_watch(lane, daemon) for lane in lanes.values()]
            try:
                await asyncio.gather(_governed(lanes[GOVERNED], probe),
                                     _dropout(lanes[DROPOUT], probe),
                                     _refusals(lanes[BLE], lanes[NONE], probe))
            finally:
                for w in watchers:
                    w.cancel()
            await frozen(asyncio.sleep(0.5))  # the last messages through the broker
            end = probe.mark()  # what the lanes said before the daemon's shutdown
    finally:
        await frozen(probe.__aexit__(None, None, None))
    return World(lanes, probe.messages[:end], STRAPS.bound())


@pytest.fixture(scope="module")
def world(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> World:
    return clock.run(_scenario(mosquitto, tmp_path_factory.mktemp("hr-data")), speedup=None)


# ------------------------------------------------------------------ governed, end to end


def test_builtin_governed_backward_walk_over_mqtt(world: World) -> None:
    lane = world.lanes[GOVERNED]
    prog = load_builtin("backward-walk-hr-zone")
    seg = next(s for s in prog.segments if s.governed)
    assert seg.hr_zone_bpm is not None and seg.min_speed_kmh and seg.max_speed_kmh
    low, high = seg.hr_zone_bpm
    finished = next(e for e in world.on(GOVERNED, "event") if e["type"] == "finished")
    assert finished["outcome"] == "finished" and finished["segments_completed"] == 3, finished
    assert "estop" not in lane.types()
    # Sim truth: the governed backward walk ran backward, inside the segment's range, and
    # the heart model (the person on the belt) was in the zone for its last 6 minutes.
    segs = [e["sim_t"] for e in lane.events if e["type"] == "segment"]
    t2, t3 = segs[1], segs[2]
    t_rev = next(p.t_s for p in lane.sim.trace if t2 <= p.t_s < t3
                 and p.direction.value == "reverse" and p.speed_kmh != 0)
    belt = [p for p in lane.sim.trace if t_rev <= p.t_s < t3]
    assert all(p.direction.value == "reverse" or p.speed_kmh == 0 for p in belt)
    assert max(abs(p.speed_kmh) for p in belt) <= seg.max_speed_kmh + EPS
    late = [h for t, h in lane.true_hr if t3 - 360 <= t < t3]
    assert late and all(low <= h <= high for h in late), (min(late), max(late))
    # What MQTT said: telemetry during the governed walk: strap, good, the zone, a rate.
    tel = world.on(GOVERNED, "telemetry")
    governed = [m for m in tel if m["hr_zone_bpm"] is not None]
    assert len(governed) > 1000, len(governed)  # 12 minutes at 4 Hz
    assert all(m["hr_zone_bpm"] == [low, high] for m in governed)
    steady = governed[len(governed) // 10:]
    assert all(m["hr_source"] == "strap" and m["hr_quality"] == "good" for m in steady)
    assert all(isinstance(m["hr_bpm"], int) for m in steady)
    settled = [m["hr_bpm"] for m in governed[len(governed) // 2:]]
    assert low - 5 <= min(settled) and max(settled) <= high + 5, (min(settled), max(settled))
    assert all(m["hr_zone_bpm"] is None for m in tel[-8:])  # the cool-down and after
    # The retained state showed them too, and names no zone once idle again.
    states = world.on(GOVERNED, "state")
    shown = [s for s in states if s.get("hr_zone_bpm") == [low, high]]
    assert shown and any(s["hr_source"] == "strap" and s["hr_quality"] == "good"
                         and isinstance(s["hr_bpm"], int) for s in shown)
    assert states[-1]["state"] == "idle" and states[-1]["hr_zone_bpm"] is None
    assert set(states[-1]) >= {*bridge.STATE_FIELDS, "link", "ts"}


# ------------------------------------------------------------------ strap fault


def test_strap_dropout_walks_then_stops_the_controlled_way(world: World) -> None:
    lane = world.lanes[DROPOUT]
    events = world.on(DROPOUT, "event")
    types = [e["type"] for e in events]
    assert "estop" not in types and "estop" not in lane.types()
    # hr-unreliable, then walking speed, then the controlled stop, on MQTT in that order.
    assert types.index("hr-unreliable") < types.index("hr-loss-walk") \
        < types.index("hr-loss-stop") < types.index("finished"), types
    finished = next(e for e in events if e["type"] == "finished")
    assert finished["outcome"] == "stopped" and finished["reason"] == HR_LOSS_STOP_REASON
    states = world.on(DROPOUT, "state")
    assert not any(s["latched"] for s in states)
    assert any("hr-unreliable" in s["warnings"] for s in states)
    assert states[-1]["state"] == "idle"
    bad = [m for m in world.on(DROPOUT, "telemetry") if m["hr_quality"] in ("lost", "unreliable")]
    assert bad and all(m["hr_bpm"] is None and m["hr_source"] == "strap" for m in bad)
    # Sim truth: at walking speed (backward) between the walk and the stop, then a Stop,
    # nothing that could move the belt after it, braked no harder than a controlled stop,
    # standing, stopped by the user's request (not the safety key or the watchdog).
    t_walk, t_stop = lane.first("hr-loss-walk"), lane.first("hr-loss-stop")
    assert t_walk is not None and t_stop is not None
    assert t_walk + LOSS_STOP_S - 2 <= t_stop <= t_walk + LOSS_STOP_S + 2
    held = [p for p in lane.sim.trace if t_walk + 20 <= p.t_s < t_stop]
    assert held and all(abs(p.speed_kmh) <= WALK + 0.05 and p.direction.value == "reverse"
                        for p in held)
    sim, profile = lane.sim, load_profile(PROFILE)
    stops = [t for t, u, v in sim.wire_log if t >= t_stop and u == ftms.CONTROL_POINT
             and v[:2] == b"\x08\x01"]
    assert stops, "no Stop reached the firmware"
    assert [w for w in sim.wire_log if w[0] > stops[0] and is_motion_write(profile, w[1], w[2])
            ] == []
    after = [p for p in sim.trace if p.t_s >= t_stop]
    assert min(p.accel_mps2 for p in after) >= -profile.motion.stop_decel_mps2 - EPS
    truth = sim.truth()
    assert truth.speed_kmh == 0.0 and truth.safety_key_in and truth.stop_reason == "user"


# ------------------------------------------------------------------ refusals, session strap


def test_refused_starts_move_nothing(world: World) -> None:
    lane = world.lanes[NONE]
    r = lane.replies
    assert r["governed-no-source"]["type"] == "error"
    assert "no heart-rate source" in r["governed-no-source"]["error"]
    assert r["other-lanes-strap"]["type"] == "error"
    assert f"bound to lane {BLE!r}" in r["other-lanes-strap"]["error"], r["other-lanes-strap"]
    assert r["bad-url"]["type"] == "error" and "hr_device" in r["bad-url"]["error"]
    assert lane.notes["moved_after_refusals"] == []
    assert lane.notes["idle_after_refusals"] == "idle"


def test_a_session_strap_is_bound_for_the_session_and_released_at_its_end(world: World
                                                                          ) -> None:
    none, ble = world.lanes[NONE], world.lanes[BLE]
    assert none.replies["session-strap"]["type"] == "ack"
    assert none.notes["holder_during"] == NONE
    assert none.notes["hr_source_during"] == "strap"
    assert none.notes["holder_after"] is None and none.notes["strap_after"] is None
    # The daemon's end let go of every strap it held.
    assert LANE_STRAP not in world.straps_after and SESSION_STRAP not in world.straps_after
    # The lane's own strap stayed bound to it all along.
    assert ble.notes["lane_strap_holder"] == BLE


def test_a_lane_whose_strap_does_not_work_runs_ungoverned_programs(world: World) -> None:
    lane = world.lanes[BLE]
    assert lane.replies["start"]["type"] == "ack"
    assert lane.notes["strap_state"] in ("connecting", "backoff")  # never connected here
    finished = next(e for e in world.on(BLE, "event") if e["type"] == "finished")
    assert finished["outcome"] == "finished" and "estop" not in lane.types()
    assert max(abs(p.speed_kmh) for p in lane.sim.trace) >= 3.0 - 0.05


# ------------------------------------------------------------------ info, Home Assistant


def test_info_says_whether_the_lane_has_a_strap(world: World) -> None:
    ble = world.retained(f"treadctl/{BLE}/info")
    none = world.retained(f"treadctl/{NONE}/info")
    assert ble["hr_strap"] is True and ble["hr_device"] == LANE_STRAP
    assert none["hr_strap"] is False and none["hr_device"] is None


def test_home_assistant_has_the_heart_rate_sensors(world: World) -> None:
    configs = {m.topic: m.json for m in world.messages
               if m.topic.startswith("homeassistant/") and m.payload}
    mine = {c["unique_id"]: c for c in configs.values()
            if c["unique_id"].startswith(f"treadctl_{GOVERNED}_")}
    source = mine[f"treadctl_{GOVERNED}_hr_source"]
    assert source["state_topic"] == f"treadctl/{GOVERNED}/state"
    assert source["options"] == list(HR_SOURCES)
    assert mine[f"treadctl_{GOVERNED}_hr_quality"]["options"] == list(HR_QUALITIES)
    for key in ("hr_zone_low", "hr_zone_high"):
        assert mine[f"treadctl_{GOVERNED}_{key}"]["unit_of_measurement"] == "bpm"
    assert mine[f"treadctl_{GOVERNED}_hr_unreliable"]["device_class"] == "problem"
    assert f"treadctl_{GOVERNED}_heart_rate" in mine


# ------------------------------------------------------------------ config, bridge


def test_config_hr_per_lane_and_its_errors() -> None:
    def doc(*straps: str | None) -> dict[str, Any]:
        return {"treadmill": [{"id": f"lane-{i}", "device": "sim://", **({"hr": s} if s else {})}
                              for i, s in enumerate(straps, 1)]}

    c = parse_config(doc(LANE_STRAP, "sim-hr://?faults=dropout@60", None), "daemon.toml")
    assert [t.hr for t in c.treadmills] == [LANE_STRAP, "sim-hr://?faults=dropout@60", None]
    # Simulated straps follow their own lane's belt: never in conflict.
    parse_config(doc("sim-hr://", "sim-hr://"))
    for straps, words in (
        ((LANE_STRAP, LANE_STRAP.lower()), "is already given to lane 'lane-1'"),
        (("sim://",), "#1.hr: bad heart-rate URL"),
        (("ble://nonsense",), "#1.hr: bad heart-rate URL"),
        (("sim-hr://?faults=explode@1",), "#1.hr: bad heart-rate URL"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(doc(*straps), "daemon.toml")
        msg = str(err.value)
        assert msg.startswith("daemon.toml: [[treadmill]]") and words in msg, msg
        assert "\n" not in msg


def test_start_hr_device_is_parsed_and_checked() -> None:
    cmd = bridge.parse_command("start", json.dumps(
        {"program": "x", "hr_device": f" {SESSION_STRAP} "}).encode(), 4096)
    assert cmd.hr_device == SESSION_STRAP
    assert bridge.parse_command("start", b'{"program":"x"}', 4096).hr_device is None
    for bad, words in ((5, "must be a string"), ("", "must not be empty"),
                       ("tcp://1.2.3.4:5", "bad heart-rate URL"), ("x" * 300, "longer")):
        with pytest.raises(bridge.CommandInvalid) as err:
            bridge.parse_command("start", json.dumps({"program": "x", "hr_device": bad,
                                                      "request_id": "r"}).encode(), 4096)
        assert err.value.message.startswith("hr_device: ") and words in err.value.message
        assert err.value.request_id == "r"
