"""Reverse methods as objects chosen once from the profile (control/reverse.py)."""

from __future__ import annotations

import dataclasses

import pytest

from treadctl import ftms
from treadctl.control import reverse
from treadctl.control.client import is_motion_write
from treadctl.profiles import load_profile


def test_each_shipped_method_is_one_object() -> None:
    ref, kin, gen = (load_profile(n) for n in ("treadctl-reference", "kinetic-rx2",
                                                "generic-ftms"))
    assert isinstance(reverse.reverse_method(ref), reverse.VendorCharacteristic)
    assert isinstance(reverse.reverse_method(kin), reverse.SignedSpeed)
    m = reverse.reverse_method(gen)
    assert type(m) is reverse.ReverseMethod and not m.supports_reverse
    assert reverse.reverse_method(ref).subscriptions() == [ref.reverse.characteristic]
    assert reverse.reverse_method(kin).subscriptions() == []
    # A direction write is a motion write only where the method writes one.
    uuid = ref.reverse.characteristic
    assert is_motion_write(ref, uuid, b"\x01")
    assert not is_motion_write(kin, uuid, b"\x01")
    assert is_motion_write(kin, ftms.CONTROL_POINT, bytes([ftms.OpCode.START_OR_RESUME]))
    assert not is_motion_write(kin, ftms.CONTROL_POINT, bytes([ftms.OpCode.STOP_OR_PAUSE, 1]))


def test_every_method_a_profile_may_name_is_registered() -> None:
    from treadctl.profiles import list_profiles

    for prof in list_profiles():
        method = reverse.reverse_method(prof)
        if prof.protocol == "ftms" or prof.reverse.method == "none":
            assert method.name == prof.reverse.method, prof.name
        else:
            # Every reversing native machine: its driver's direction change at standstill,
            # read back before the belt moves (whatever its wire does: Bertec's signed speed).
            assert method.name == "direction-command", prof.name
            assert method.writes_direction and method.reads_back_before_start
            assert method.direction_uuid is None and method.subscriptions() == []


def test_a_driver_registers_its_own_method() -> None:
    class BeltLever(reverse.ReverseMethod):
        name = "test-belt-lever"
        signed_speed = True

    reverse.register(BeltLever)
    try:
        prof = load_profile("kinetic-rx2")
        spec = dataclasses.replace(prof.reverse, method="test-belt-lever")  # type: ignore[arg-type]
        got = reverse.reverse_method(dataclasses.replace(prof, reverse=spec))
        assert isinstance(got, BeltLever) and got.signed_speed
        assert "test-belt-lever" in reverse.methods()

        class Clash(reverse.ReverseMethod):
            name = "test-belt-lever"

        with pytest.raises(ValueError, match="already registered"):
            reverse.register(Clash)
    finally:
        reverse._METHODS.pop("test-belt-lever", None)
