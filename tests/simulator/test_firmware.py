"""The simulated firmware through its GATT surface: control permission, one outstanding
procedure, ranges, quirks, belt and incline physics, reverse by both methods, the link
watchdog and the safety key. Virtual time; values encoded/decoded with treadctl.ftms."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest

from treadctl.control.reverse import reverse_method
from treadctl.ftms.belt_direction import decode_belt_direction
from treadctl.ftms.control_point import (
    RequestControl,
    ResetRequest,
    ResultCode,
    SetTargetHeartRate,
    SetTargetInclination,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
)
from treadctl.ftms.feature import decode_feature
from treadctl.ftms.machine_status import (
    StartedOrResumedByUser,
    StatusReset,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
    TargetInclineChanged,
    TargetSpeedChanged,
)
from treadctl.ftms.ranges import decode_inclination_range, decode_speed_range
from treadctl.ftms.training_status import TrainingStatusCode, decode_training_status
from treadctl.ftms.treadmill_data import decode_treadmill_data, encode_treadmill_data
from treadctl.ftms.uuids import (
    CONTROL_POINT,
    FEATURE,
    INCLINATION_RANGE,
    SPEED_RANGE,
    TRAINING_STATUS,
    TREADMILL_DATA,
)
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.types import Direction

BELT = 0xFF01
REF = load_profile("treadctl-reference")
RX2 = load_profile("kinetic-rx2")


async def until(sim: SimTreadmill, t_s: float) -> None:
    """Let virtual time run to sim time ``t_s``."""
    await asyncio.sleep(max(0.0, t_s - sim.now_s()))


async def start_at(host, speed_kmh: float) -> None:
    assert await host.command(RequestControl()) == ResultCode.SUCCESS
    assert await host.command(SetTargetSpeed(speed_kmh)) == ResultCode.SUCCESS
    assert await host.command(StartOrResume()) == ResultCode.SUCCESS


def max_abs_accel(trace) -> float:
    """Largest |d speed / dt| between consecutive trace points, in m/s^2."""
    worst = 0.0
    for a, b in itertools.pairwise(trace):
        dt = b.t_s - a.t_s
        if dt > 1e-9:
            worst = max(worst, abs(b.speed_kmh - a.speed_kmh) / 3.6 / dt)
    return worst


def test_request_control_must_come_first(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(SetTargetSpeed(5.0)) == ResultCode.CONTROL_NOT_PERMITTED
        assert await host.command(StartOrResume()) == ResultCode.CONTROL_NOT_PERMITTED
        assert sim.handle_write(BELT, b"\x01") == 0x80  # direction needs control too
        assert not sim.truth().control_granted
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert sim.truth().control_granted
        assert await host.command(SetTargetSpeed(5.0)) == ResultCode.SUCCESS
        assert await host.command(SetTargetHeartRate(120)) == ResultCode.OP_CODE_NOT_SUPPORTED
        # Unknown opcode and malformed parameters are answered, not dropped.
        before = len(host.responses())
        assert sim.handle_write(CONTROL_POINT, b"\x42") == 0
        assert sim.handle_write(CONTROL_POINT, b"\x02\x01") == 0xFE  # still outstanding
        await host.wait_for(lambda: len(host.responses()) > before)
        assert host.responses()[-1].result == ResultCode.OP_CODE_NOT_SUPPORTED
        assert sim.handle_write(CONTROL_POINT, b"\x02\x01") == 0
        await host.wait_for(lambda: len(host.responses()) > before + 1)
        assert host.responses()[-1].result == ResultCode.INVALID_PARAMETER
        assert sim.truth().speed_kmh == 0.0

    sim_run("treadctl-reference", body)


def test_one_outstanding_procedure_but_stop_always_accepted(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 8.0)
        await until(sim, 10.0)
        assert sim.truth().speed_kmh == pytest.approx(8.0)
        assert host.write(SetTargetSpeed(9.0)) == 0
        assert host.write(SetTargetSpeed(10.0)) == 0xFE  # previous not answered yet
        assert host.write(StartOrResume()) == 0xFE
        assert host.write(StopOrPause(pause=True)) == 0xFE  # pause is not the exception
        t_stop = sim.now_s()
        assert host.write(StopOrPause()) == 0  # stop: accepted and acted on at once
        truth = sim.truth()
        assert not truth.running and truth.stop_reason == "user"
        await until(sim, t_stop + 0.5)
        # Both procedures got their response, in order.
        results = [(r.request_opcode, r.result) for r in host.responses()[-2:]]
        assert results == [(0x02, ResultCode.SUCCESS), (0x08, ResultCode.SUCCESS)]
        assert StoppedOrPausedByUser(paused=False) in host.statuses()
        assert sim.truth().speed_kmh < 8.0

    sim_run("treadctl-reference", body)


def test_response_is_indicated_after_ack_delay(sim_run) -> None:
    async def body(sim, host):
        t0 = sim.now_s()
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        t_resp = next(t for t, u, _ in host.notes if u == CONTROL_POINT)
        assert t_resp - t0 == pytest.approx(RX2.control.ack_delay_ms / 1000)

    sim_run("kinetic-rx2", body)


@pytest.mark.parametrize(
    ("profile", "speed", "result"),
    [
        ("treadctl-reference", 18.5, ResultCode.INVALID_PARAMETER),
        ("treadctl-reference", 0.4, ResultCode.INVALID_PARAMETER),
        ("treadctl-reference", 18.0, ResultCode.SUCCESS),
        ("generic-ftms", 0.9, ResultCode.INVALID_PARAMETER),
        ("generic-ftms", 16.01, ResultCode.INVALID_PARAMETER),
    ],
)
def test_speed_range(sim_run, profile: str, speed: float, result: ResultCode) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(speed)) == result
        changed = [s for s in host.statuses() if isinstance(s, TargetSpeedChanged)]
        assert bool(changed) == (result == ResultCode.SUCCESS)

    sim_run(profile, body)


def test_invalid_setpoints_change_nothing(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 6.0)
        await until(sim, 10.0)
        assert await host.command(SetTargetSpeed(25.0)) == ResultCode.INVALID_PARAMETER
        assert await host.command(SetTargetInclination(12.5)) == ResultCode.INVALID_PARAMETER
        assert await host.command(SetTargetInclination(-1.0)) == ResultCode.INVALID_PARAMETER
        await until(sim, 20.0)
        truth = sim.truth()
        assert truth.speed_kmh == pytest.approx(6.0) and truth.incline_pct == 0.0

    sim_run("treadctl-reference", body)


def test_reads_describe_the_machine(sim_run) -> None:
    async def body(sim, host):
        status, value = sim.handle_read(SPEED_RANGE)
        assert status == 0
        rng = decode_speed_range(value)
        assert (rng.min_kmh, rng.max_kmh, rng.increment_kmh) == (0.5, 18.0, 0.1)
        status, value = sim.handle_read(INCLINATION_RANGE)
        assert decode_inclination_range(value).max_pct == 12.0
        feature = decode_feature(sim.handle_read(FEATURE)[1])
        assert feature.can_set_speed and feature.can_set_inclination
        assert feature.supports_total_distance and feature.supports_heart_rate
        assert decode_training_status(sim.handle_read(TRAINING_STATUS)[1]).status == (
            TrainingStatusCode.IDLE
        )
        assert decode_belt_direction(sim.handle_read(BELT)[1]).reverse is False
        assert sim.handle_read(TREADMILL_DATA)[0] == 0x02
        assert sim.handle_read(0x1234)[0] == 0x06
        assert sim.handle_write(FEATURE, b"\x00") == 0x03
        await start_at(host, 5.0)
        assert decode_training_status(sim.handle_read(TRAINING_STATUS)[1]).status == (
            TrainingStatusCode.MANUAL_MODE
        )

    sim_run("treadctl-reference", body)


def test_start_quirk_requires_start_before_speed(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.OPERATION_FAILED
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        assert not sim.truth().paused  # pausing a stopped belt does not start a session
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.OPERATION_FAILED
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        assert StartedOrResumedByUser() in host.statuses()
        # This firmware arms the belt at 0 km/h: the first (signed) setpoint decides.
        assert sim.truth().target_speed_kmh == 0.0
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
        await until(sim, 20.0)
        assert sim.truth().speed_kmh == pytest.approx(3.0)
        # Paused still counts as started; stopped does not.
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(4.0)) == ResultCode.SUCCESS
        assert await host.command(StopOrPause()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(4.0)) == ResultCode.OPERATION_FAILED

    sim_run("kinetic-rx2", body)


def test_speed_rounding_quirk_echoes_the_rounded_target(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(3.07)) == ResultCode.SUCCESS
        assert host.statuses()[-1] == TargetSpeedChanged(3.0)  # kinetic-rx2 rounds down

    sim_run("kinetic-rx2", body)


def test_acceleration_limits_and_time_to_target(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(12.0)) == ResultCode.SUCCESS
        t_start = sim.now_s()
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        ramp_s = 12.0 / 3.6 / REF.motion.accel_mps2
        await until(sim, t_start + ramp_s - 0.5)
        assert sim.truth().speed_kmh < 12.0
        assert sim.truth().accel_mps2 == pytest.approx(REF.motion.accel_mps2)
        await until(sim, t_start + ramp_s + 1e-6)
        assert sim.truth().speed_kmh == pytest.approx(12.0)
        assert sim.truth().accel_mps2 == 0.0
        t_dec = sim.now_s()
        assert await host.command(SetTargetSpeed(5.0)) == ResultCode.SUCCESS
        await until(sim, t_dec + 7.0 / 3.6 / REF.motion.decel_mps2 + 0.1)
        assert sim.truth().speed_kmh == pytest.approx(5.0)
        accel = max_abs_accel(sim.trace)
        assert accel <= max(REF.motion.accel_mps2, REF.motion.decel_mps2) + 1e-6
        assert max(abs(p.speed_kmh) for p in sim.trace) <= 12.0 + 1e-9

    sim_run("treadctl-reference", body)


def test_stop_distance_and_time_follow_stop_decel(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 10.0)
        await until(sim, 30.0)
        d0 = sim.truth().distance_m
        t_stop = sim.now_s()
        assert host.write(StopOrPause()) == 0
        v = 10.0 / 3.6
        a = REF.motion.stop_decel_mps2
        await until(sim, t_stop + v / a - 0.01)
        assert sim.truth().speed_kmh > 0
        await until(sim, t_stop + v / a + 1e-6)
        truth = sim.truth()
        assert truth.speed_kmh == 0.0
        assert truth.distance_m - d0 == pytest.approx(v * v / (2 * a), rel=1e-6)
        assert ("stop" in [e for _, e in sim.events])
        # After a stop the target is 0: Start holds the belt until a speed is set.
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, sim.now_s() + 5.0)
        truth = sim.truth()
        assert truth.running and truth.speed_kmh == 0.0 and truth.target_speed_kmh == 0.0
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
        await until(sim, sim.now_s() + 5.0)
        assert sim.truth().speed_kmh == pytest.approx(3.0)

    sim_run("treadctl-reference", body)


def test_pause_and_resume(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 6.0)
        await until(sim, 10.0)
        t_p = sim.now_s()
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        await until(sim, t_p + 6.0 / 3.6 / REF.motion.decel_mps2 + 0.01)
        truth = sim.truth()
        assert truth.speed_kmh == 0.0 and truth.paused and truth.stop_reason == "pause"
        assert StoppedOrPausedByUser(paused=True) in host.statuses()
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, sim.now_s() + 10.0)
        assert sim.truth().speed_kmh == pytest.approx(6.0)  # resumes at the kept target

    sim_run("treadctl-reference", body)


def test_reset_stops_and_releases_control(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 6.0)
        await until(sim, 10.0)
        assert await host.command(ResetRequest()) == ResultCode.SUCCESS
        assert StatusReset() in host.statuses()
        truth = sim.truth()
        assert not truth.control_granted and not truth.running
        await until(sim, 20.0)
        assert sim.truth().speed_kmh == 0.0
        assert await host.command(StartOrResume()) == ResultCode.CONTROL_NOT_PERMITTED

    sim_run("treadctl-reference", body)


def test_incline_moves_at_motor_rate(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        t0 = sim.now_s()
        assert await host.command(SetTargetInclination(6.0)) == ResultCode.SUCCESS
        assert TargetInclineChanged(6.0) in host.statuses()
        rate = REF.incline.rate_pct_per_s
        await until(sim, t0 + 5.0)
        assert sim.truth().incline_pct == pytest.approx(5.0 * rate, abs=1e-9)
        await until(sim, t0 + 6.0 / rate + 0.01)
        assert sim.truth().incline_pct == pytest.approx(6.0)
        _, td = host.telemetry()[-1]
        assert td.inclination_pct == pytest.approx(6.0)
        assert td.ramp_angle_deg == pytest.approx(math.degrees(math.atan(0.06)), abs=0.05)

    sim_run("treadctl-reference", body)


def test_telemetry_rate_and_content(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 7.2)
        await until(sim, 60.0)
        tel = host.telemetry()
        assert len(tel) == pytest.approx(60.0 * REF.control.telemetry_hz, abs=2)
        _, td = tel[-1]
        assert td.speed_kmh == pytest.approx(7.2)
        assert td.total_distance_m == int(sim.truth().distance_m)
        assert td.elapsed_time_s is not None and 55 <= td.elapsed_time_s <= 60
        assert td.heart_rate_bpm is not None and td.heart_rate_bpm > 100
        assert td.instantaneous_pace == pytest.approx(0.1)  # 7.2 km/h = 0.12 km/min
        # Belt Direction rides along with each telemetry tick on the reference firmware.
        assert len(host.directions()) >= len(tel)

    sim_run("treadctl-reference", body)


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2"])
def test_every_telemetry_record_is_the_full_encoding_of_the_truth(sim_run, profile) -> None:
    """The firmware reuses its last Treadmill Data record and rewrites the distance, heart
    rate and elapsed time in place when only those moved: every record sent must still be
    the canonical encoding of what it carries, and carry the belt's truth at that tick."""
    sent: list[tuple[bytes, object]] = []

    async def body(sim, host):
        inner = sim.notify_target

        def spy(uuid: int, value: bytes) -> None:
            if uuid == TREADMILL_DATA:
                sent.append((value, sim.truth()))
            inner(uuid, value)

        sim.attach(spy)
        signed = reverse_method(sim.profile).signed_speed
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(7.2)) == ResultCode.SUCCESS
        await until(sim, 40.0)
        assert await host.command(SetTargetInclination(2.0)) == ResultCode.SUCCESS
        await until(sim, 70.0)
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        await until(sim, 80.0)
        if signed:
            assert await host.command(SetTargetSpeed(-2.5)) == ResultCode.SUCCESS
        else:
            assert sim.handle_write(BELT, b"\x01") == 0
            assert await host.command(SetTargetSpeed(2.5)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 130.0)
        return signed

    signed = sim_run(profile, body, faults="hr-spike@100+10")
    fmt = load_profile(profile).quirks.pace_format
    assert len(sent) >= 120 * load_profile(profile).control.telemetry_hz
    elapsed, hr = [], []
    for value, truth in sent:
        td = decode_treadmill_data(value, pace_format=fmt, signed_speed=signed)
        assert encode_treadmill_data(td, pace_format=fmt, signed_speed=signed) == value
        speed = truth.speed_kmh if signed else abs(truth.speed_kmh)
        assert td.speed_kmh == pytest.approx(speed, abs=0.006)
        assert td.total_distance_m == int(truth.distance_m)
        assert td.inclination_pct == pytest.approx(truth.incline_pct, abs=0.051)
        assert abs(td.heart_rate_bpm - truth.hr_bpm) <= 6  # the ~1 bpm wobble
        elapsed.append(td.elapsed_time_s)
        hr.append(td.heart_rate_bpm)
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(elapsed))
    assert 115 <= elapsed[-1] <= 121  # running all but the 10 s pause
    assert max(hr) >= 185  # the hr-spike fault


