"""Fault specs and the effect of every fault on the belt's ground truth (virtual time).
The link-level ``garbage`` fault is exercised over a real framed pipe in test_link.py."""

from __future__ import annotations

import asyncio

import pytest

from treadctl.ftms.belt_direction import decode_belt_direction
from treadctl.ftms.control_point import (
    RequestControl,
    ResultCode,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
)
from treadctl.ftms.machine_status import (
    ControlPermissionLost,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
)
from treadctl.ftms.uuids import CONTROL_POINT, TREADMILL_DATA
from treadctl.profiles import load_profile
from treadctl.simulator import FAULTS, FaultSpecError, FaultWindow, SimTreadmill, parse_faults
from treadctl.types import Direction

BELT = 0xFF01
REF = load_profile("treadctl-reference")


async def until(sim: SimTreadmill, t_s: float) -> None:
    await asyncio.sleep(max(0.0, t_s - sim.now_s()))


async def start_at(host, speed_kmh: float) -> None:
    assert await host.command(RequestControl()) == ResultCode.SUCCESS
    assert await host.command(SetTargetSpeed(speed_kmh)) == ResultCode.SUCCESS
    assert await host.command(StartOrResume()) == ResultCode.SUCCESS


# -- the spec --------------------------------------------------------------------------


def test_parse_faults() -> None:
    plan = parse_faults("runaway@30, link-drop@60+5,safety-key@0.5")
    assert plan.windows == [
        FaultWindow("runaway", 30.0),
        FaultWindow("link-drop", 60.0, 5.0),
        FaultWindow("safety-key", 0.5),
    ]
    assert plan.active("link-drop", 62.0) and not plan.active("link-drop", 65.0)
    assert plan.active("runaway", 1e9)
    assert str(plan) == "runaway@30,link-drop@60+5,safety-key@0.5"
    assert not parse_faults("")
    assert set(FAULTS) >= {
        "link-drop", "telemetry-stop", "stuck-belt", "runaway", "ignore-commands",
        "wrong-direction", "safety-key", "garbage", "slow-acks", "control-lost", "hr-spike",
    }


