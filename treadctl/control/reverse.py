"""Reverse methods as objects: one per way a firmware is told to run the belt backward.

A profile names its method (``[reverse] method``); :func:`reverse_method` turns that name
into the one object the client, the controller, the simulator, the soak and the tests ask
("does this firmware take a signed speed?", "which characteristic is a direction write?",
"must the direction be read back before a start?"), instead of comparing strings.

A native-protocol driver adds its own method with :func:`register` (docs/architecture.md):
a subclass of :class:`ReverseMethod` whose ``name`` a profile can then use.
"""

from __future__ import annotations

from typing import ClassVar

from treadctl.profiles import NO_REVERSE, FirmwareProfile, ReverseSpec


class ReverseMethod:
    """Forward-only firmware (``method = "none"``); the base of every method."""

    name: ClassVar[str] = NO_REVERSE
    #: The protocols a profile may use the method over (None: every protocol). The profile
    #: loader reads this: a new method is usable in a profile once it is registered.
    protocols: ClassVar[frozenset[str] | None] = None
    #: Profile fields the method needs beyond every reversing profile's (the loader's).
    required_fields: ClassVar[tuple[str, ...]] = ()
    #: Reverse is a negative Set Target Speed, read back as the sign of the measured speed.
    signed_speed: ClassVar[bool] = False
    #: Reverse is a write to a vendor characteristic, read back from it before a start.
    vendor_characteristic: ClassVar[bool] = False
    #: The direction is a command of its own (``write_direction``), sent at standstill
    #: after the dwell and confirmed by read-back before the belt moves.
    writes_direction: ClassVar[bool] = False

    def __init__(self, spec: ReverseSpec) -> None:
        self.spec = spec

    @property
    def supports_reverse(self) -> bool:
        return self.name != NO_REVERSE

    @property
    def direction_uuid(self) -> int | None:
        """The characteristic a direction is written to and read from (None: none)."""
        return self.spec.characteristic if self.vendor_characteristic else None

    def subscriptions(self) -> list[int]:
        """Characteristics to subscribe to beyond the FTMS ones."""
        uuid = self.direction_uuid
        return [uuid] if uuid is not None else []

    def is_direction_write(self, uuid: int) -> bool:
        """Is a host write to ``uuid`` a direction change (a motion write)?"""
        return uuid == self.direction_uuid

    @property
    def reads_back_before_start(self) -> bool:
        """Ask the machine its direction before every start (trust it, not our memory)."""
        return self.writes_direction


class VendorCharacteristic(ReverseMethod):
    """Belt Direction written at standstill to a vendor characteristic (0xFF01), read back."""

    name = "vendor-characteristic"
    protocols = frozenset({"ftms"})
    required_fields = ("reverse.characteristic",)
    vendor_characteristic = True
    writes_direction = True


class SignedSpeed(ReverseMethod):
    """A negative Set Target Speed runs the belt backward; the reported speed is signed."""

    name = "signed-speed"
    protocols = frozenset({"ftms", "woodway", "bertec"})
    signed_speed = True


class DirectionCommand(ReverseMethod):
    """A native protocol's own direction change, sent by its driver at measured standstill
    and read back: Biodex's Set Belt Direction (84h), Woodway's speed command at 0 in the
    new direction, Bertec's sign of the next setpoint. Nothing FTMS-specific to subscribe
    to or sign (the driver's link carries signed speeds)."""

    name = "direction-command"
    protocols = frozenset({"biodex"})
    writes_direction = True


_METHODS: dict[str, type[ReverseMethod]] = {}


def register(method: type[ReverseMethod]) -> type[ReverseMethod]:
    """Add a reverse method (usable as a class decorator). Names are unique."""
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"reverse method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


for _m in (ReverseMethod, VendorCharacteristic, SignedSpeed, DirectionCommand):
    register(_m)
_BUILT_IN = frozenset(_METHODS)


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"reverse method {name!r} is built in")
    _METHODS.pop(name, None)


def methods() -> tuple[str, ...]:
    """Every registered method name."""
    return tuple(_METHODS)


def method_class(name: str) -> type[ReverseMethod] | None:
    """The registered method called ``name`` (None: no such method)."""
    return _METHODS.get(name)


def methods_over(protocol: str) -> tuple[str, ...]:
    """The method names a profile over ``protocol`` may name."""
    return tuple(n for n, m in _METHODS.items() if m.protocols is None or protocol in m.protocols)


def reverse_method(profile: FirmwareProfile) -> ReverseMethod:
    """The method object of ``profile`` (chosen once, where the profile is first used).

    On a native protocol every reversing machine is driven the same way, whatever its
    wire does (the profile's ``method`` says that, e.g. Bertec's signed speeds): the
    driver's direction change at standstill, confirmed by read-back (DirectionCommand)."""
    name: str = profile.reverse.method
    if profile.protocol != "ftms" and name != NO_REVERSE:
        name = DirectionCommand.name
    try:
        cls = _METHODS[name]
    except KeyError:
        raise ValueError(
            f"{profile.name}: unknown reverse method {profile.reverse.method!r}"
        ) from None
    return cls(profile.reverse)


__all__ = [
    "DirectionCommand",
    "ReverseMethod",
    "SignedSpeed",
    "VendorCharacteristic",
    "method_class",
    "methods",
    "methods_over",
    "register",
    "reverse_method",
    "unregister",
]