def test_reverse_vendor_characteristic(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 4.0)
        await until(sim, 10.0)
        assert sim.handle_write(BELT, b"\x01") == 0x80  # moving: refused
        assert sim.truth().direction is Direction.FORWARD
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        await until(sim, 15.0)
        assert sim.truth().speed_kmh == 0.0
        assert sim.handle_write(BELT, b"\x02") == 0x80  # not a direction
        n_dir = len(host.directions())
        assert sim.handle_write(BELT, b"\x01") == 0
        assert decode_belt_direction(sim.handle_read(BELT)[1]).reverse is True
        assert host.directions()[n_dir][1] is True  # notified on change, at once
        assert await host.command(SetTargetSpeed(6.5)) == ResultCode.INVALID_PARAMETER
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 40.0)
        truth = sim.truth()
        assert truth.speed_kmh == pytest.approx(-3.0)
        assert truth.direction is Direction.REVERSE
        _, td = host.telemetry()[-1]
        assert td.speed_kmh == pytest.approx(3.0)  # unsigned on the wire; 0xFF01 says which way
        assert host.directions()[-1][1] is True
        # Reverse ramps use the reverse acceleration.
        rev = [p for p in sim.trace if p.speed_kmh < 0]
        assert max_abs_accel(rev) <= REF.reverse.accel_mps2 + 1e-6
        # Direction changed only at standstill.
        for a, b in zip(sim.trace, sim.trace[1:], strict=False):
            if a.direction is not b.direction:
                assert a.speed_kmh == 0.0 and b.speed_kmh == 0.0

    sim_run("treadctl-reference", body)


