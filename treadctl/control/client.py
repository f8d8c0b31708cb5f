"""FTMS client: control permission, one procedure at a time, and a stop that always leaves first.

Owns the conversation with the Fitness Machine Control Point over a ``Transport``:

* ``command()`` runs one procedure at a time (the FTMS rule), honours the profile's
  minimum command interval and ack timeout, and turns every result code into either
  success or a ``CommandError`` that says which.
* ``stop_now()`` is synchronous: the Stop bytes are handed to the link inside the call,
  ahead of anything queued, even while another procedure waits for its response; the
  waiting procedure is pre-empted.
* ``motion_blocked`` is the latch's last line of defence: while it is set, no opcode or
  write that can move the belt is put on the wire, whoever asks.

Notifications are decoded here and handed up through plain callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable

from treadctl import ftms
from treadctl.clock import Clock
from treadctl.control.machine import Failure
from treadctl.control.reverse import reverse_method
from treadctl.profiles import FirmwareProfile
from treadctl.transport.base import ResponseTimeout, Transport, TransportError, WriteRejected
from treadctl.types import Direction

log = logging.getLogger(__name__)

ATT_PROCEDURE_IN_PROGRESS = 0xFE
#: Sends of one procedure before command-timeout trips: frames lost to line noise are
#: retried; a firmware that stopped answering is detected after this many ack timeouts.
COMMAND_ATTEMPTS = 3

#: The one definition of a "motion write": a control-point opcode that can set the belt
#: moving or change its setpoints (a vendor direction write is one too, see
#: :func:`is_motion_write`). Stop/Pause, Request Control and Reset are not.
MOTION_OPCODES: frozenset[int] = frozenset(
    {
        ftms.OpCode.SET_TARGET_SPEED,
        ftms.OpCode.SET_TARGET_INCLINATION,
        ftms.OpCode.START_OR_RESUME,
    }
)
_MOTION_OPCODES = MOTION_OPCODES


def is_motion_write(profile: FirmwareProfile, uuid: int, value: bytes) -> bool:
    """Could this host write move the belt? (the client blocks these while latched; the
    tests and the soak judge "no motion after a trip" by the same rule)."""
    if reverse_method(profile).is_direction_write(uuid):
        return True
    return uuid == ftms.CONTROL_POINT and bool(value) and value[0] in MOTION_OPCODES


class CommandError(Exception):
    """A control-point procedure did not succeed; ``failure`` says how (typed, so the
    safety machine never has to guess the interlock from the exception's class)."""

    #: Set by the raise (``failure=``) or, for a subclass that is one kind of failure
    #: (:class:`CommandTimeout`, ``DirectionError``), by its class. There is no default:
    #: a guessed ``rejected`` would mislabel a timeout or a failed write.
    failure: Failure

    def __init__(
        self,
        message: str,
        result: ftms.ResultCode | None = None,
        att_status: int | None = None,
        *,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.att_status = att_status
        if failure is not None:
            self.failure = failure
        elif not hasattr(type(self), "failure"):
            raise TypeError(f"{type(self).__name__} needs failure= (how the command failed)")


class CommandTimeout(CommandError):
    """No response within the profile's ack timeout."""

    failure = Failure.TIMEOUT


class MotionBlocked(CommandError):
    """Refused locally: the controller is latched."""

    failure = Failure.BLOCKED


class Preempted(CommandError):
    """A stop went out while this procedure waited for its response."""

    failure = Failure.PREEMPTED


class FTMSClient:
    def __init__(self, transport: Transport, profile: FirmwareProfile, clock: Clock) -> None:
        self.transport = transport
        self.profile = profile
        self.clock = clock
        self.reverse = reverse_method(profile)
        self.signed_speed = self.reverse.signed_speed
        self.pace_format: ftms.PaceFormat = profile.quirks.pace_format
        #: What says motion is blocked: the controller points it at its safety machine's
        #: latch (one copy of the latch; the client only reads it).
        self.motion_guard: Callable[[], bool] = lambda: False
        self.in_control = False
        self.on_telemetry: Callable[[ftms.TreadmillData], None] = lambda td: None
        self.on_status: Callable[[ftms.MachineStatus], None] = lambda s: None
        self.on_direction: Callable[[Direction], None] = lambda d: None
        self.on_stop_result: Callable[[ftms.ResultCode], None] = lambda r: None
        self.decode_errors = 0
        #: Tolerant decoding of what real machines send (docs/ftms.md): ``deviations``
        #: counts each deviation seen; ``on_deviation`` runs once per name per connection.
        self.telemetry = ftms.TelemetryReader(
            pace_format=self.pace_format, signed_speed=self.signed_speed, on_new=self._deviation
        )
        self.deviations = self.telemetry.deviations
        self.on_deviation: Callable[[str], None] = lambda name: None
        self.on_danger: Callable[[str, str], None] = lambda kind, detail: None  # native only
        self.retries = 0
        self.stops_sent = 0
        #: When we last put a Stop or Pause on the wire (a machine status echoing it is ours).
        self.last_stop_sent = -math.inf
        #: Stops and Pauses put on the wire so far, by either path (``stop_now`` or a
        #: ``command``): a motion procedure asked for before one of them is superseded.
        self._stops_on_wire = 0
        self._own_stops: deque[float] = deque(maxlen=8)
        self._lock = asyncio.Lock()
        self._inflight: tuple[int, asyncio.Future[ftms.ResultCode]] | None = None
        self._unanswered: list[tuple[int, float]] = []  # (opcode, sent at) not yet answered
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._last_write = -math.inf
        self._ack_timeout_s = profile.control.ack_timeout_ms / 1000
        self._min_interval_s = profile.control.min_command_interval_ms / 1000
        self._stop_bytes = ftms.encode_control_point(ftms.StopOrPause(pause=False))

    @property
    def motion_blocked(self) -> bool:
        """The latch's last line of defence: no motion write reaches the wire while set."""
        return self.motion_guard()

    # -- link ----------------------------------------------------------------------------
    async def connect(self) -> None:
        self.transport.set_notify_handler(self.on_notification)
        await self.transport.connect()
        uuids = [ftms.TREADMILL_DATA, ftms.MACHINE_STATUS, ftms.CONTROL_POINT]
        uuids.extend(self.reverse.subscriptions())
        for uuid in uuids:
            await self.transport.subscribe(uuid)

    async def close(self) -> None:
        await self.transport.close()

    @property
    def in_flight_opcode(self) -> int | None:
        """The opcode of the procedure on the wire waiting for its answer, or None (what a
        stop would pre-empt now)."""
        inflight = self._inflight
        if inflight is None or inflight[1].done():
            return None
        return inflight[0]

    def on_notification(self, uuid: int, value: bytes) -> None:
        """The transport's notification handler (``connect()`` installs it): Treadmill Data,
        Control Point responses, Machine Status, the reverse method's characteristics. A
        caller that drives the transport itself (a benchmark) installs this one."""
        try:
            if uuid == ftms.TREADMILL_DATA:
                td = self.telemetry.treadmill_data(value)  # None: part of a split record
                if td is not None:
                    self.on_telemetry(td)
            elif uuid == ftms.CONTROL_POINT:
                self._on_response(ftms.decode_control_point_response(value))
            elif uuid == ftms.MACHINE_STATUS:
                status = self.telemetry.machine_status(value)
                if isinstance(status, ftms.ControlPermissionLost):
                    self.in_control = False
                self.on_status(status)
            elif uuid == self.profile.reverse.characteristic and self.profile.supports_reverse:
                reverse = ftms.decode_belt_direction(value).reverse
                self.on_direction(Direction.REVERSE if reverse else Direction.FORWARD)
        except ftms.FTMSDecodeError as exc:
            # Never act on a value we could not decode; count it and carry on.
            self.decode_errors += 1
            log.warning("dropped undecodable notification on 0x%04X: %s", uuid, exc)

    def _deviation(self, name: str) -> None:
        log.warning(
            "this machine sends %s: read tolerantly (reported once per connection, docs/ftms.md)",
            ftms.DEVIATIONS.get(name, name),
        )
        self.on_deviation(name)

    def _on_response(self, resp: ftms.ControlPointResponse) -> None:
        opcode = resp.request_opcode
        for i, (sent_op, _) in enumerate(self._unanswered):
            if sent_op == opcode:
                del self._unanswered[i]
                break
        if not self._unanswered:
            self._all_answered.set()
        inflight = self._inflight
        if inflight is not None and inflight[0] == opcode and not inflight[1].done():
            inflight[1].set_result(resp.result)
        elif opcode == ftms.OpCode.STOP_OR_PAUSE:
            self.on_stop_result(resp.result)  # the answer to a stop_now()

    def _sent(self, opcode: int) -> None:
        self._unanswered.append((opcode, self.clock.now()))
        self._all_answered.clear()

    async def _wait_answered(self) -> None:
        """FTMS allows one procedure at a time, and a stop we sent or a procedure a stop
        pre-empted is still one the firmware will answer: wait for those answers (each
        at most the ack timeout; an unanswered one is then the firmware's business)."""
        while self._unanswered:
            oldest = self._unanswered[0][1]
            remaining = oldest + self._ack_timeout_s - self.clock.now()
            if remaining <= 1e-6:
                self._unanswered.pop(0)
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the inner wait completes, and a stopping task must stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._all_answered.wait()
        self._all_answered.set()

    # -- commands ------------------------------------------------------------------------
    def stop_now(self) -> None:
        """Put a Stop on the wire now, pre-empting whatever waits. Never raises."""
        self.stops_sent += 1
        self._stops_on_wire += 1
        self._last_write = self.last_stop_sent = self.clock.now()
        self._own_stops.append(self._last_write)
        self._sent(ftms.OpCode.STOP_OR_PAUSE)
        try:
            wfut = self.transport.write_nowait(ftms.CONTROL_POINT, self._stop_bytes)
            wfut.add_done_callback(consume_result)
        except Exception as exc:  # the link may be gone; the watchdog is the backstop
            log.warning("stop could not be written: %s", exc)
        if self._inflight is not None and not self._inflight[1].done():
            self._inflight[1].set_exception(Preempted("pre-empted by stop"))

    async def command(self, request: ftms.ControlPointRequest) -> None:
        """Run one control-point procedure to success or raise CommandError.

        A procedure whose answer does not come in time is sent again (COMMAND_ATTEMPTS sends
        in all) before giving up:
        every opcode we use is idempotent (the same setpoint, Start while running, Stop),
        and a single frame lost to line noise is not a reason to stop a runner. A firmware
        that really stopped answering times out twice and trips command-timeout.

        A motion procedure (speed, incline, Start) is never put on the wire after a Stop or
        Pause that left after it was asked for: the lock is released between sends, so a
        controlled Stop queued behind it goes out first, and the stop supersedes it. It
        raises :class:`Preempted` instead (a retried setpoint after our own Stop reached a
        kinetic-rx2 as "speed before Start" and tripped command-rejected, docs/soak.md)."""
        name = type(request).__name__
        stops_before = self._stops_on_wire
        for attempt in range(COMMAND_ATTEMPTS):
            try:
                await self._command_once(request, stops_before)
                return
            except CommandTimeout:
                if attempt == COMMAND_ATTEMPTS - 1:
                    raise
                self.retries += 1
                log.warning("%s not answered; sending it again", name)
            except CommandError as exc:
                if attempt and exc.att_status == ATT_PROCEDURE_IN_PROGRESS:
                    # Still busy with an earlier send: the firmware is too slow, not refusing.
                    raise CommandTimeout(
                        f"{name}: firmware still busy after the ack timeout"
                    ) from None
                raise

    async def _command_once(self, request: ftms.ControlPointRequest, stops_before: int) -> None:
        opcode = request.opcode
        motion = opcode in _MOTION_OPCODES
        if motion and self.motion_blocked:
            raise MotionBlocked(f"{type(request).__name__} refused: controller is latched")
        async with self._lock:
            # Until the firmware has answered everything and the interval has passed, with
            # no await between the last check and the write (a stop_now() may slip in).
            while True:
                await self._wait_answered()
                wait = self._last_write + self._min_interval_s - self.clock.now()
                if wait > 1e-6:
                    await asyncio.sleep(wait)
                    continue
                if not self._unanswered:
                    break
            # Re-check: a latch may have tripped while we waited our turn.
            if motion and self.motion_blocked:
                raise MotionBlocked(f"{type(request).__name__} refused: controller is latched")
            if motion and self._stops_on_wire != stops_before:
                raise Preempted(f"{type(request).__name__}: superseded by a stop sent after it")
            payload = ftms.encode_control_point(request, signed_speed=self.signed_speed)
            fut: asyncio.Future[ftms.ResultCode] = asyncio.get_running_loop().create_future()
            self._inflight = (opcode, fut)
            self._last_write = self.clock.now()
            self._sent(opcode)
            if opcode == ftms.OpCode.STOP_OR_PAUSE:
                self._stops_on_wire += 1
                self.last_stop_sent = self._last_write
                self._own_stops.append(self._last_write)
            try:
                wfut = self.transport.write_nowait(ftms.CONTROL_POINT, payload)
                wfut.add_done_callback(lambda w: _fail_on_write_error(w, fut))
                async with asyncio.timeout(self._ack_timeout_s):
                    result = await fut
            except TimeoutError:
                raise CommandTimeout(
                    f"{type(request).__name__}: no response within {self._ack_timeout_s:.2f} s"
                ) from None
            except WriteRejected as exc:
                raise CommandError(
                    f"{type(request).__name__}: {exc}",
                    att_status=exc.status,
                    failure=Failure.WRITE_FAILED,
                ) from None
            except TransportError as exc:
                raise CommandError(
                    f"{type(request).__name__}: link error: {exc}", failure=Failure.WRITE_FAILED
                ) from None
            finally:
                self._inflight = None
        if result != ftms.ResultCode.SUCCESS:
            raise CommandError(
                f"{type(request).__name__}: {result.name.lower()}", result, failure=Failure.REJECTED
            )
        if opcode == ftms.OpCode.REQUEST_CONTROL:
            self.in_control = True

    def reset(self) -> None:
        """FTMS keeps no latch of its own (motion blocking reads the safety machine)."""

    def stop_is_ours(self, now: float) -> bool:
        """Is a 'stopped or paused' status arriving now the echo of a stop we sent?

        Each stop we sent explains at most one such status, and only shortly after it was
        sent; anything else was done at the machine."""
        window = self._ack_timeout_s + self.profile.control.ack_delay_ms / 1000 + 0.5
        sent = self._own_stops
        while sent and now - sent[0] > window:
            sent.popleft()
        if sent:
            sent.popleft()
            return True
        return False

    async def request_control(self) -> None:
        await self.command(ftms.RequestControl())

    async def write_direction(self, direction: Direction) -> None:
        """Vendor Belt Direction write (only at standstill; the firmware enforces it too)."""
        if self.motion_blocked:
            raise MotionBlocked("direction change refused: controller is latched")
        value = ftms.encode_belt_direction(ftms.BeltDirection(direction is Direction.REVERSE))
        uuid = self.profile.reverse.characteristic
        try:
            try:
                await self.transport.write(uuid, value, timeout_s=self._ack_timeout_s)
            except ResponseTimeout:  # lost write-response: the write is idempotent, once more
                self.retries += 1
                await self.transport.write(uuid, value, timeout_s=self._ack_timeout_s)
        except ResponseTimeout as exc:  # no reply after every send
            raise CommandTimeout(f"direction write: {exc}") from None
        except TransportError as exc:  # the link refused the bytes
            att_status = exc.status if isinstance(exc, WriteRejected) else None
            raise CommandError(
                f"direction write: {exc}", att_status=att_status, failure=Failure.WRITE_FAILED
            ) from None

    async def read_direction(self) -> Direction:
        uuid = self.profile.reverse.characteristic
        try:
            try:
                value = await self.transport.read(uuid, timeout_s=self._ack_timeout_s)
            except ResponseTimeout:  # a read is harmless to repeat once
                self.retries += 1
                value = await self.transport.read(uuid, timeout_s=self._ack_timeout_s)
            reverse = ftms.decode_belt_direction(value).reverse
        except ResponseTimeout as exc:  # no reply after every send
            raise CommandTimeout(f"direction read-back: {exc}") from None
        except ftms.FTMSDecodeError as exc:  # a read-back that cannot be decoded
            raise CommandError(f"direction read-back: {exc}", failure=Failure.DIRECTION) from None
        except TransportError as exc:  # the link refused the read
            raise CommandError(
                f"direction read-back: {exc}", failure=Failure.WRITE_FAILED
            ) from None
        return Direction.REVERSE if reverse else Direction.FORWARD


def consume_result(fut: asyncio.Future[None]) -> None:
    """Done-callback for fire-and-forget writes: retrieve the outcome so nothing warns."""
    with contextlib.suppress(BaseException):
        fut.result()


def _fail_on_write_error(wfut: asyncio.Future[None], fut: asyncio.Future[ftms.ResultCode]) -> None:
    if wfut.cancelled():
        return
    exc = wfut.exception()
    if exc is not None and not fut.done():
        fut.set_exception(exc)
