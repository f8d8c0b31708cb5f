"""A native-protocol driver behind the control core's one surface (``MachineLink``).

``open_transport(url, profile=...)`` returns a :class:`NativeTransport` for a profile whose
``protocol`` is not FTMS; the controller then drives it through :class:`DriverLink`
(``Controller`` picks it from the profile, ``control/machine_link.py``). The controller,
its safety machine, the planner, programs, daemon, store and exports are the same as on
FTMS: this module only translates.

* Setpoints: ``SetTargetSpeed`` (signed: negative is reverse), ``SetTargetInclination``,
  ``StartOrResume`` become the driver's ``set_speed``/``set_incline``/``start``; a
  ``StopOrPause`` (and :meth:`DriverLink.stop_now`) is the driver's ``stop_now``, whose
  bytes are on the wire inside the call, ahead of anything queued.
* Direction: ``write_direction`` is the driver's direction change (refused away from
  measured standstill, confirmed by read-back); ``read_direction`` asks the machine.
* Telemetry arrives as ``TreadmillData`` with a signed speed.
* A danger the driver latches (lanyard, machine fault, NACKs, no reply, a belt that
  stopped on its own, wrong direction, overspeed) goes to the safety machine's ``danger``
  input; a closed link is the transport's link loss. The controller's reset clears the
  driver's latch too (:meth:`DriverLink.reset`), and sends nothing.
* Link health: the driver's poll (or setpoint repeat) is what feeds the machine's own
  watchdog (TrackMaster's Communication Disconnect Stop, Woodway's), so a dead host stops
  the belt; :meth:`NativeTransport.drop` closes the link without a word, for that watchdog.

``sim://`` with a native profile runs the protocol's simulator personality in this
process, over an in-memory byte pipe: the same bytes as over a pty.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from treadctl import ftms
from treadctl.clock import Clock
from treadctl.control.client import CommandError, CommandTimeout, MotionBlocked, Preempted
from treadctl.control.machine import Failure
from treadctl.drivers import base as drv
from treadctl.drivers.base import Danger, Telemetry, TreadmillDriver
from treadctl.profiles import FirmwareProfile
from treadctl.transport.base import LinkLost, Transport, TransportError
from treadctl.transport.stream import ByteStream, memory_pipe
from treadctl.transport.url import DeviceURL
from treadctl.types import Direction

#: How each driver error is a typed command failure for the safety machine. The table
#: stays here, in the adapter, rather than as a ``failure`` on the driver exceptions: the
#: drivers sit below control/ and import nothing from it. Most specific class first.
_FAILURE: tuple[tuple[type[drv.DriverError], Failure], ...] = (
    (drv.NoReply, Failure.TIMEOUT),
    (drv.MachineRefused, Failure.REJECTED),
    (drv.NotConfirmed, Failure.DIRECTION),
    (drv.Refused, Failure.REJECTED),
    (drv.DriverError, Failure.WRITE_FAILED),  # link closed, and anything else
)


def command_error(exc: drv.DriverError) -> CommandError:
    """The controller's typed error for a driver's error."""
    if isinstance(exc, drv.MotionBlocked):
        return MotionBlocked(str(exc))
    if isinstance(exc, drv.Preempted):
        return Preempted(str(exc))
    failure = next(f for cls, f in _FAILURE if isinstance(exc, cls))
    if failure is Failure.TIMEOUT:
        return CommandTimeout(str(exc))
    return CommandError(str(exc), failure=failure)


class NativeTransport(Transport):
    """The link of a native-protocol machine, as the controller's ``Transport``: link
    loss, the escalation's drop, and the byte stream the driver opens. It carries no FTMS:
    an FTMS client on it fails at once (FTMS frames never reach such a machine)."""

    nowait_delivery = "in-call"

    def __init__(self, url: DeviceURL, profile: FirmwareProfile) -> None:
        super().__init__()
        self.url = url
        self.profile = profile
        self.name = url.url
        self.driver: TreadmillDriver | None = None
        #: The in-process personality of a ``sim://`` URL (None on a real link).
        self.personality: Any = None
        self._sim_tasks: list[asyncio.Task[None]] = []

    @property
    def simulated_truth(self) -> Callable[[], Any] | None:
        return self.personality.truth if self.personality is not None else None

    async def open_stream(self) -> ByteStream:
        """The byte stream to the machine (``serial://``, ``tcp://``; ``sim://`` in-process)."""
        if self.url.scheme == "sim":
            return self._open_sim()
        from treadctl.drivers import open_stream

        return await open_stream(self.url.url, self.profile)

    def _open_sim(self) -> ByteStream:
        from treadctl.profiles import load_profile
        from treadctl.simulator.personalities import make_personality, serve_stream

        sim_profile = load_profile(self.url.profile) if self.url.profile else self.profile
        if self.personality is None:  # one machine outlives its links, as in `treadctl sim`
            self.personality = make_personality(
                sim_profile, faults=self.url.faults, seed=self.url.seed
            )
            loop = asyncio.get_running_loop()
            self._sim_tasks.append(loop.create_task(self.personality.run()))
        host, machine = memory_pipe()
        loop = asyncio.get_running_loop()
        self._sim_tasks.append(loop.create_task(serve_stream(self.personality, machine)))
        return host

    def link_lost(self, reason: str) -> None:
        self._lost(reason)

    async def connect(self) -> None:
        """Nothing: :meth:`DriverLink.connect` opens the stream through the driver."""

    async def close(self) -> None:
        for task in self._sim_tasks:
            task.cancel()
        for task in self._sim_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._sim_tasks.clear()

    def _no_ftms(self) -> TransportError:
        return TransportError(
            f"{self.name}: profile {self.profile.name} speaks the {self.profile.protocol}"
            " protocol, not FTMS"
        )

    async def subscribe(self, uuid: int) -> None:
        raise self._no_ftms()

    async def write(self, uuid: int, value: bytes, *, timeout_s: float = 1.0) -> None:
        raise self._no_ftms()

    async def read(self, uuid: int, *, timeout_s: float = 1.0) -> bytes:
        raise self._no_ftms()

    def write_nowait(
        self, uuid: int, value: bytes, *, timeout_s: float = 1.0
    ) -> asyncio.Future[None]:
        raise LinkLost(str(self._no_ftms()))

    def drop(self) -> bool:
        """The escalation's last step. On a machine with its own watchdog
        (``wire.watchdog_ms``): close the link without a word, and the watchdog stops the
        belt. On one without (Biodex, Bertec): cutting the link would leave the belt running
        for good, so the link stays open and the stop goes out again (Bertec repeats its
        setpoint every poll, the request drivers resend an unanswered stop), so a line
        that comes back carries the stop (docs/protocols.md)."""
        if self.driver is None:
            return False
        if self.profile.wire.watchdog_ms > 0:
            self.driver.abort()
            return True
        self.driver.stop_now()
        return False

    @property
    def counters(self) -> dict[str, int]:
        if self.driver is None:
            return {}
        h = self.driver.link_health()
        return {"requests": h.requests, "timeouts": h.timeouts, "nacks": h.nacks,
                "garbage_bytes": h.garbage_bytes}  # fmt: skip


class DriverLink:
    """A native driver as the controller's :class:`~treadctl.control.machine_link.MachineLink`
    (module docstring). Built by the controller: ``DriverLink(transport, profile, clock)``."""

    #: Setpoints and telemetry carry the sign of the direction.
    signed_speed = True
    #: Native protocols have no control to request.
    in_control = True

    def __init__(self, transport: Transport, profile: FirmwareProfile, clock: Clock) -> None:
        if not isinstance(transport, NativeTransport):
            raise TransportError(
                f"profile {profile.name} ({profile.protocol}) needs its native link"
                " (open_transport with the profile)"
            )
        from treadctl.drivers import make_driver_on

        self.transport = transport
        self.profile = profile
        self.clock = clock
        self.driver: TreadmillDriver = make_driver_on(transport.open_stream, profile, clock)
        transport.driver = self.driver
        self.driver.on_telemetry = self._telemetry
        self.driver.on_status = self._danger
        self.driver.on_direction = lambda d: self.on_direction(d)
        self.motion_guard: Callable[[], bool] = lambda: False
        self.on_telemetry: Callable[[ftms.TreadmillData], None] = lambda td: None
        self.on_status: Callable[[ftms.MachineStatus], None] = lambda s: None
        self.on_direction: Callable[[Direction], None] = lambda d: None
        self.on_stop_result: Callable[[ftms.ResultCode], None] = lambda r: None
        self.on_deviation: Callable[[str], None] = lambda name: None
        self.on_danger: Callable[[str, str], None] = lambda kind, detail: None
        self._connected = False
        self._distance_m = 0.0
        self._last_t: float | None = None
        self._last_kmh = 0.0

    @property
    def deviations(self) -> Mapping[str, int]:
        return {}

    # ---------------------------------------------------------------- link
    async def connect(self) -> None:
        try:
            await self.driver.connect()
        except drv.DriverError as exc:
            raise TransportError(
                f"{self.transport.name}: no answer from the {self.profile.protocol} machine"
                f" ({exc})"
            ) from None
        self._connected = True

    async def close(self) -> None:
        await self.driver.close()
        await self.transport.close()

    def _telemetry(self, t: Telemetry) -> None:
        distance = t.distance_m
        if distance is None:
            # The protocol reports no distance in a known unit: integrate the measured
            # speed between readings (docs/protocols.md).
            if self._last_t is not None and t.t > self._last_t:
                self._distance_m += abs(self._last_kmh) / 3.6 * (t.t - self._last_t)
            self._last_t, self._last_kmh = t.t, t.speed_kmh
            distance = self._distance_m
        self.on_telemetry(
            ftms.TreadmillData(
                speed_kmh=t.speed_kmh,
                inclination_pct=t.incline_pct,
                total_distance_m=int(distance),
            )
        )

    def _danger(self, danger: Danger) -> None:
        if danger.kind == "link-lost":
            self.transport_lost(danger.detail)
        else:
            self.on_danger(danger.kind, danger.detail)

    def transport_lost(self, reason: str) -> None:
        assert isinstance(self.transport, NativeTransport)
        self.transport.link_lost(reason)

    def reset(self) -> None:
        """The controller's latch was reset: clear the driver's own (sends nothing)."""
        self.driver.reset_danger()

    # ---------------------------------------------------------------- the stop
    def stop_now(self) -> None:
        self.driver.stop_now()

    def stop_is_ours(self, now: float) -> bool:
        return False  # a native machine's own stop arrives as a danger, never as a status

    # ---------------------------------------------------------------- procedures
    async def request_control(self) -> None:
        """Nothing to request on a native protocol."""

    async def command(self, request: ftms.ControlPointRequest) -> None:
        if isinstance(request, ftms.StopOrPause):
            self.driver.stop_now()
            return
        if isinstance(request, ftms.RequestControl | ftms.ResetRequest):
            return
        if self.motion_guard():
            raise MotionBlocked("latched: nothing that moves the belt is sent")
        try:
            if isinstance(request, ftms.SetTargetSpeed):
                await self.driver.set_speed(request.speed_kmh)
            elif isinstance(request, ftms.SetTargetInclination):
                await self.driver.set_incline(request.incline_pct)
            elif isinstance(request, ftms.StartOrResume):
                await self.driver.start()
            else:
                raise CommandError(
                    f"{type(request).__name__} is not offered by the {self.profile.protocol}"
                    " protocol",
                    failure=Failure.REJECTED,
                )
        except drv.DriverError as exc:
            raise command_error(exc) from None

    async def write_direction(self, direction: Direction) -> None:
        if self.motion_guard():
            raise MotionBlocked("latched: the direction is not changed")
        try:
            await self.driver.set_direction(direction)
        except drv.DriverError as exc:
            raise command_error(exc) from None

    async def read_direction(self) -> Direction:
        try:
            return await self.driver.read_direction()
        except drv.DriverError as exc:
            raise command_error(exc) from None


__all__ = ["DriverLink", "NativeTransport", "command_error"]
