"""Simulator personalities: the same physics and faults as the FTMS simulator, speaking a
maker's own bytes (``treadctl sim --profile biodex-rtm400 --pty``). One module per protocol;
docs/protocols.md says what each models.

The servers share ONE machine between successive host connections, created at the host's
first contact (as the FTMS servers do): a treadmill outlives its link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from treadctl.profiles import FirmwareProfile
from treadctl.simulator.faults import FaultPlan
from treadctl.simulator.link import serve_pty_with, serve_tcp_with
from treadctl.simulator.personalities.base import EVENTS_ENV, Personality
from treadctl.simulator.personalities.bertec import BertecPersonality
from treadctl.simulator.personalities.biodex import BiodexPersonality
from treadctl.simulator.personalities.trackmaster import TrackMasterPersonality
from treadctl.simulator.personalities.woodway import WoodwayPersonality
from treadctl.transport.stream import ByteStream

__all__ = [
    "EVENTS_ENV", "Personality", "make_personality", "serve_pty", "serve_stream", "serve_tcp",
]  # fmt: skip

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


async def serve_stream(machine: Personality, stream: ByteStream) -> None:
    """Serve one host stream (a pty, a TCP connection, an in-memory pipe) until it closes."""
    machine.attach(stream)
    try:
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
    await serve_pty_with(make, serve_stream, on_path=on_path)


async def serve_tcp(
    make: MakePersonality,
    host: str,
    port: int,
    *,
    ready: asyncio.Future[tuple[str, int]] | None = None,
) -> None:
    await serve_tcp_with(make, serve_stream, host, port, ready=ready)
