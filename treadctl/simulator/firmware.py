"""The simulated treadmill: belt + incline physics, the firmware side of FTMS, the link
watchdog, the safety key and the fault timeline.

Physics is exact and cheap: the belt speed is piecewise linear in time (constant
acceleration between "knees"), so every query or event first advances the state
analytically to ``clock.now()``; the only periodic work is the telemetry timer. Nothing
here knows about frames or sockets: values go in through :meth:`SimTreadmill.handle_write`
/ :meth:`~SimTreadmill.handle_read` and come out through the ``notify`` callback given to
:meth:`~SimTreadmill.attach` (``simulator.link`` puts them on a framed link).

Conventions: ``_v_mps`` is the belt speed MAGNITUDE and ``_dir_actual`` (+1/-1) the way the
motor actually turns; the signed speed is their product. Times in ``trace``, ``events`` and
``wire_log`` are seconds since the simulator was created (the fault-plan time base).

``quirks`` makes the simulated firmware send the FTMS deviations of real machines
(:data:`QUIRKS`, docs/simulator.md "Quirks"): the controller must read them tolerantly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Final, NamedTuple

from treadctl.clock import Clock, LoopClock
from treadctl.control.reverse import reverse_method
from treadctl.ftms import (
    CONTROL_POINT,
    FEATURE,
    INCLINATION_RANGE,
    MACHINE_STATUS,
    SPEED_RANGE,
    TRAINING_STATUS,
    TREADMILL_DATA,
    BeltDirection,
    ControlPermissionLost,
    ControlPointRequest,
    ControlPointResponse,
    FitnessMachineFeature,
    FTMSDecodeError,
    InclinationRange,
    MachineStatus,
    RequestControl,
    ResetRequest,
    ResultCode,
    SetTargetInclination,
    SetTargetSpeed,
    SpeedRange,
    StartedOrResumedByUser,
    StartOrResume,
    StatusReset,
    StopOrPause,
    StoppedBySafetyKey,
    StoppedOrPausedByUser,
    TargetInclineChanged,
    TargetSpeedChanged,
    TrainingStatus,
    TrainingStatusCode,
    TreadmillData,
    decode_control_point,
    encode_belt_direction,
    encode_control_point_response,
    encode_feature,
    encode_inclination_range,
    encode_machine_status,
    encode_speed_range,
    encode_training_status,
    encode_treadmill_data,
    is_stop,
)
from treadctl.ftms.feature import MACHINE_FEATURE_BITS, TARGET_FEATURE_BITS
from treadctl.profiles import FirmwareProfile
from treadctl.simulator.faults import FAULTS, FaultPlan, FaultSpecError, FaultWindow, parse_faults
from treadctl.simulator.heart import HeartModel, Person
from treadctl.transport.framing import FrameCounters
from treadctl.types import KMH_PER_MPS, Direction

# ATT status codes the firmware answers writes/reads with (see docs/reference-firmware.md).
ATT_OK = 0x00
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_NOT_SUPPORTED = 0x06
ATT_REJECTED = 0x80
ATT_PROCEDURE_IN_PROGRESS = 0xFE

#: How hard a runaway belt accelerates past its target.
RUNAWAY_ACCEL_MPS2 = 0.3
#: Heart-rate model: resting value, time constant, ceiling.
HR_REST_BPM = 70.0
HR_TAU_S = 30.0
HR_MAX_BPM = 200.0
#: What the heart rate jumps to during the ``hr-spike`` fault.
HR_SPIKE_BPM = 190.0
#: Backward locomotion costs ~35 % more energy than forward at the same speed
#: (docs/reverse-training.md); the heart model (treadctl/simulator/heart.py) applies it.
REVERSE_EFFORT_FACTOR = 1.35
#: The person on the simulated belt (resting HR 70 bpm, as HR_REST_BPM).
_HEART = HeartModel(Person(hr_rest_bpm=HR_REST_BPM))

#: Firmware quirks (``SimTreadmill(quirks=...)``, ``sim://?quirks=``, ``treadctl sim --quirks``):
#: each makes the simulated firmware send one deviation real treadmills send (docs/ftms.md).
QUIRKS: Final[dict[str, str]] = {
    "step-count": "Treadmill Data sets flag bit 13 and appends a uint24 step count"
    " (CITYSPORTS CS-WP8, FitShow/KingSmith walking pads)",
    "short-record": "Treadmill Data flags announce 31+ bytes, the record is cut at 20"
    " (older Matrix consoles)",
    "status-trailing-bytes": "Machine Status notifications are padded with zeros to 3 bytes"
    " (CITYSPORTS: 04 00 00 started, 02 01 00 stopped by user)",
    "split-records": "every Treadmill Data record is split over two notifications (More Data)",
    "not-available": "inclination, energy per hour and energy per minute carry the"
    " 'data not available' value",
}
#: Step length of the simulated walker/runner, for the ``step-count`` quirk.
STEP_LENGTH_M = 0.7
#: What ATT carries in one notification at the default MTU: ``short-record`` cuts here.
SHORT_RECORD_BYTES = 20


class QuirkSpecError(ValueError):
    """An unknown quirk name."""


def parse_quirks(spec: str | Iterable[str] | None) -> frozenset[str]:
    """``"step-count,short-record"`` (or names) -> the set of quirks; unknown names raise
    :class:`QuirkSpecError`."""
    if spec is None:
        return frozenset()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = frozenset(n.strip() for n in names if n.strip())
    unknown = sorted(out - QUIRKS.keys())
    if unknown:
        raise QuirkSpecError(
            f"unknown quirk {', '.join(map(repr, unknown))} (known: {', '.join(QUIRKS)})"
        )
    return out


_EPS = 1e-9
_DIR_FORWARD = encode_belt_direction(BeltDirection(reverse=False))
_DIR_REVERSE = encode_belt_direction(BeltDirection(reverse=True))


class BeltTruth(NamedTuple):
    """What the belt really does at ``t_s`` (seconds since the simulator was created).

    A NamedTuple rather than a frozen dataclass: one is recorded per telemetry tick, and
    building a tuple costs a quarter of what a frozen dataclass does."""

    t_s: float
    speed_kmh: float  # signed: negative = belt moving backward
    incline_pct: float
    direction: Direction  # actual motor direction
    running: bool  # the firmware considers a session running (not stopped/paused)
    safety_key_in: bool
    control_granted: bool
    stop_reason: str | None  # "user" "pause" "console" "watchdog" "safety-key" "reset" / None
    target_speed_kmh: float = 0.0  # signed target of the firmware (0 when stopped)
    accel_mps2: float = 0.0  # d|speed|/dt of the current piece (+ speeding up)
    distance_m: float = 0.0
    hr_bpm: float = HR_REST_BPM
    paused: bool = False


def _new_truth(fields: tuple[object, ...]) -> BeltTruth:
    return tuple.__new__(BeltTruth, fields)


NotifyFn = Callable[[int, bytes], None]

#: Treadmill Data flags of the simulator's plain record (FTMS 4.9.1.1): bit 0 clear (speed
#: present), 1 clear (no average speed), 2 set (total distance); 8 set (heart rate), 9 clear
#: (no MET), 10 set (elapsed time), 11-13 clear (nothing after the elapsed time).
_PATCH_FLAGS_MASK = 0x3F07
_PATCH_FLAGS = 0x0504


def _patchable_layout(value: bytes, key: tuple[int, int, int, int, int]) -> bool:
    """Whether ``value`` (the encoding of telemetry ``key``) carries the total distance as
    the uint24 at bytes 4..6 and ends with the heart rate (uint8) and the elapsed time
    (uint16), so that a record differing only in those can be made by rewriting them."""
    if len(value) < 10 or (value[0] | value[1] << 8) & _PATCH_FLAGS_MASK != _PATCH_FLAGS:
        return False
    elapsed = min(key[4], 0xFFFF)
    return (
        value[4:7] == min(key[1], 0xFFFFFF).to_bytes(3, "little")
        and value[-3] == key[3]
        and value[-2:] == elapsed.to_bytes(2, "little")
    )


class SimTreadmill:
    """One simulated treadmill with the firmware behaviour of ``profile``.

    Construct it inside the running event loop (or pass ``clock``); drive it with
    :meth:`run` (telemetry, watchdog, fault timeline) and talk to it with
    :meth:`handle_write` / :meth:`handle_read` / :meth:`host_alive`.
    """

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        clock: Clock | None = None,
        faults: FaultPlan | str | None = None,
        seed: int = 0,
        quirks: str | Iterable[str] | None = None,
    ) -> None:
        self.profile = profile
        self.quirks = parse_quirks(quirks)
        self.clock: Clock = clock if clock is not None else LoopClock()
        if faults is None:
            self.plan = FaultPlan()
        elif isinstance(faults, str):
            self.plan = parse_faults(faults)
        else:
            self.plan = FaultPlan(list(faults.windows))
        self.rng = random.Random(seed)
        self._planned = {w.name for w in self.plan.windows}
        self._t0 = self.clock.now()
        self._t = self._t0  # physics advanced up to here (loop time)

        p = profile
        reverse = reverse_method(p)  # the method object, chosen once (control/reverse.py)
        self._signed = reverse.signed_speed
        self._vendor_dir = reverse.vendor_characteristic
        self._dir_uuid = p.reverse.characteristic if self._vendor_dir else None
        self._period_s = 1.0 / p.control.telemetry_hz
        self._mech_max_mps = p.speed.max_kmh / KMH_PER_MPS

        # Belt and incline physics.
        self._v_mps = 0.0
        self._rate_mps2 = 0.0  # signed d|v|/dt of the current piece (for trace)
        self._dir_actual = 1
        self._incline_pct = max(p.incline.min_pct, min(0.0, p.incline.max_pct))
        self._incline_goal = self._incline_pct
        self._distance_m = 0.0
        self._hr_bpm = HR_REST_BPM
        self._hr_noise = 0.0
        self._hr_clock = 0.0
        self._hr_rng = random.Random(seed + 1009)  # its own: fault timing keeps its sequence
        # Caches of the heart model's steady state and lag factor (_integrate).
        self._hr_workload: tuple[float, float, int] | None = None
        self._hr_steady = HR_REST_BPM
        self._hr_lag_dt = 0.0
        self._hr_lag = 0.0
        self._elapsed_s = 0.0

        # Firmware state.
        self._control = False
        self._running = False
        self._paused = False
        self._stop_reason: str | None = None
        self._hard_stop = False  # watchdog stop: overrides a stuck speed controller
        self._key_in = True
        self._dir_cmd = 1
        # Magnitude of the target; None = never set since control/reset (Start then runs
        # at speed.min_kmh), 0 after a stop (Start then holds the belt at 0).
        self._target_kmh: float | None = None
        self._outstanding = 0  # CP procedures whose response is not indicated yet
        self._training: int = TrainingStatusCode.IDLE

        # Link watchdog.
        self._last_alive = self._t0
        self._timeout_s = p.control.link_timeout_ms / 1000
        self._watchdog_handle: asyncio.TimerHandle | None = None

        self._notify: NotifyFn | None = None
        self._td_key: tuple[int, int, int, int, int] | None = None
        self._td_value = b""
        self._td_values: tuple[bytes, ...] = ()
        self._td_patchable = False  # telemetry_values may rewrite fields of _td_value
        self._fault_listeners: list[Callable[[str, bool], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timeline: list[asyncio.TimerHandle] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._running_loop: asyncio.AbstractEventLoop | None = None

        self.trace: list[BeltTruth] = []
        self.wire_log: list[tuple[float, int, bytes]] = []
        self.events: list[tuple[float, str]] = []
        #: Frame counters of the link serving this simulator (set by ``serve_stream``).
        self.link_counters: FrameCounters | None = None
        self._mark()

    # ------------------------------------------------------------------ public API

    def attach(self, notify: NotifyFn | None) -> None:
        """Where NOTIFY values go: ``notify(uuid, value)``; None detaches."""
        self._notify = notify

    @property
    def notify_target(self) -> NotifyFn | None:
        return self._notify

    def now_s(self) -> float:
        """Seconds since the simulator was created (the fault-plan time base)."""
        return self.clock.now() - self._t0

    def truth(self) -> BeltTruth:
        self._advance()
        return self._snapshot()

    def host_alive(self) -> None:
        """A valid host frame arrived (ignored while the link is dropped)."""
        if self.fault_active("link-drop"):
            return
        self._last_alive = self.clock.now()
        if self._watchdog_handle is None and self._running_loop is not None:
            self._arm_watchdog(self._timeout_s)  # it had tripped (or never run): re-arm

    def fault_active(self, name: str) -> bool:
        if name not in self._planned:  # the common case, asked several times per tick
            if name not in FAULTS:
                raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
            return False
        return self.plan.active(name, self.now_s())

    def _fault_at_t(self, name: str) -> bool:
        # Physics asks about the start of the piece being integrated, not about "now":
        # a fault edge inside an advance must not leak backwards in time.
        if name not in self._planned:
            return False
        # Compared in loop time, exactly as _next_edge computes edges.
        t, t0 = self._t, self._t0
        return any(
            w.name == name and t0 + w.start_s <= t < t0 + w.end_s for w in self.plan.windows
        )

    def inject(self, name: str, at_s: float | None = None, duration_s: float | None = None) -> None:
        """Add a fault: from ``at_s`` (default: now) for ``duration_s`` (default: forever)."""
        if name not in FAULTS:
            raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
        window = FaultWindow(name, self.now_s() if at_s is None else at_s, duration_s)
        self.plan.add(window)
        self._planned.add(name)
        if self._running_loop is not None:
            self._schedule_window(window)

    def add_fault_listener(self, fn: Callable[[str, bool], None]) -> None:
        """``fn(name, active)`` at every fault onset/end (the link layer uses this)."""
        self._fault_listeners.append(fn)

    def remove_fault_listener(self, fn: Callable[[str, bool], None]) -> None:
        if fn in self._fault_listeners:
            self._fault_listeners.remove(fn)

    def pull_safety_key(self) -> None:
        self._advance()
        if not self._key_in:
            return
        self._key_in = False
        self._log("safety-key")
        was_active = self._running or self._paused or self._v_mps > 0
        self._running = False
        self._paused = False
        self._stop_reason = "safety-key"
        self._target_kmh = 0.0
        self._halt_incline()
        if was_active:
            self._status(StoppedBySafetyKey())
        self._set_training(TrainingStatusCode.IDLE)
        self._mark()

    def press_stop(self) -> None:
        """The runner presses Stop on the console: a controlled stop the host did not ask
        for, reported as Stopped by User (the speed controller executes it, so a stuck
        belt ignores it like the Stop opcode)."""
        self._advance()
        if not (self._running or self._paused):
            # Nothing to stop, but the console still reports the press: a host about to
            # start the belt must learn that the runner wants it stopped.
            self._log("console-stop")
            self._status(StoppedOrPausedByUser(paused=False))
            return
        self._running = False
        self._paused = False
        self._stop_reason = "console"
        self._target_kmh = 0.0
        self._halt_incline()
        self._log("console-stop")
        self._set_training(TrainingStatusCode.IDLE)
        self._status(StoppedOrPausedByUser(paused=False))
        self._mark()

    def insert_safety_key(self) -> None:
        # EN 957-6: inserting the key never restarts the belt; a new Start is needed.
        self._advance()
        if self._key_in:
            return
        self._key_in = True
        self._log("key-inserted")
        self._mark()

    async def run(self) -> None:
        """Telemetry ticks, link watchdog and fault timeline, until cancelled."""
        loop = asyncio.get_running_loop()
        self._running_loop = loop
        for window in self.plan.windows:
            self._schedule_window(window)
        try:
            # Telemetry runs on the loop's timer in loop time (the clock IS the loop's
            # time, treadctl.clock), first tick one period from now.
            self._next_tick = loop.time() + self._period_s
            self._tick_handle = loop.call_at(self._next_tick, self._telemetry_tick)
            self._arm_watchdog(self._last_alive + self._timeout_s - self.clock.now())
            await loop.create_future()  # everything else runs on timers; wait to be cancelled
        finally:
            if self._watchdog_handle is not None:
                self._watchdog_handle.cancel()
                self._watchdog_handle = None
            if self._tick_handle is not None:
                self._tick_handle.cancel()
                self._tick_handle = None
            for handle in self._timeline:
                handle.cancel()
            self._timeline.clear()
            for task in list(self._tasks):
                task.cancel()
            self._running_loop = None

    # ------------------------------------------------------------------ GATT side

    def handle_write(self, uuid: int, value: bytes) -> int:
        """A host write reached the firmware; returns the ATT status (0 = ok)."""
        value = bytes(value)
        self._advance()
        self.wire_log.append((self.now_s(), uuid, value))
        self.host_alive()  # a write that reached the firmware is a valid host frame
        if uuid == CONTROL_POINT:
            return self._control_point_write(value)
        if self._dir_uuid is not None and uuid == self._dir_uuid:
            return self._direction_write(value)
        if uuid in (FEATURE, SPEED_RANGE, INCLINATION_RANGE, TRAINING_STATUS, TREADMILL_DATA,
                    MACHINE_STATUS):
            return ATT_WRITE_NOT_PERMITTED
        return ATT_NOT_SUPPORTED

    def handle_read(self, uuid: int) -> tuple[int, bytes]:
        """(ATT status, value) of a characteristic read."""
        self._advance()
        p = self.profile
        if uuid == FEATURE:
            return ATT_OK, encode_feature(self._feature())
        if uuid == SPEED_RANGE:
            return ATT_OK, encode_speed_range(
                SpeedRange(p.speed.min_kmh, p.speed.max_kmh, p.speed.increment_kmh)
            )
        if uuid == INCLINATION_RANGE:
            return ATT_OK, encode_inclination_range(
                InclinationRange(p.incline.min_pct, p.incline.max_pct, p.incline.increment_pct)
            )
        if uuid == TRAINING_STATUS:
            return ATT_OK, encode_training_status(TrainingStatus(self._training))
        if self._dir_uuid is not None and uuid == self._dir_uuid:
            return ATT_OK, self._direction_value()
        if uuid in (TREADMILL_DATA, MACHINE_STATUS, CONTROL_POINT):
            return ATT_READ_NOT_PERMITTED, b""
        return ATT_NOT_SUPPORTED, b""

    def _feature(self) -> FitnessMachineFeature:
        m = MACHINE_FEATURE_BITS
        machine = 0
        for name in ("total_distance", "inclination", "pace", "heart_rate", "elapsed_time"):
            machine |= 1 << m[name]
        target = 1 << TARGET_FEATURE_BITS["speed"] | 1 << TARGET_FEATURE_BITS["inclination"]
        return FitnessMachineFeature(machine, target)

    def _direction_value(self) -> bytes:
        return _DIR_REVERSE if self._dir_actual < 0 else _DIR_FORWARD

    def _direction_write(self, value: bytes) -> int:
        if len(value) != 1 or value[0] > 1:
            return ATT_REJECTED
        if not self._control or self._v_mps != 0.0:
            # Only with control and at measured standstill.
            return ATT_REJECTED
        new = -1 if value[0] else 1
        if new != self._dir_cmd:
            self._dir_cmd = new
            self._log(f"direction-cmd:{'reverse' if new < 0 else 'forward'}")
        self._sync_direction()
        self._mark()
        return ATT_OK

    # ------------------------------------------------------------------ control point

    def _control_point_write(self, value: bytes) -> int:
        if self.fault_active("ignore-commands"):
            return ATT_OK  # acked at GATT level, never answered nor acted on
        stop = is_stop(value)
        if self._outstanding and not stop:
            return ATT_PROCEDURE_IN_PROGRESS
        if not value:
            return ATT_REJECTED  # nothing to answer: there is no request opcode
        statuses: list[MachineStatus] = []
        try:
            req = decode_control_point(value, signed_speed=self._signed)
        except FTMSDecodeError as exc:
            result = (
                ResultCode.OP_CODE_NOT_SUPPORTED
                if exc.reason == "unsupported"
                else ResultCode.INVALID_PARAMETER
            )
        else:
            result = self._execute(req, statuses)
        self._mark()
        self._respond(value[0], result, statuses)
        return ATT_OK

    def _respond(self, opcode: int, result: ResultCode, statuses: list[MachineStatus]) -> None:
        delay_s = self.profile.control.ack_delay_ms / 1000
        if self.fault_active("slow-acks"):
            delay_s = 3 * self.profile.control.ack_timeout_ms / 1000
        indication = encode_control_point_response(ControlPointResponse(opcode, result))
        self._outstanding += 1
        self._spawn(self._indicate_later(delay_s, indication, statuses))

    async def _indicate_later(
        self, delay_s: float, indication: bytes, statuses: list[MachineStatus]
    ) -> None:
        try:
            await self.clock.sleep(delay_s)
        finally:
            self._outstanding -= 1
        self._emit(CONTROL_POINT, indication)
        for status in statuses:
            self._status(status)

    def _execute(self, req: ControlPointRequest, statuses: list[MachineStatus]) -> ResultCode:
        if isinstance(req, RequestControl):
            if not self._control:
                self._control = True
                self._log("control")
            return ResultCode.SUCCESS
        if not self._control:
            return ResultCode.CONTROL_NOT_PERMITTED
        if isinstance(req, StopOrPause):
            return self._cmd_stop(req.pause, statuses)
        if isinstance(req, ResetRequest):
            return self._cmd_reset(statuses)
        if isinstance(req, StartOrResume):
            return self._cmd_start(statuses)
        if isinstance(req, SetTargetSpeed):
            return self._cmd_speed(req.speed_kmh, statuses)
        if isinstance(req, SetTargetInclination):
            return self._cmd_incline(req.incline_pct, statuses)
        return ResultCode.OP_CODE_NOT_SUPPORTED  # heart rate, distance, time targets

    def _cmd_stop(self, pause: bool, statuses: list[MachineStatus]) -> ResultCode:
        # A stuck speed controller still answers SUCCESS; the belt simply does not obey.
        was_active = self._running or self._paused
        self._running = False
        self._paused = pause and was_active  # pausing a stopped belt leaves it stopped
        if self._paused:
            self._stop_reason = "pause"
        else:
            if not pause:
                # Target 0: a later Start runs the belt at 0 until a speed is set (a stop
                # never leads to an unasked-for restart at the old speed).
                self._target_kmh = 0.0
            if was_active or self._stop_reason is None:
                self._stop_reason = "user"  # keep why an already stopped belt stopped
        self._halt_incline()
        self._log("pause" if self._paused else "stop")
        self._set_training(TrainingStatusCode.IDLE)
        statuses.append(StoppedOrPausedByUser(paused=self._paused))
        return ResultCode.SUCCESS

    def _cmd_reset(self, statuses: list[MachineStatus]) -> ResultCode:
        self._running = False
        self._paused = False
        self._stop_reason = "reset"
        self._target_kmh = None
        self._control = False
        self._distance_m = 0.0
        self._elapsed_s = 0.0
        self._halt_incline()
        self._log("reset")
        self._set_training(TrainingStatusCode.IDLE)
        statuses.append(StatusReset())
        return ResultCode.SUCCESS

    def _cmd_start(self, statuses: list[MachineStatus]) -> ResultCode:
        if not self._key_in:
            return ResultCode.OPERATION_FAILED
        if self._running:
            return ResultCode.SUCCESS
        if self._target_kmh is None:
            # Firmware that wants Start before any speed arms the belt at 0 km/h and waits
            # for the (signed) setpoint, so the first setpoint decides the direction.
            quirk = self.profile.control.requires_start_before_speed
            self._target_kmh = 0.0 if quirk else self.profile.speed.min_kmh
        self._running = True
        self._paused = False
        self._stop_reason = None
        self._hard_stop = False
        self._sync_direction()
        self._log("start")
        self._set_training(TrainingStatusCode.MANUAL_MODE)
        statuses.append(StartedOrResumedByUser())
        return ResultCode.SUCCESS

    def _cmd_speed(self, speed_kmh: float, statuses: list[MachineStatus]) -> ResultCode:
        p = self.profile
        magnitude = abs(speed_kmh)
        if speed_kmh < 0 and not self._signed:
            return ResultCode.INVALID_PARAMETER
        new_dir = (-1 if speed_kmh < 0 else 1) if self._signed else self._dir_cmd
        if not p.speed.min_kmh - _EPS <= magnitude <= p.speed.max_kmh + _EPS:
            return ResultCode.INVALID_PARAMETER
        if new_dir < 0 and magnitude > p.reverse.max_speed_kmh + _EPS:
            return ResultCode.INVALID_PARAMETER
        if p.control.requires_start_before_speed and not (self._running or self._paused):
            return ResultCode.OPERATION_FAILED
        if self._signed and new_dir != self._dir_cmd:
            if self._v_mps != 0.0:
                return ResultCode.OPERATION_FAILED  # sign change only at measured standstill
            self._dir_cmd = new_dir
            self._log(f"direction-cmd:{'reverse' if new_dir < 0 else 'forward'}")
            self._sync_direction()
        magnitude = self._quantize(magnitude)
        self._target_kmh = magnitude
        echo = self._dir_cmd * magnitude if self._signed else magnitude
        statuses.append(TargetSpeedChanged(echo))
        return ResultCode.SUCCESS

    def _quantize(self, speed_kmh: float) -> float:
        inc = self.profile.speed.increment_kmh
        steps = speed_kmh / inc
        down = self.profile.quirks.speed_rounding == "down"
        n = math.floor(steps + 1e-6) if down else round(steps)
        return round(max(self.profile.speed.min_kmh, n * inc), 2)

    def _cmd_incline(self, incline_pct: float, statuses: list[MachineStatus]) -> ResultCode:
        p = self.profile
        lo, hi = p.incline.min_pct, p.incline.max_pct
        if self._dir_cmd < 0:
            lo, hi = max(lo, p.reverse.min_incline_pct), min(hi, p.reverse.max_incline_pct)
        if not lo - _EPS <= incline_pct <= hi + _EPS:
            return ResultCode.INVALID_PARAMETER
        self._incline_goal = incline_pct
        statuses.append(TargetInclineChanged(incline_pct))
        return ResultCode.SUCCESS

    # ------------------------------------------------------------------ physics

    def _regime(self) -> tuple[float, float]:
        """(goal speed magnitude m/s, rate m/s^2) the belt follows right now."""
        p = self.profile
        v = self._v_mps
        forward = self._dir_actual > 0
        if not self._key_in:
            return 0.0, p.motion.estop_decel_mps2
        if self._hard_stop:
            return 0.0, p.motion.stop_decel_mps2
        if self._fault_at_t("stuck-belt"):
            return v, 0.0
        decel = p.motion.decel_mps2 if forward else p.reverse.decel_mps2
        if not self._running:
            return 0.0, (decel if self._stop_reason == "pause" else p.motion.stop_decel_mps2)
        target_kmh = self._target_kmh or 0.0
        cap_kmh = p.speed.max_kmh if forward else p.reverse.max_speed_kmh
        goal = min(target_kmh, cap_kmh) / KMH_PER_MPS
        accel = p.motion.accel_mps2 if forward else p.reverse.accel_mps2
        if self._fault_at_t("runaway") and v >= goal:
            return self._mech_max_mps, RUNAWAY_ACCEL_MPS2
        return goal, (accel if goal > v else decel)

    def _advance(self) -> None:
        """Bring belt, incline, distance, heart rate and elapsed time up to ``clock.now()``."""
        now = self.clock.now()
        while self._t < now:
            goal, rate = self._regime()
            v = self._v_mps
            # Pieces end at fault edges too, so physics is exact even between timer callbacks.
            edge = self._next_edge()
            end = now if edge is None or edge >= now else edge
            span = end - self._t
            if goal == v or rate == 0.0:
                self._rate_mps2 = 0.0
                self._integrate(span, v, v)
                self._t = end
                if end < now:
                    self._sync_direction()
                    self._mark()
                    continue
                break
            knee = abs(goal - v) / rate
            if knee <= span:
                self._rate_mps2 = rate if goal > v else -rate
                self._integrate(knee, v, goal)
                self._v_mps = goal
                if goal == 0.0:
                    self._sync_direction()
                self._mark()  # a change of acceleration
                continue
            v_end = v + (rate if goal > v else -rate) * span
            self._rate_mps2 = rate if goal > v else -rate
            self._integrate(span, v, v_end)
            self._t = end
            self._v_mps = v_end
            if end < now:
                self._mark()
                continue
            break
        self._t = max(self._t, now)

    def _next_edge(self) -> float | None:
        """The first fault edge (loop time) strictly after ``self._t``, if any."""
        if not self._planned:
            return None
        best: float | None = None
        t, t0 = self._t, self._t0
        for w in self.plan.windows:
            for edge_s in (w.start_s, w.end_s):
                edge = t0 + edge_s
                if t < edge < math.inf and (best is None or edge < best):
                    best = edge
        return best

    def _integrate(self, dt: float, v0: float, v1: float) -> None:
        if dt <= 0:
            return
        self._t += dt
        self._distance_m += 0.5 * (v0 + v1) * dt
        if self._running:
            self._elapsed_s += dt
        # Incline motor: constant rate toward its goal.
        if self._incline_pct != self._incline_goal:
            step = self.profile.incline.rate_pct_per_s * dt
            delta = self._incline_goal - self._incline_pct
            self._incline_pct = self._incline_goal if abs(delta) <= step else (
                self._incline_pct + math.copysign(step, delta)
            )
        # First-order heart-rate response to the workload: the same physiology as the
        # simulated strap (treadctl/simulator/heart.py: ACSM walking/running VO2, reverse +35 %,
        # the fraction of VO2 reserve on the HR reserve), so the console's HR field and a
        # strap agree, and both follow what the HR filter expects of a heart.
        # This runs once per physics piece (about once per telemetry tick), and the workload
        # and the piece length rarely change between pieces: the steady state is computed
        # once per (speed, incline, direction) and the lag factor once per piece length,
        # giving the same values bit for bit as computing both every time.
        speed_kmh = 0.5 * (v0 + v1) * KMH_PER_MPS
        workload = (speed_kmh, self._incline_pct, self._dir_actual)
        if workload != self._hr_workload:
            self._hr_workload = workload
            direction = Direction.REVERSE if self._dir_actual < 0 else Direction.FORWARD
            self._hr_steady = min(
                HR_MAX_BPM, _HEART.steady_state(speed_kmh, self._incline_pct, direction)
            )
        steady = self._hr_steady
        if "hr-spike" in self._planned and self._fault_at_t("hr-spike"):
            steady = max(steady, HR_SPIKE_BPM)
        if dt != self._hr_lag_dt:
            self._hr_lag_dt = dt
            self._hr_lag = 1.0 - math.exp(-dt / HR_TAU_S)
        self._hr_bpm += (steady - self._hr_bpm) * self._hr_lag
        # The console's reading wobbles by ~1 bpm (AR(1), once a second), as a heart does.
        self._hr_clock += dt
        while self._hr_clock >= 1.0:
            self._hr_clock -= 1.0
            self._hr_noise = 0.7 * self._hr_noise + self._hr_rng.gauss(0.0, 0.714)

    def _sync_direction(self) -> None:
        """At standstill the motor takes the commanded direction (inverted by wrong-direction)."""
        if self._v_mps != 0.0:
            return
        wanted = -self._dir_cmd if self._fault_at_t("wrong-direction") else self._dir_cmd
        if wanted != self._dir_actual:
            self._dir_actual = wanted
            self._log(f"direction:{'reverse' if wanted < 0 else 'forward'}")
            if self._dir_uuid is not None and not self.fault_active("telemetry-stop"):
                self._emit(self._dir_uuid, self._direction_value())

    def _halt_incline(self) -> None:
        # ASTM F2115: a stop halts the incline motor too.
        self._incline_goal = self._incline_pct

    def _snapshot(self) -> BeltTruth:
        signed_target = 0.0
        if self._running and self._target_kmh is not None:
            signed_target = self._dir_cmd * self._target_kmh
        # Positional, in field order: one of these is built per telemetry tick.
        return _new_truth((
            self._t - self._t0,
            self._dir_actual * self._v_mps * KMH_PER_MPS,
            self._incline_pct,
            Direction.REVERSE if self._dir_actual < 0 else Direction.FORWARD,
            self._running,
            self._key_in,
            self._control,
            self._stop_reason,
            signed_target,
            self._current_rate(),
            self._distance_m,
            self._hr_bpm,
            self._paused,
        ))

    def _current_rate(self) -> float:
        goal, rate = self._regime()
        if goal == self._v_mps or rate == 0.0:
            return 0.0
        return rate if goal > self._v_mps else -rate

    def _mark(self) -> None:
        self.trace.append(self._snapshot())

    # ------------------------------------------------------------------ outputs

    def _emit(self, uuid: int, value: bytes) -> None:
        if self._notify is None or self.fault_active("link-drop"):
            return
        self._notify(uuid, value)

    def _status(self, status: MachineStatus) -> None:
        value = encode_machine_status(status, signed_speed=self._signed)
        if "status-trailing-bytes" in self.quirks and len(value) < 3:
            value += bytes(3 - len(value))
        self._emit(MACHINE_STATUS, value)

    def _set_training(self, code: int) -> None:
        if code != self._training:
            self._training = code
            self._emit(TRAINING_STATUS, encode_training_status(TrainingStatus(code)))

    def _log(self, what: str) -> None:
        self.events.append((self.clock.now() - self._t0, what))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def telemetry_value(self) -> bytes:
        """The Treadmill Data notification for the current state (the last one of a split
        record under the ``split-records`` quirk: the one with the speed)."""
        return self.telemetry_values()[-1]

    def telemetry_values(self) -> tuple[bytes, ...]:
        """The Treadmill Data notifications of one telemetry tick (one, or two under the
        ``split-records`` quirk), with the firmware's quirks applied.

        Encoding is the costliest part of a telemetry tick, and at a steady pace most
        ticks carry the same wire values: the last encoding is reused while every field's
        wire value (speed, distance, incline, heart rate, elapsed time) is unchanged; pace
        and ramp angle follow from speed and incline. When only the distance, heart rate
        or elapsed time changed (without quirks), their bytes are rewritten in the last
        encoding, which gives the record a full encoding would."""
        speed_cs = round(self._v_mps * (KMH_PER_MPS * 100.0))  # 0.01 km/h, as on the wire
        if self._signed:
            speed_cs *= self._dir_actual
        key = (
            speed_cs,
            int(self._distance_m),
            round(self._incline_pct * 10.0),
            round(self._hr_bpm + self._hr_noise),
            int(self._elapsed_s),
        )
        last = self._td_key
        if key == last:
            return self._td_values
        self._td_key = key
        if (
            self._td_patchable
            and last is not None
            and key[0] == last[0]
            and key[2] == last[2]
            and key[1] >= 0
            and 0 <= key[3] <= 0xFF
        ):
            # Only the distance, heart rate or elapsed time moved (each second, each metre,
            # each wobble of the heart): the same record with those fields' bytes rewritten
            # is the encoding, byte for byte (the layout was checked when it was encoded).
            value = self._td_value
            distance = min(key[1], 0xFFFFFF)
            elapsed = min(key[4], 0xFFFF)
            value = b"".join((
                value[:4], distance.to_bytes(3, "little"), value[7:-3],
                bytes((key[3], elapsed & 0xFF, elapsed >> 8)),
            ))  # fmt: skip
            self._td_value = value
            self._td_values = (value,)
            return self._td_values
        speed_kmh = abs(speed_cs) / 100.0
        fmt = self.profile.quirks.pace_format
        if speed_cs == 0:
            pace = 0.0  # not moving: no pace (devices send 0)
        elif fmt == "uint8-0.1kmpmin":
            pace = round(min(speed_kmh / 60.0, 25.4), 1)
        else:
            pace = float(round(min(3600.0 / speed_kmh, 65535.0)))
        incline = key[2] / 10.0
        td = TreadmillData(
            speed_kmh=speed_cs / 100.0,
            total_distance_m=min(key[1], 0xFFFFFF),
            inclination_pct=incline,
            ramp_angle_deg=round(math.degrees(math.atan(incline / 100.0)), 1),
            instantaneous_pace=pace,
            heart_rate_bpm=key[3],
            elapsed_time_s=min(key[4], 0xFFFF),
        )
        if self.quirks:
            td = self._quirked(td)
        values = self._split(td) if "split-records" in self.quirks else (td,)
        out = tuple(
            encode_treadmill_data(v, pace_format=fmt, signed_speed=self._signed) for v in values
        )
        if "short-record" in self.quirks:
            # Cut like a notification at the default ATT MTU: the flags stay as they were.
            out = tuple(v[:SHORT_RECORD_BYTES] for v in out)
        self._td_values = out
        self._td_value = out[-1]
        self._td_patchable = not self.quirks and _patchable_layout(out[-1], key)
        return out

    def _quirked(self, td: TreadmillData) -> TreadmillData:
        """The record's contents under the value quirks (the framing quirks come later)."""
        changes: dict[str, Any] = {}
        q = self.quirks
        kcal = min(int(self._distance_m * 0.06), 0xFFFE)  # ~60 kcal/km: only a plausible count
        if "step-count" in q:
            changes["step_count"] = min(int(self._distance_m / STEP_LENGTH_M), 0xFFFFFF)
        if "short-record" in q:
            # Like the Matrix console: more fields announced than 20 bytes carry. Speed,
            # distance and incline lie wholly inside the first 20 bytes; energy per hour and
            # minute, heart rate and elapsed time do not.
            changes.update(
                average_speed_kmh=td.speed_kmh,
                positive_elevation_gain_m=0.0, negative_elevation_gain_m=0.0,
                total_energy_kcal=kcal, energy_per_hour_kcal=0, energy_per_minute_kcal=0,
            )
        if "not-available" in q:
            changes.update(
                inclination_pct=None, total_energy_kcal=kcal,
                energy_per_hour_kcal=None, energy_per_minute_kcal=None,
            )
        return dataclasses.replace(td, **changes) if changes else td

    @staticmethod
    def _split(td: TreadmillData) -> tuple[TreadmillData, TreadmillData]:
        """A split record: the first part (More Data set) carries everything but the speed
        and the elapsed time, the last part the speed and the elapsed time."""
        first = dataclasses.replace(td, speed_kmh=None, elapsed_time_s=None)
        last = TreadmillData(speed_kmh=td.speed_kmh, elapsed_time_s=td.elapsed_time_s)
        return first, last

    # ------------------------------------------------------------------ timers

    def _telemetry_tick(self) -> None:
        # A plain timer callback, not a task awaiting sleep(): half the loop overhead per
        # tick, which is most of the cost of an hour on virtual time.
        loop = self._running_loop
        if loop is None:
            return
        self._next_tick += self._period_s
        if self._next_tick < loop.time():
            self._next_tick = loop.time() + self._period_s  # after a stall: no burst of ticks
        self._tick_handle = loop.call_at(self._next_tick, self._telemetry_tick)
        self._advance()
        self._mark()
        if self._notify is None or self.fault_active("telemetry-stop"):
            return
        for value in self.telemetry_values():
            self._emit(TREADMILL_DATA, value)
        if self._dir_uuid is not None:
            self._emit(self._dir_uuid, self._direction_value())

    def _arm_watchdog(self, delay_s: float) -> None:
        loop = self._running_loop
        assert loop is not None
        self._watchdog_handle = loop.call_at(loop.time() + max(delay_s, 0.0), self._watchdog_check)

    def _watchdog_check(self) -> None:
        # A timer callback rather than a sleeping task: it re-arms a few times a second
        # while keepalives flow, so it must be cheap.
        remaining = self._last_alive + self._timeout_s - self.clock.now()
        if remaining > 0:
            self._arm_watchdog(remaining)
            return
        self._watchdog_handle = None  # host_alive() re-arms it
        self._watchdog_trip()

    def _watchdog_trip(self) -> None:
        self._advance()
        if not (self._running or self._paused or self._v_mps > 0):
            return
        self._log("watchdog")
        self._running = False
        self._paused = False
        self._stop_reason = "watchdog"
        self._hard_stop = True
        self._target_kmh = 0.0
        self._halt_incline()
        self._set_training(TrainingStatusCode.IDLE)
        self._status(StoppedOrPausedByUser(paused=False))
        self._mark()

    def _schedule_window(self, window: FaultWindow) -> None:
        loop = self._running_loop
        assert loop is not None
        now = self.now_s()
        if window.start_s >= now:
            self._timeline.append(
                loop.call_later(window.start_s - now, self._fault_edge, window, True)
            )
        elif window.end_s > now:
            self._fault_edge(window, True)  # already inside the window
        if window.duration_s is not None and window.end_s >= now:
            self._timeline.append(
                loop.call_later(window.end_s - now, self._fault_edge, window, False)
            )

    def _fault_edge(self, window: FaultWindow, onset: bool) -> None:
        # Advance with the state as it was just before the edge (exact knee at the edge).
        self._advance()
        name = window.name
        self._log(f"fault:{name}" if onset else f"fault-end:{name}")
        if name == "safety-key":
            if onset:
                self.pull_safety_key()
            else:
                self.insert_safety_key()
        elif name == "control-lost" and onset and self._control:
            self._control = False
            self._status(ControlPermissionLost())
        elif name == "wrong-direction":
            self._sync_direction()
        elif name == "hr-spike" and onset:
            self._hr_bpm = max(self._hr_bpm, HR_SPIKE_BPM)
        for fn in list(self._fault_listeners):
            fn(name, onset)
        self._mark()
