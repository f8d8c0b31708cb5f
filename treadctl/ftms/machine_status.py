"""Fitness Machine Status (0x2ADA): events the machine notifies (stopped by user or safety key,
target changed, control permission lost, ...).

Wire format: uint8 opcode + parameters. Opcodes a treadmill controller acts on get their own
class; the other opcodes FTMS 1.0 defines (bike, rower, targets we do not set) decode to
:class:`OtherStatus` with their raw parameters. Reserved opcodes (0x00, 0x16-0xFE) are errors.

``strict=False`` reads a notification with bytes after its parameters (CITYSPORTS walking
pads send ``04 00 00`` for "started" and ``02 01 00`` for "stopped by user", docs/ftms.md):
the opcode and its parameters are read, the rest ignored, and the value's ``deviations``
names ``status-trailing-bytes``. Everything else is as strict as the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final

from treadctl.ftms._wire import s16, to_int, u8, u16
from treadctl.ftms.errors import ByteData, FTMSDecodeError, FTMSEncodeError, check_size

_NAME: Final = "machine-status"
#: Deviation name (``.deviations`` of a status read with ``strict=False``; docs/ftms.md).
STATUS_TRAILING_BYTES: Final = "status-trailing-bytes"
_TRAILING: Final = (STATUS_TRAILING_BYTES,)

RESET: Final = 0x01
STOPPED_OR_PAUSED_BY_USER: Final = 0x02
STOPPED_BY_SAFETY_KEY: Final = 0x03
STARTED_OR_RESUMED_BY_USER: Final = 0x04
TARGET_SPEED_CHANGED: Final = 0x05
TARGET_INCLINE_CHANGED: Final = 0x06
TARGET_HEART_RATE_CHANGED: Final = 0x09
CONTROL_PERMISSION_LOST: Final = 0xFF
#: Spec opcodes without a class of their own (resistance, power, energy, steps, strides,
#: distance, training time, HR zones, bike simulation, wheel, spin down, cadence).
OTHER_OPCODES: Final = frozenset({0x07, 0x08, *range(0x0A, 0x16)})


@dataclass(frozen=True)
class StatusReset:
    opcode: ClassVar[int] = RESET
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class StoppedOrPausedByUser:
    paused: bool
    opcode: ClassVar[int] = STOPPED_OR_PAUSED_BY_USER
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class StoppedBySafetyKey:
    opcode: ClassVar[int] = STOPPED_BY_SAFETY_KEY
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class StartedOrResumedByUser:
    opcode: ClassVar[int] = STARTED_OR_RESUMED_BY_USER
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class TargetSpeedChanged:
    speed_kmh: float
    opcode: ClassVar[int] = TARGET_SPEED_CHANGED
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class TargetInclineChanged:
    incline_pct: float
    opcode: ClassVar[int] = TARGET_INCLINE_CHANGED
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class TargetHeartRateChanged:
    bpm: int
    opcode: ClassVar[int] = TARGET_HEART_RATE_CHANGED
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class ControlPermissionLost:
    opcode: ClassVar[int] = CONTROL_PERMISSION_LOST
    #: Deviations from FTMS 1.0 this notification used (``strict=False`` only); not compared.
    deviations: tuple[str, ...] | None = field(default=None, compare=False, kw_only=True)


@dataclass(frozen=True)
class OtherStatus:
    """A spec-defined status without its own class; ``params`` are the raw bytes after it."""

    opcode: int
    params: bytes = b""


MachineStatus = (
    StatusReset
    | StoppedOrPausedByUser
    | StoppedBySafetyKey
    | StartedOrResumedByUser
    | TargetSpeedChanged
    | TargetInclineChanged
    | TargetHeartRateChanged
    | ControlPermissionLost
    | OtherStatus
)

_SIZES: Final = {
    RESET: 0,
    STOPPED_OR_PAUSED_BY_USER: 1,
    STOPPED_BY_SAFETY_KEY: 0,
    STARTED_OR_RESUMED_BY_USER: 0,
    TARGET_SPEED_CHANGED: 2,
    TARGET_INCLINE_CHANGED: 2,
    TARGET_HEART_RATE_CHANGED: 1,
    CONTROL_PERMISSION_LOST: 0,
}


def decode_machine_status(
    data: ByteData, *, signed_speed: bool = False, strict: bool = True
) -> MachineStatus:
    """Decode one Machine Status notification; raises only :class:`FTMSDecodeError`.

    ``strict=False`` ignores bytes after the parameters of an opcode with a fixed size and
    names ``status-trailing-bytes`` in the result's ``deviations``."""
    if not data:
        raise FTMSDecodeError(_NAME, "empty notification: no opcode", reason="empty")
    op = data[0]
    if op in OTHER_OPCODES:
        return OtherStatus(op, bytes(data[1:]))
    size = _SIZES.get(op)
    if size is None:
        raise FTMSDecodeError(
            _NAME, f"reserved opcode 0x{op:02x} at offset 0", reason="unsupported"
        )
    dev: tuple[str, ...] | None = None
    if strict or len(data) <= 1 + size:
        check_size(_NAME, data, 1 + size, f"opcode 0x{op:02x} parameters")
    else:
        dev = _TRAILING
    if op == RESET:
        return StatusReset(deviations=dev)
    if op == STOPPED_OR_PAUSED_BY_USER:
        if data[1] not in (1, 2):
            raise FTMSDecodeError(
                _NAME,
                f"stopped-or-paused parameter 0x{data[1]:02x} at offset 1 out of range"
                " (0x01 stop, 0x02 pause)",
                reason="range",
            )
        return StoppedOrPausedByUser(paused=data[1] == 2, deviations=dev)
    if op == STOPPED_BY_SAFETY_KEY:
        return StoppedBySafetyKey(deviations=dev)
    if op == STARTED_OR_RESUMED_BY_USER:
        return StartedOrResumedByUser(deviations=dev)
    if op == TARGET_SPEED_CHANGED:
        return TargetSpeedChanged(
            int.from_bytes(data[1:3], "little", signed=signed_speed) / 100, deviations=dev
        )
    if op == TARGET_INCLINE_CHANGED:
        return TargetInclineChanged(
            int.from_bytes(data[1:3], "little", signed=True) / 10, deviations=dev
        )
    if op == TARGET_HEART_RATE_CHANGED:
        return TargetHeartRateChanged(data[1], deviations=dev)
    return ControlPermissionLost(deviations=dev)