def test_reverse_signed_speed(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(3.0)) == ResultCode.SUCCESS
        await until(sim, 10.0)
        assert await host.command(SetTargetSpeed(-3.0)) == ResultCode.OPERATION_FAILED
        assert await host.command(StopOrPause(pause=True)) == ResultCode.SUCCESS
        await until(sim, 20.0)
        assert await host.command(SetTargetSpeed(-5.5)) == ResultCode.INVALID_PARAMETER
        assert await host.command(SetTargetSpeed(-2.5)) == ResultCode.SUCCESS
        assert host.statuses()[-1] == TargetSpeedChanged(-2.5)  # signed echo
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        await until(sim, 40.0)
        assert sim.truth().speed_kmh == pytest.approx(-2.5)
        _, td = host.telemetry()[-1]
        assert td.speed_kmh == pytest.approx(-2.5)  # sint16 on the wire
        assert td.instantaneous_pace == 1440  # uint16 s/km quirk
        assert await host.command(SetTargetSpeed(2.5)) == ResultCode.OPERATION_FAILED
        assert sim.handle_read(BELT)[0] == 0x06  # no vendor characteristic here
        for a, b in zip(sim.trace, sim.trace[1:], strict=False):
            if a.direction is not b.direction:
                assert a.speed_kmh == 0.0 and b.speed_kmh == 0.0

    sim_run("kinetic-rx2", body)


