"""Simulator personalities: the same physics and faults as the FTMS simulator, speaking a
maker's own bytes (``treadctl sim --profile biodex-rtm400 --pty``). One module per protocol;
docs/protocols.md says what each models.

The servers share ONE machine between successive host connections, created at the host's
first contact (as the FTMS servers do): a treadmill outlives its link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable

from treadctl.profiles import FirmwareProfile
from treadctl.simulator.faults import FaultPlan
from treadctl.simulator.link import PtyByteStream
from treadctl.simulator.personalities.base import EVENTS_ENV, Personality
from treadctl.simulator.personalities.bertec import BertecPersonality
from treadctl.simulator.personalities.biodex import BiodexPersonality
from treadctl.simulator.personalities.trackmaster import TrackMasterPersonality
from treadctl.simulator.personalities.woodway import WoodwayPersonality
from treadctl.transport.stream import AsyncioByteStream, ByteStream

__all__ = ["EVENTS_ENV", "Personality", "make_personality", "serve_pty", "serve_tcp"]

MakePersonality = Callable[[], Personality]


def make_personality(
    profile: FirmwareProfile, *, faults: FaultPlan | str | None = None, seed: int = 0
) -> Personality:
    classes: dict[str, type[Personality]] = {
        "biodex": BiodexPersonality, "woodway": WoodwayPersonality,
        "bertec": BertecPersonality, "trackmaster": TrackMasterPersonality,
    }  # fmt: skip
    cls = classes.get(profile.protocol)
    if cls is None:
        raise ValueError(f"no simulator personality for protocol {profile.protocol!r}")
    return cls(profile, faults=faults, seed=seed)


class _Shared:
    def __init__(self, make: MakePersonality) -> None:
        self._make = make
        self.machine: Personality | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self) -> Personality:
        if self.machine is None:
            self.machine = self._make()
            self._task = asyncio.get_running_loop().create_task(self.machine.run())
        return self.machine

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def _serve(machine: Personality, stream: ByteStream, first: bytes = b"") -> None:
    machine.attach(stream)
    try:
        if first:
            machine.receive(first)
        while True:
            data = await stream.read()
            if not data:
                return
            machine.receive(data)
    finally:
        if machine.stream is stream:
            machine.attach(None)


async def serve_pty(make: MakePersonality, *, on_path: Callable[[str], None]) -> None:
    """A pty pair; the slave path is what ``serial://`` opens. The machine is created at
    the host's first byte (pushing protocols: at once)."""
    master, slave = os.openpty()
    try:
        tty.setraw(slave, termios.TCSANOW)
        tty.setraw(master, termios.TCSANOW)
        on_path(os.ttyname(slave))
        stream = PtyByteStream(master)
        shared = _Shared(make)
        try:
            first = await stream.read()
            if first:
                await _serve(shared.get(), stream, first)
        finally:
            stream.close()
            await shared.close()
    finally:
        os.close(master)
        os.close(slave)


async def serve_tcp(
    make: MakePersonality,
    host: str,
    port: int,
    *,
    ready: asyncio.Future[tuple[str, int]] | None = None,
) -> None:
    shared = _Shared(make)
    current: list[ByteStream] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = AsyncioByteStream(reader, writer)
        for old in current:  # one host at a time: the newcomer takes over
            old.close()
        current[:] = [stream]
        try:
            await _serve(shared.get(), stream)
        finally:
            stream.close()

    server = await asyncio.start_server(on_connect, host, port)
    try:
        sockname = server.sockets[0].getsockname()
        if ready is not None and not ready.done():
            ready.set_result((str(sockname[0]), int(sockname[1])))
        async with server:
            await server.serve_forever()
    finally:
        server.close()
        for s in current:
            s.close()
        await shared.close()