def encode_machine_status(status: MachineStatus, *, signed_speed: bool = False) -> bytes:
    """The notification for ``status``; bad values raise :class:`FTMSEncodeError`."""
    where = f"{_NAME}: {type(status).__name__}"
    if isinstance(status, OtherStatus):
        if status.opcode not in OTHER_OPCODES:
            raise FTMSEncodeError(
                f"{where}.opcode 0x{status.opcode:02x} is not one of the other spec opcodes"
                " (use its own class, or it is reserved)"
            )
        return u8(status.opcode) + bytes(status.params)
    op = u8(status.opcode)
    if isinstance(status, StoppedOrPausedByUser):
        return op + u8(2 if status.paused else 1)
    if isinstance(status, TargetSpeedChanged):
        if signed_speed:
            return op + s16(to_int(f"{where}.speed_kmh", status.speed_kmh, 100, -0x8000, 0x7FFF))
        return op + u16(to_int(f"{where}.speed_kmh", status.speed_kmh, 100, 0, 0xFFFF))
    if isinstance(status, TargetInclineChanged):
        return op + s16(to_int(f"{where}.incline_pct", status.incline_pct, 10, -0x8000, 0x7FFF))
    if isinstance(status, TargetHeartRateChanged):
        return op + u8(to_int(f"{where}.bpm", status.bpm, 1, 0, 0xFF))
    if isinstance(
        status, StatusReset | StoppedBySafetyKey | StartedOrResumedByUser | ControlPermissionLost
    ):
        return op
    raise FTMSEncodeError(f"{_NAME}: not a machine status: {status!r}")
