"""The one surface the control core drives a treadmill through (``MachineLink``).

The controller, and through it the daemon, only ever talk to the machine through this
Protocol: setpoints (speed, incline) and Start/Stop as FTMS control-point requests (the
``treadctl.ftms`` dataclasses are the vocabulary, whatever the wire), the direction, the
stop that always leaves first, and callbacks for telemetry, machine status and the
direction read-back. ``FTMSClient`` (``control/client.py``) implements it over FTMS;
``treadctl.drivers.link.DriverLink`` implements it over a native-protocol driver
(``treadctl/drivers/``). :func:`link_factory_for` picks one from the profile's
``protocol``; ``Controller(link_factory=...)`` can give another (docs/architecture.md).
Link health (keepalive, a deliberate drop, loss reports) stays on the ``Transport`` the
link was built on.

mypy --strict checks that ``FTMSClient`` satisfies this Protocol and that the controller
uses nothing else (``Controller.client`` is typed ``MachineLink``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from treadctl import ftms
from treadctl.profiles import FirmwareProfile
from treadctl.types import Direction

if TYPE_CHECKING:
    from treadctl.clock import Clock
    from treadctl.transport.base import Transport


class MachineLink(Protocol):
    """What a treadmill connection must offer the control core."""

    #: Reverse is a negative speed (and the reported speed is signed).
    signed_speed: bool
    #: Control is held (FTMS Request Control succeeded, or the protocol needs none).
    in_control: bool
    #: Read by the link before any write that can move the belt: True blocks it
    #: (the controller points it at its safety machine's latch).
    motion_guard: Callable[[], bool]
    on_telemetry: Callable[[ftms.TreadmillData], None]
    on_status: Callable[[ftms.MachineStatus], None]
    on_direction: Callable[[Direction], None]
    on_stop_result: Callable[[ftms.ResultCode], None]
    #: Called once per connection and deviation from the protocol the link tolerates.
    on_deviation: Callable[[str], None]
    #: A native machine's danger ``(kind, detail)``: its driver already sent the stop
    #: (the safety machine's ``danger`` input). FTMS reports through ``on_status``.
    on_danger: Callable[[str, str], None]

    @property
    def deviations(self) -> Mapping[str, int]:
        """Deviations seen on this connection, with counts."""
        ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def stop_now(self) -> None:
        """Synchronous: the Stop leaves inside the call, ahead of anything queued."""

    async def command(self, request: ftms.ControlPointRequest) -> None:
        """One procedure (speed, incline, Start, Stop/Pause) to success, or raise
        ``CommandError`` with its typed ``failure``."""

    async def request_control(self) -> None: ...

    async def write_direction(self, direction: Direction) -> None: ...

    async def read_direction(self) -> Direction: ...

    def reset(self) -> None:
        """The controller's latch was reset: clear any latch the link keeps of its own
        (a native driver's danger). Sends nothing; never moves the belt."""

    def stop_is_ours(self, now: float) -> bool:
        """Is a "stopped by user" status arriving now the echo of our own stop?"""
        ...


#: Builds the link of one controller: ``(transport, profile, clock) -> MachineLink``.
LinkFactory = Callable[["Transport", "FirmwareProfile", "Clock"], MachineLink]



def link_factory_for(profile: FirmwareProfile) -> LinkFactory:
    """FTMS for an FTMS profile, the native driver's link for any other."""
    if profile.protocol == "ftms":
        from treadctl.control.client import FTMSClient

        return FTMSClient
    from treadctl.drivers.link import DriverLink

    return DriverLink


__all__ = ["LinkFactory", "MachineLink", "link_factory_for"]