def test_forward_only_firmware_has_no_reverse(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert sim.handle_write(BELT, b"\x01") == 0x06
        assert sim.handle_read(BELT)[0] == 0x06
        # A negative speed cannot even be expressed (uint16): a huge value is out of range.
        assert sim.handle_write(CONTROL_POINT, b"\x02\x00\xff") == 0
        await until(sim, 1.0)
        assert host.responses()[-1].result == ResultCode.INVALID_PARAMETER
        await start_at(host, 5.0)
        await until(sim, 30.0)
        assert min(p.speed_kmh for p in sim.trace) >= 0.0

    sim_run("generic-ftms", body)


def test_watchdog_stops_the_belt_when_the_host_falls_silent(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 10.0)
        await until(sim, 30.0)
        host.keepalive = False
        t_silent = sim.now_s()
        await until(sim, t_silent + REF.control.link_timeout_ms / 1000 - 0.2)
        assert sim.truth().running
        await until(sim, t_silent + REF.control.link_timeout_ms / 1000 + 0.05)
        truth = sim.truth()
        assert not truth.running and truth.stop_reason == "watchdog"
        t_wd = next(t for t, e in sim.events if e == "watchdog")
        assert t_wd - t_silent <= REF.control.link_timeout_ms / 1000 + 1e-6
        await until(sim, t_wd + 10.0 / 3.6 / REF.motion.stop_decel_mps2 + 0.01)
        assert sim.truth().speed_kmh == 0.0
        # Control survives; the host may start again once it talks again.
        host.keepalive = True
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS

    sim_run("treadctl-reference", body)


def test_safety_key_emergency_stop_and_start_refused(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 12.0)
        await until(sim, 30.0)
        t_key = sim.now_s()
        sim.pull_safety_key()
        assert StoppedBySafetyKey() in host.statuses()
        await until(sim, t_key + 12.0 / 3.6 / REF.motion.estop_decel_mps2 + 1e-6)
        truth = sim.truth()
        assert truth.speed_kmh == 0.0 and truth.stop_reason == "safety-key"
        assert not truth.safety_key_in
        assert await host.command(StartOrResume()) == ResultCode.OPERATION_FAILED
        sim.insert_safety_key()
        await until(sim, sim.now_s() + 5.0)
        assert sim.truth().speed_kmh == 0.0  # inserting the key never restarts the belt
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS

    sim_run("treadctl-reference", body)


def test_heart_rate_rises_more_backward(sim_run) -> None:
    def steady_hr(direction: bytes) -> float:
        async def body(sim, host):
            assert await host.command(RequestControl()) == ResultCode.SUCCESS
            assert sim.handle_write(BELT, direction) == 0
            assert await host.command(SetTargetSpeed(4.0)) == ResultCode.SUCCESS
            assert await host.command(StartOrResume()) == ResultCode.SUCCESS
            await until(sim, 300.0)
            return sim.truth().hr_bpm

        return float(sim_run("treadctl-reference", body))

    hr_fwd, hr_rev = steady_hr(b"\x00"), steady_hr(b"\x01")
    assert 70 < hr_fwd < hr_rev
    assert (hr_rev - 70) / (hr_fwd - 70) == pytest.approx(1.35, rel=0.02)


def test_same_seed_same_trace(sim_run) -> None:
    async def body(sim, host):
        await start_at(host, 9.0)
        await until(sim, 20.0)
        assert await host.command(SetTargetInclination(3.0)) == ResultCode.SUCCESS
        await until(sim, 40.0)
        return list(sim.trace), list(sim.events)

    first = sim_run("treadctl-reference", body, faults="runaway@25,stuck-belt@30+2")
    second = sim_run("treadctl-reference", body, faults="runaway@25,stuck-belt@30+2")
    assert first == second


def test_signed_speed_reverse_from_rest_and_after_a_stop(sim_run) -> None:
    async def body(sim, host):
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS  # armed at 0
        await until(sim, 5.0)
        assert sim.truth().speed_kmh == 0.0
        assert await host.command(SetTargetSpeed(-1.0)) == ResultCode.SUCCESS  # reverse from rest
        await until(sim, 15.0)
        assert sim.truth().speed_kmh == pytest.approx(-1.0)
        assert await host.command(StopOrPause()) == ResultCode.SUCCESS
        await until(sim, 25.0)
        assert sim.truth().speed_kmh == 0.0
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS  # target 0: holds
        assert await host.command(SetTargetSpeed(-2.0)) == ResultCode.SUCCESS
        await until(sim, 45.0)
        assert sim.truth().speed_kmh == pytest.approx(-2.0)

    sim_run("kinetic-rx2", body)
