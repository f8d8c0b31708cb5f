"""Many treadmills in one daemon: isolation, link reconnects, and the gym-wide e-stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import WALK, Probe, make_config, running_daemon, until


def _ctrl(daemon: Any, tid: str) -> Any:
    ctrl = daemon.lanes[tid].controller
    assert ctrl is not None
    return ctrl


def _running(daemon: Any, tid: str) -> bool:
    c = daemon.lanes[tid].controller
    return c is not None and c.snapshot.state.value == "running" and \
        c.transport.sim.truth().speed_kmh > 1.0


async def test_link_loss_and_crash_in_one_lane_do_not_touch_the_others(
        mosquitto: Any, tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    config = make_config(mosquitto, tmp_path, ids)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        for tid in ("a", "b"):
            assert (await probe.command(tid, "start", {"program": WALK}))["type"] == "ack"
        await until(lambda: _running(daemon, "a") and _running(daemon, "b"), 15, "a+b running")
        b = _ctrl(daemon, "b")
        old_a = _ctrl(daemon, "a")
        mark = probe.mark()

        # Lane a loses its link: disconnected, then back with a fresh link, idle, not moving.
        stream = old_a.transport.stream
        assert stream is not None
        stream.close()  # the cable is pulled: the peer end goes away
        await probe.state("a", lambda s: s["state"] == "disconnected", since=mark)
        await until(lambda: daemon.lanes["a"].controller not in (None, old_a)
                    and daemon.lanes["a"].link_up.is_set(), 15, "a reconnected")
        new_a = _ctrl(daemon, "a")
        assert new_a.snapshot.state.value == "idle" and not new_a.latch.latched
        assert new_a.transport.sim.truth().speed_kmh == 0
        await probe.state("a", lambda s: s["state"] == "idle", since=mark)

        # Lane c's command worker crashes: its belt is latched, the task restarts.
        lane_c = daemon.lanes["c"]
        real_get = lane_c.queue.get
        calls = {"n": 0}

        async def exploding_get() -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return await real_get()

        lane_c.queue.get = exploding_get  # type: ignore[method-assign]
        await probe.send("treadctl/c/cmd/heartbeat", {"request_id": "wake"})
        await probe.event("c", "fault", since=mark)
        await until(lambda: _ctrl(daemon, "c").latch.latched, 10, "c latched")
        reply = await probe.reply("c", "wake", since=mark, within_s=15)
        assert reply["type"] == "ack"  # restarted worker still serves commands

        # b never noticed anything.
        assert _running(daemon, "b") and not b.latch.latched
        assert daemon.lanes["b"].controller is b
        assert not [m for m in probe.messages[mark:] if m.topic == "treadctl/b/state"
                    and m.json["state"] != "running"]


async def test_twenty_treadmills_gym_wide_estop(mosquitto: Any, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    ids = [f"t{i:02d}" for i in range(20)]
    config = make_config(mosquitto, tmp_path, ids)
    async with Probe(mosquitto.port) as probe, running_daemon(config) as daemon:
        replies = await asyncio.gather(
            *(probe.command(tid, "start", {"program": WALK}, within_s=20) for tid in ids))
        assert all(r["type"] == "ack" for r in replies), replies
        await until(lambda: all(_running(daemon, t) for t in ids), 30, "all running")
        mark = probe.mark()
        await probe.send("treadctl/all/cmd/estop", b"")
        await until(lambda: all(abs(_ctrl(daemon, t).transport.sim.truth().speed_kmh) < 0.05
                                for t in ids), 20, "every belt at 0 (sim truth)")
        for tid in ids:
            ctrl = _ctrl(daemon, tid)
            assert ctrl.latch.trip.interlock.value == "gym-estop"
            await probe.state(tid, lambda s: s["state"] == "estopped", since=mark)
            ack = await probe.event(tid, "ack", since=mark)
            assert ack["command"] == "estop" and ack["scope"] == "all"
        # Handled once per daemon, although it reaches the daemon on more than one
        # connection (shared subscription + the e-stop connection): one ack per treadmill.
        # A later command's reply orders after any straggling copy.
        await probe.command(ids[-1], "heartbeat")
        for tid in ids:
            acks = [m for m in probe.messages[mark:] if m.topic == f"treadctl/{tid}/event"
                    and m.json.get("type") == "ack" and m.json.get("command") == "estop"]
            assert len(acks) == 1, (tid, acks)
        assert sum("gym-wide e-stop:" in r.getMessage() for r in caplog.records) == 1
