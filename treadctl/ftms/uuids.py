"""16-bit UUIDs of the Fitness Machine Service and the characteristics treadctl uses."""

from __future__ import annotations

FITNESS_MACHINE_SERVICE = 0x1826
FEATURE = 0x2ACC
TREADMILL_DATA = 0x2ACD
TRAINING_STATUS = 0x2AD3
SPEED_RANGE = 0x2AD4
INCLINATION_RANGE = 0x2AD5
CONTROL_POINT = 0x2AD9
MACHINE_STATUS = 0x2ADA
#: Vendor characteristic of the treadctl reference firmware (uint8: 0 forward, 1 reverse).
BELT_DIRECTION = 0xFF01

_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def full_uuid(short: int) -> str:
    """The 128-bit form of a 16-bit UUID on the Bluetooth base UUID (lower case)."""
    if not 0 <= short <= 0xFFFF:
        raise ValueError(f"not a 16-bit UUID: {short!r}")
    return f"0000{short:04x}{_BASE_SUFFIX}"


def short_uuid(text: str) -> int | None:
    """The 16-bit UUID in ``text`` ("0x2acd", "2ACD", or the full base-UUID form), else None."""
    t = text.strip().lower()
    if len(t) == 36 and t.startswith("0000") and t.endswith(_BASE_SUFFIX):
        t = t[4:8]
    elif t.startswith("0x"):
        t = t[2:]
    if not 1 <= len(t) <= 4:
        return None
    try:
        return int(t, 16)
    except ValueError:
        return None
