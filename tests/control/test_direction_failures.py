"""A failed direction write or read-back trips the interlock of its cause (typed on the
error, not a default): no reply after every send is ``command-timeout``, a read-back that
disagrees or cannot be decoded is ``direction-mismatch``, a write the link refuses is
``command-rejected`` (through the controller over the simulator)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from treadctl import ftms
from treadctl.control.client import CommandError
from treadctl.control.controller import Controller
from treadctl.control.machine import Failure
from treadctl.control.safety import Interlock
from treadctl.transport.base import ResponseTimeout, WriteRejected

from harness import motion_writes_after, program, wait_for, with_sim

PROGRAM = program((20, 4.0, "forward"), (20, 3.0, "reverse"))


def _trip_on_direction_fault(fault: str, expected: Interlock) -> None:
    async def scenario(ctl: Controller, sim: Any) -> None:
        transport = ctl.transport
        uuid = ctl.profile.reverse.characteristic
        real_write, real_read = transport.write, transport.read

        async def write(u: int, value: bytes, *, timeout_s: float = 1.0) -> None:
            if u == uuid and value == b"\x01":  # the reverse command
                if fault == "write-timeout":
                    await asyncio.sleep(timeout_s)
                    raise ResponseTimeout(f"no write-response from 0x{u:04X}")
                if fault == "write-refused":
                    raise WriteRejected(u, 0x80)
            await real_write(u, value, timeout_s=timeout_s)

        async def read(u: int, *, timeout_s: float = 1.0) -> bytes:
            value = await real_read(u, timeout_s=timeout_s)
            if u == uuid and fault == "read-mismatch":
                return ftms.encode_belt_direction(ftms.BeltDirection(reverse=False))
            if u == uuid and fault == "read-garbage":
                return b""
            return value

        transport.write = write  # type: ignore[method-assign]
        transport.read = read  # type: ignore[method-assign]
        session = ctl.start(PROGRAM)
        detected = await wait_for(lambda: ctl.latch.latched, 90)
        assert detected, f"{fault}: nothing tripped; {ctl.snapshot}"
        assert ctl.latch.trip is not None
        assert ctl.latch.trip.interlock is expected, (fault, ctl.latch.trip)
        await asyncio.wait_for(session, 30)
        t_trip = sim.now_s()
        await asyncio.sleep(2.0)
        assert motion_writes_after(sim, t_trip) == []
        assert abs(sim.truth().speed_kmh) == 0.0

    with_sim(scenario)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("write-timeout", Interlock.COMMAND_TIMEOUT),
        ("write-refused", Interlock.COMMAND_REJECTED),
        ("read-mismatch", Interlock.DIRECTION_MISMATCH),
        ("read-garbage", Interlock.DIRECTION_MISMATCH),
    ],
)
def test_a_failed_direction_change_trips_its_cause(fault: str, expected: Interlock) -> None:
    _trip_on_direction_fault(fault, expected)


def test_a_command_error_says_how_it_failed() -> None:
    with pytest.raises(TypeError, match="failure="):
        CommandError("x")
    assert CommandError("x", failure=Failure.TIMEOUT).failure is Failure.TIMEOUT


def test_every_command_error_raise_names_its_failure() -> None:
    """Static: a bare ``CommandError(...)`` anywhere in the tree (it would raise TypeError
    at run time, on an error path) is caught here, not in the field. Calls checked to
    raise TypeError (inside ``with pytest.raises(TypeError)``) are the exception."""
    import ast
    from pathlib import Path

    def bare(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "CommandError"
            and not any(k.arg == "failure" for k in node.keywords)
        )

    root = Path(__file__).resolve().parents[2]
    found = []
    for top in ("treadctl", "soak", "benchmarks", "tests", "fuzz"):
        for path in (root / top).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            expected = set()
            for w in ast.walk(tree):
                if isinstance(w, ast.With) and "raises(TypeError" in ast.unparse(w.items[0]):
                    expected |= {id(n) for n in ast.walk(w) if bare(n)}
            found += [
                f"{path.relative_to(root)}:{n.lineno}"
                for n in ast.walk(tree)
                if bare(n) and id(n) not in expected
            ]
    assert found == [], found
