"""A scripted FTMS host for the simulator tests: it talks to SimTreadmill only through
characteristic values encoded/decoded with treadctl.ftms, on virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from treadctl.clock import run_virtual
from treadctl.control.reverse import reverse_method
from treadctl.ftms.belt_direction import decode_belt_direction
from treadctl.ftms.control_point import (
    ControlPointRequest,
    ControlPointResponse,
    ResultCode,
    decode_control_point_response,
    encode_control_point,
)
from treadctl.ftms.machine_status import MachineStatus, decode_machine_status
from treadctl.ftms.treadmill_data import TreadmillData, decode_treadmill_data
from treadctl.ftms.uuids import CONTROL_POINT, MACHINE_STATUS, TREADMILL_DATA
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill

BELT = 0xFF01


class Host:
    """Records every notification and runs Control Point procedures like a careful client."""

    def __init__(self, sim: SimTreadmill) -> None:
        self.sim = sim
        self.signed = reverse_method(sim.profile).signed_speed
        self.notes: list[tuple[float, int, bytes]] = []
        self._changed = asyncio.Event()
        self.keepalive = True
        sim.attach(self._on_notify)

    def _on_notify(self, uuid: int, value: bytes) -> None:
        self.notes.append((self.sim.now_s(), uuid, value))
        self._changed.set()

    # -- decoded views ------------------------------------------------------------------

    def responses(self) -> list[ControlPointResponse]:
        return [decode_control_point_response(v) for _, u, v in self.notes if u == CONTROL_POINT]

    def statuses(self) -> list[MachineStatus]:
        return [
            decode_machine_status(v, signed_speed=self.signed)
            for _, u, v in self.notes
            if u == MACHINE_STATUS
        ]

    def telemetry(self) -> list[tuple[float, TreadmillData]]:
        fmt = self.sim.profile.quirks.pace_format
        return [
            (t, decode_treadmill_data(v, pace_format=fmt, signed_speed=self.signed))
            for t, u, v in self.notes
            if u == TREADMILL_DATA
        ]

    def directions(self) -> list[tuple[float, bool]]:
        return [(t, decode_belt_direction(v).reverse) for t, u, v in self.notes if u == BELT]

    # -- actions ------------------------------------------------------------------------

    def write(self, req: ControlPointRequest) -> int:
        value = encode_control_point(req, signed_speed=self.signed)
        return self.sim.handle_write(CONTROL_POINT, value)

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def command(self, req: ControlPointRequest, timeout_s: float = 10.0) -> ResultCode:
        """Write, wait for the indicated response, return its result code."""
        before = len(self.responses())
        status = self.write(req)
        assert status == 0, f"ATT status 0x{status:02X} for {req}"
        await self.wait_for(lambda: len(self.responses()) > before, timeout_s)
        resp = self.responses()[before]
        assert resp.request_opcode == req.opcode
        return resp.result

    async def run_keepalive(self) -> None:
        while True:
            if self.keepalive:
                self.sim.host_alive()
            await asyncio.sleep(0.1)


Body = Callable[[SimTreadmill, Host], Awaitable[Any]]


def simulate(profile: str, body: Body, *, faults: str | None = None, seed: int = 0) -> Any:
    """Run ``body(sim, host)`` on virtual time with sim.run() and host keepalives going."""

    async def main() -> Any:
        sim = SimTreadmill(load_profile(profile), faults=faults, seed=seed)
        host = Host(sim)
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(host.run_keepalive())]
        try:
            return await body(sim, host)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    return run_virtual(main)


@pytest.fixture
def sim_run() -> Callable[..., Any]:
    return simulate