@pytest.mark.parametrize(
    ("spec", "message", "bad"),
    [
        ("x@3", "unknown fault 'x' (known: link-drop,", "'x'"),
        ("link-drop@5,meteor@3", "unknown fault 'meteor' (known: link-drop,", "meteor"),
        ("runaway", "runaway: missing @SECONDS (expected NAME@SECONDS[+DURATION])", "runaway"),
        ("runaway@soon", "runaway: bad start time 'soon' (expected seconds >= 0)", "'soon'"),
        ("runaway@-1", "runaway: bad start time '-1'", "-1"),
        ("runaway@3+x", "runaway: bad duration 'x' (expected seconds >= 0)", "'x'"),
        ("runaway@nan", "runaway: bad start time 'nan'", "nan"),
        ("runaway@3,,garbage@4", "entry 2 of 3 is empty", "entry 2"),
        ("@3", "entry 1 of 1 has no fault name before '@'", "entry 1"),
    ],
)
def test_bad_fault_specs_name_the_bad_part_once(spec: str, message: str, bad: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        parse_faults(spec)
    text = str(info.value)
    assert message in text
    assert text.count(bad) == 1, text  # the bad part once ...
    if "," in spec or "@" in spec[1:]:
        assert spec not in text  # ... and never the whole spec: the caller shows it
    assert isinstance(info.value, ValueError)


def test_fault_spec_errors_on_the_command_line_say_it_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from treadctl.cli import main

    for argv, prefix in (
        (["sim", "--faults", "bogus@3"], "treadctl: error: --faults: "),
        (
            ["run", "quick-demo", "--device", "sim://?faults=bogus@3"],
            "treadctl: error: bad device URL 'sim://?faults=bogus@3': faults: ",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(prefix + "unknown fault 'bogus' (known: link-drop, "), err
        assert err.count("bogus") == (1 if argv[0] == "sim" else 2), err  # URL + name
        assert len(err.strip().splitlines()) == 1


def test_seed_is_refused_below_zero_by_sim_and_by_the_url_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # random.Random(-1) is Random(1): a negative seed silently meant another seed.
    from treadctl.cli import main
    from treadctl.transport.url import DeviceURLError, parse_device_url

    with pytest.raises(DeviceURLError, match=r"seed must be >= 0, got -1"):
        parse_device_url("sim://?seed=-1")
    # A port-less --listen is refused after the seed: a sim that accepted -1 stops there
    # with another message instead of serving for ever.
    assert main(["sim", "--seed", "-1", "--listen", "tcp://127.0.0.1"]) == 2
    assert capsys.readouterr().err == "treadctl: error: --seed must be >= 0, got -1\n"
    assert parse_device_url("sim://?seed=0").seed == 0


def test_unknown_fault_names_are_refused_everywhere(sim_run) -> None:
    async def body(sim, host):
        with pytest.raises(FaultSpecError):
            sim.inject("meteor")
        with pytest.raises(FaultSpecError):
            sim.fault_active("meteor")

    sim_run("treadctl-reference", body)


# -- effects on the truth --------------------------------------------------------------


def test_link_drop_silences_both_ways_and_the_watchdog_stops_the_belt(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 21.0)
        # The host keeps sending keepalives, but none arrives.
        assert sim.fault_active("link-drop")
        truth = sim.truth()
        assert not truth.running and truth.stop_reason == "watchdog"
        t_wd = next(t for t, e in sim.events if e == "watchdog")
        assert 20.0 < t_wd <= 20.0 + REF.control.link_timeout_ms / 1000 + 1e-6
        assert not [t for t, u, _ in host.notes if 20.0 < t < 25.0]
        await until(sim, 30.0)
        assert sim.truth().speed_kmh == 0.0
        assert [t for t, u, _ in host.notes if u == TREADMILL_DATA and t > 25.0]

    sim_run("treadctl-reference", body, faults="link-drop@20+5")


def test_telemetry_stop_silences_treadmill_data_only(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 40.0)
        assert not [t for t, u, _ in host.notes if u in (TREADMILL_DATA, BELT) and t > 20.0]
        assert [t for t, u, _ in host.notes if u in (TREADMILL_DATA, BELT) and t < 20.0]
        assert sim.truth().speed_kmh == pytest.approx(8.0)  # the belt is fine
        assert await host.command(SetTargetSpeed(5.0)) == ResultCode.SUCCESS  # CP still works

    sim_run("treadctl-reference", body, faults="telemetry-stop@20")


def test_stuck_belt_ignores_targets_and_stop_until_the_watchdog(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 25.0)
        assert await host.command(SetTargetSpeed(4.0)) == ResultCode.SUCCESS
        await until(sim, 35.0)
        assert sim.truth().speed_kmh == pytest.approx(8.0)
        assert await host.command(StopOrPause()) == ResultCode.SUCCESS
        await until(sim, 45.0)
        truth = sim.truth()
        assert not truth.running and truth.speed_kmh == pytest.approx(8.0)  # not obeyed
        host.keepalive = False  # the controller's last resort: drop the link
        t_drop = sim.now_s()
        await until(sim, t_drop + REF.control.link_timeout_ms / 1000 + 8 / 3.6 + 0.2)
        assert sim.truth().speed_kmh == 0.0
        assert "watchdog" in [e for _, e in sim.events]

    sim_run("treadctl-reference", body, faults="stuck-belt@20")


def test_stuck_belt_is_stopped_by_the_safety_key(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 25.0)
        sim.pull_safety_key()
        await until(sim, 25.0 + 8 / 3.6 / REF.motion.estop_decel_mps2 + 1e-6)
        assert sim.truth().speed_kmh == 0.0

    sim_run("treadctl-reference", body, faults="stuck-belt@20")


def test_runaway_accelerates_past_the_target_until_stopped(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 25.0)
        assert sim.truth().speed_kmh == pytest.approx(8.0 + 0.3 * 3.6 * 5.0)
        assert await host.command(SetTargetSpeed(6.0)) == ResultCode.SUCCESS  # ignored
        await until(sim, 28.0)
        v = sim.truth().speed_kmh
        assert v == pytest.approx(8.0 + 0.3 * 3.6 * 8.0)
        assert "fault:runaway" in [e for _, e in sim.events]
        assert host.write(StopOrPause()) == 0
        await until(sim, 28.0 + v / 3.6 / REF.motion.stop_decel_mps2 + 1e-6)
        assert sim.truth().speed_kmh == 0.0
        # A runaway tops out at the motor's limit, the profile's speed.max_kmh.
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 80.0)
        assert sim.truth().speed_kmh == pytest.approx(REF.speed.max_kmh)
        assert max(p.speed_kmh for p in sim.trace) <= REF.speed.max_kmh + 1e-9

    sim_run("treadctl-reference", body, faults="runaway@20")


def test_ignore_commands_acks_but_never_answers_nor_acts(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 21.0)
        n = len(host.responses())
        assert host.write(SetTargetSpeed(4.0)) == 0
        assert host.write(StopOrPause()) == 0
        await until(sim, 30.0)
        assert len(host.responses()) == n
        assert sim.truth().speed_kmh == pytest.approx(8.0) and sim.truth().running
        assert [v for _, u, v in sim.wire_log if u == CONTROL_POINT][-1] == b"\x08\x01"
        host.keepalive = False  # the link watchdog still works
        await until(sim, 40.0)
        assert sim.truth().speed_kmh == 0.0

    sim_run("treadctl-reference", body, faults="ignore-commands@20")


def test_wrong_direction_vendor_characteristic(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert sim.handle_write(BELT, b"\x00") == 0  # forward, please
        assert decode_belt_direction(sim.handle_read(BELT)[1]).reverse is True  # actual
        assert await host.command(SetTargetSpeed(4.0)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 30.0)
        truth = sim.truth()
        assert truth.speed_kmh == pytest.approx(-4.0)
        assert truth.direction is Direction.REVERSE
        assert host.directions()[-1][1] is True

    sim_run("treadctl-reference", body, faults="wrong-direction@0")


def test_wrong_direction_signed_speed(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
        await until(sim, 30.0)
        assert sim.truth().speed_kmh == pytest.approx(-3.0)
        _, td = host.telemetry()[-1]
        assert td.speed_kmh == pytest.approx(-3.0)  # reported as it really is

    sim_run("kinetic-rx2", body, faults="wrong-direction@0")


def test_wrong_direction_starting_mid_run_acts_at_the_next_standstill(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 4.0)
        await until(sim, 30.0)
        assert sim.truth().speed_kmh == pytest.approx(4.0)  # cannot flip while moving
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        await until(sim, 40.0)
        assert sim.truth().direction is Direction.REVERSE  # flipped at standstill
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 60.0)
        assert sim.truth().speed_kmh == pytest.approx(-4.0)

    sim_run("treadctl-reference", body, faults="wrong-direction@20")


def test_safety_key_fault_pulls_and_reinserts_the_key(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 10.0)
        await until(sim, 20.0 + 10 / 3.6 / REF.motion.estop_decel_mps2 + 1e-6)
        truth = sim.truth()
        assert truth.speed_kmh == 0.0 and not truth.safety_key_in
        assert truth.stop_reason == "safety-key"
        assert StoppedBySafetyKey() in host.statuses()
        assert await host.command(StartOrResume()) == ResultCode.OPERATION_FAILED
        await until(sim, 31.0)
        assert sim.truth().safety_key_in and sim.truth().speed_kmh == 0.0
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS

    sim_run("treadctl-reference", body, faults="safety-key@20+10")


def test_slow_acks_delay_responses_but_not_stop(sim_run) -> None:
    async def body(sim, host):
        t0 = sim.now_s()
        assert host.write(RequestControl()) == 0
        slow_s = 3 * REF.control.ack_timeout_ms / 1000
        await until(sim, t0 + slow_s - 0.01)
        assert not host.responses()
        assert host.write(SetTargetSpeed(5.0)) == 0xFE  # still outstanding
        await until(sim, t0 + slow_s + 0.01)
        assert host.responses()[0].result == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(8.0)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 30.0)
        assert host.write(SetTargetSpeed(5.0)) == 0
        assert host.write(StopOrPause()) == 0  # accepted while the set is outstanding
        assert not sim.truth().running  # and acted on at once

    sim_run("treadctl-reference", body, faults="slow-acks@0")


def test_control_lost_revokes_permission_belt_keeps_speed(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 21.0)
        assert ControlPermissionLost() in host.statuses()
        assert not sim.truth().control_granted
        assert await host.command(SetTargetSpeed(4.0)) == ResultCode.CONTROL_NOT_PERMITTED
        assert await host.command(StopOrPause()) == ResultCode.CONTROL_NOT_PERMITTED
        await until(sim, 30.0)
        assert sim.truth().speed_kmh == pytest.approx(8.0)
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StopOrPause()) == ResultCode.SUCCESS
        await until(sim, 40.0)
        assert sim.truth().speed_kmh == 0.0

    sim_run("treadctl-reference", body, faults="control-lost@20")


def test_inject_at_runtime(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 20.0)
        sim.inject("runaway", duration_s=2.0)
        assert sim.fault_active("runaway")
        await until(sim, 22.0)
        assert not sim.fault_active("runaway")
        assert sim.truth().speed_kmh == pytest.approx(8.0 + 0.3 * 3.6 * 2.0)
        await until(sim, 40.0)
        assert sim.truth().speed_kmh == pytest.approx(8.0)  # back under control
        sim.inject("safety-key", at_s=50.0)
        await until(sim, 50.0 + 1e-6)
        assert not sim.truth().safety_key_in

    sim_run("treadctl-reference", body)


def test_hr_spike_raises_the_heart_rate_at_once(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 5.0)
        await until(sim, 19.9)
        assert sim.truth().hr_bpm < 120
        await until(sim, 20.5)
        assert sim.truth().hr_bpm >= 190
        _, td = host.telemetry()[-1]
        assert td.heart_rate_bpm is not None and td.heart_rate_bpm >= 190
        await until(sim, 60.0)
        assert sim.truth().hr_bpm >= 190  # stays up while the fault lasts

    sim_run("treadctl-reference", body, faults="hr-spike@20")


def test_console_stop_button(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 9.0)
        await until(sim, 20.0)
        sim.press_stop()
        truth = sim.truth()
        assert not truth.running and truth.stop_reason == "console"
        assert host.statuses()[-1] == StoppedOrPausedByUser(paused=False)  # at once
        await until(sim, 20.0 + 9 / 3.6 / REF.motion.stop_decel_mps2 + 1e-6)
        assert sim.truth().speed_kmh == 0.0

    sim_run("treadctl-reference", body)
