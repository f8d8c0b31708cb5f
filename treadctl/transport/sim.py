"""``sim://``: the simulator in this process, behind the same framing as serial and TCP.

A :class:`SimTreadmill` runs on the running loop's clock (virtual time under
``run_virtual``), its firmware end serves one side of a :func:`memory_pipe`, and this
transport is an ordinary :class:`FramedTransport` over the other side, so ``sim://``
exercises the same framing, CRC and sequence matching as a real serial link.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from treadctl.profiles import DEFAULT_PROFILE, FirmwareProfile, load_profile
from treadctl.transport.framed import FramedTransport
from treadctl.transport.stream import ByteStream, memory_pipe

if TYPE_CHECKING:
    from treadctl.simulator import SimTreadmill


class SimTransport(FramedTransport):
    """An in-process simulated treadmill. ``.sim`` is the simulator (ground truth for tests);
    it exists after :meth:`connect`."""

    def __init__(
        self,
        profile: FirmwareProfile | str | None = None,
        faults: Any = None,
        seed: int = 0,
        quirks: Any = None,
    ) -> None:
        if profile is None:
            profile = DEFAULT_PROFILE
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.faults = faults
        self.seed = seed
        self.quirks = quirks
        name = f"sim://?profile={self.profile.name}"
        super().__init__(self._open, name)
        self._sim: SimTreadmill | None = None
        self._device: ByteStream | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def sim(self) -> SimTreadmill:
        if self._sim is None:
            raise RuntimeError("SimTransport.sim exists only after connect()")
        return self._sim

    @property
    def simulated_truth(self) -> Callable[[], Any] | None:
        return self._sim.truth if self._sim is not None else None

    async def _open(self) -> ByteStream:
        from treadctl.simulator import SimTreadmill, serve_stream

        loop = asyncio.get_running_loop()
        self._sim = sim = SimTreadmill(
            self.profile, faults=self.faults, seed=self.seed, quirks=self.quirks
        )
        host, device = memory_pipe()
        self._device = device
        self._tasks = [
            loop.create_task(sim.run(), name="sim-run"),
            loop.create_task(serve_stream(sim, device), name="sim-serve"),
        ]
        return host

    def unplug(self) -> None:
        """Pull the cable at the treadmill's end (tests: the host sees the link die, the
        firmware sees the host fall silent)."""
        if self._device is not None:
            self._device.close()

    async def close(self) -> None:
        await super().close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
