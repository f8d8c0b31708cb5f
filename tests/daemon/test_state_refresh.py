"""When the retained ``state`` is republished for the heart rate (docs/mqtt.md, "State"):
its number moves in ``STATE_HR_STEP_BPM`` steps (a heart's wobble of a bpm or two is
telemetry's, and republishing every lane's retained state once a second for it cost the
daemon CPU), its source, quality and whether there is a reading at all are shown at once,
and telemetry carries every reading.

End to end with a real mosquitto and the daemon in this process on jumping virtual time: one
lane (``treadctl-reference`` in-process: its console sends a heart rate that follows the
simulated heart, ~1 bpm wobble), a simulated strap that drops out for good mid-session, an
ungoverned walk (a strap never moves the belt), judged from what a subscriber received.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Msg, Probe, frozen, make_config, virtual_daemon

from soak.mosquitto import Mosquitto
from treadctl import clock
from treadctl.clock import wait_until
from treadctl.daemon.discovery import discovery_messages
from treadctl.daemon.outbound import STATE_HR_STEP_BPM

TID = "lane-1"
DROPOUT_AT_S = 150  # seconds after the strap started (the lane's link came up)
WALK = {"name": "walk", "segments": [
    {"duration_s": 240, "speed_kmh": 4.5, "direction": "forward"}]}  # fmt: skip
#: Fields that say nothing about the heart rate or the belt (they change with every message).
NOISE = {"ts", "link"}
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _picture(m: dict[str, Any]) -> tuple[Any, ...]:
    return (m["hr_source"], m["hr_quality"], m["hr_zone_bpm"], m["hr_bpm"] is None)


async def _scenario(broker: Mosquitto, data_dir: Path) -> list[Msg]:
    config = make_config(broker, data_dir, [TID], devices={TID: "sim://?seed=3"})
    lane = dataclasses.replace(
        config.treadmills[0],
        profile="treadctl-reference",
        hr=f"sim-hr://?faults=dropout@{DROPOUT_AT_S}",
    )
    config = dataclasses.replace(config, treadmills=type(config.treadmills)([lane]))
    probe = Probe(
        broker.port, (f"treadctl/{TID}/state", f"treadctl/{TID}/telemetry", f"treadctl/{TID}/event")
    )
    await frozen(probe.__aenter__())
    try:
        async with virtual_daemon(config) as daemon:
            mark = probe.mark()
            reply = await frozen(probe.command(TID, "start", {"program": WALK}))
            assert reply["type"] == "ack", reply
            ctrl = daemon.lanes[TID].controller
            assert ctrl is not None
            assert await wait_until(lambda: ctrl.snapshot.state.value == "idle", 400, 0.5)
            await frozen(
                probe.wait_for(
                    lambda m: m.topic.endswith("/event") and m.json["type"] == "finished",
                    since=mark,
                    what="finished",
                )
            )
            end = probe.mark()
    finally:
        await frozen(probe.__aexit__(None, None, None))
    return [m for m in probe.messages[mark:end] if not m.retain]


@pytest.fixture(scope="module")
def messages(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> list[Msg]:
    return clock.run(_scenario(mosquitto, tmp_path_factory.mktemp("refresh")), speedup=None)


def _on(messages: list[Msg], kind: str) -> list[dict[str, Any]]:
    return [m.json for m in messages if m.topic == f"treadctl/{TID}/{kind}"]


def test_telemetry_carries_every_reading(messages: list[Msg]) -> None:
    tel = [m for m in _on(messages, "telemetry") if m["hr_bpm"] is not None]
    assert len(tel) > 400, len(tel)  # minutes at 4 Hz with a trusted heart rate
    wobbles = [
        b["hr_bpm"] - a["hr_bpm"]
        for a, b in itertools.pairwise(tel)
        if 0 < abs(b["hr_bpm"] - a["hr_bpm"]) < STATE_HR_STEP_BPM
    ]
    # The heart (and its ~1 bpm wobble) moves telemetry's number all the time.
    assert len(wobbles) > 50, len(wobbles)


def test_a_bpm_wobble_does_not_republish_the_state(messages: list[Msg]) -> None:
    states = _on(messages, "state")
    running = [s for s in states if s["state"] == "running"]
    assert len(running) >= 2, states
    for a, b in itertools.pairwise(states):
        changed = {k for k in b if k not in NOISE and b[k] != a.get(k)}
        if changed == {"hr_bpm"}:  # republished for the heart rate's number alone
            assert a["hr_bpm"] is not None and b["hr_bpm"] is not None, (a, b)
            assert abs(b["hr_bpm"] - a["hr_bpm"]) >= STATE_HR_STEP_BPM, (a, b)
    # ... yet it follows the heart rate: within two steps of telemetry's all the time.
    shown: dict[str, Any] | None = None
    refreshed = 0
    for m in messages:
        if m.topic.endswith("/state"):
            refreshed += shown is not None and m.json["hr_bpm"] != shown["hr_bpm"]
            shown = m.json
        elif (
            m.topic.endswith("/telemetry")
            and shown is not None
            and m.json["hr_bpm"] is not None
            and shown["hr_bpm"] is not None
        ):
            assert abs(m.json["hr_bpm"] - shown["hr_bpm"]) < 2 * STATE_HR_STEP_BPM
    assert refreshed >= 2, refreshed  # the heart rose from rest during the walk


def test_source_and_quality_changes_are_shown_at_once(messages: list[Msg]) -> None:
    """Each change of the heart-rate picture in telemetry (source, quality, zone, a reading
    or none) is in the retained state by the next telemetry message: published in the same
    step as the telemetry that showed it (or before it, when the controller's own tick
    changed it)."""
    changes = 0
    shown: tuple[Any, ...] | None = None  # the picture in the latest state
    last: tuple[Any, ...] | None = None  # ... in the latest telemetry
    pending: tuple[Any, ...] | None = None  # a picture telemetry showed and state not yet
    for m in messages:
        if m.topic.endswith("/state"):
            shown = _picture(m.json)
            if shown == pending:
                pending = None
        elif m.topic.endswith("/telemetry"):
            assert pending is None, f"the state did not show {pending} by the next telemetry"
            picture = _picture(m.json)
            if last is not None and picture != last:
                changes += 1
                if picture != shown:
                    pending = picture
            last = picture
    sources = {m["hr_source"] for m in _on(messages, "telemetry")}
    # The strap's dropout: the console's heart rate took over; both sources were shown.
    assert {"strap", "treadmill"} <= sources, sources
    assert changes >= 1
    states = _on(messages, "state")
    assert {"strap", "treadmill"} <= {s["hr_source"] for s in states}, states


def test_home_assistant_reads_the_moving_heart_rate_from_telemetry() -> None:
    configs = [c for t, c in discovery_messages(TID, programs=[]) if "_heart_rate/" in t]
    assert len(configs) == 1
    assert '"state_topic":"treadctl/lane-1/telemetry"' in configs[0]


def test_the_step_is_documented() -> None:
    text = (DOCS / "mqtt.md").read_text()
    state = text.split("## State", 1)[1].split("\n## ", 1)[0]
    assert f"**{STATE_HR_STEP_BPM} bpm**" in state
    assert f"{STATE_HR_STEP_BPM} bpm steps" in (DOCS / "home-assistant.md").read_text()
