"""The simulator's end of a framed link (docs/framing.md): one ``ByteStream`` per host, served
over an in-memory pipe, a TCP connection or a pty master.

``serve_stream`` turns frames into :class:`~simulator.firmware.SimTreadmill` calls and
notifications into frames. The link-level faults live here: ``link-drop`` (nothing passes
either way) and ``garbage`` (bursts of random bytes and bit-flipped frames, both ways).

``serve_tcp`` and ``serve_pty`` share ONE simulator between successive host connections,
created (and its fault clock started) at the host's first contact: a treadmill outlives
the link, so a host that drops the link and reconnects finds the belt as the watchdog left
it. Only one host is served at a time; a new TCP connection replaces the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from treadctl.simulator.firmware import SimTreadmill
from treadctl.transport.framing import (
    SIMULATOR_CLOCK_UUID,
    STATUS_OK,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
)
from treadctl.transport.stream import AsyncioByteStream, ByteStream

MakeSim = Callable[[], SimTreadmill]


class Machine(Protocol):
    """What a server shares between connections: a simulator or a personality."""

    async def run(self) -> None: ...


M = TypeVar("M", bound=Machine)
#: ``serve(machine, stream)``: serve one host connection until it closes.
Serve = Callable[[M, ByteStream], Awaitable[None]]

#: Garbage bursts: the first BURST_S of every GARBAGE_PERIOD_S while the fault is active.
GARBAGE_PERIOD_S = 1.0
BURST_S = 0.3
#: Noise is injected this often during a burst, and this share of frames is bit-flipped.
NOISE_INTERVAL_S = 0.05
FLIP_PROBABILITY = 0.3


def _in_burst(sim: SimTreadmill) -> bool:
    return sim.fault_active("garbage") and sim.now_s() % GARBAGE_PERIOD_S < BURST_S


def _flip_bit(sim: SimTreadmill, data: bytes) -> bytes:
    out = bytearray(data)
    i = sim.rng.randrange(len(out))
    out[i] ^= 1 << sim.rng.randrange(8)
    return bytes(out)


def _noise(sim: SimTreadmill) -> bytes:
    return bytes(sim.rng.randrange(256) for _ in range(sim.rng.randrange(8, 40)))


def _speedup_text() -> bytes:
    """The running loop's time speed-up (``treadctl.clock``): 1 on an ordinary loop."""
    speedup = getattr(asyncio.get_running_loop(), "speedup", 1.0)
    return f"{1.0 if speedup is None else float(speedup):g}".encode()


async def serve_stream(sim: SimTreadmill, stream: ByteStream) -> None:
    """Serve one host on ``stream`` until EOF or cancellation (``sim.run()`` runs elsewhere)."""
    decoder = FrameDecoder()
    sim.link_counters = decoder.counters
    seq = 0
    held: list[Frame] | None = None  # notifications raised while answering a request

    def send(frame: Frame) -> None:
        if stream.closed or sim.fault_active("link-drop"):
            return
        data = encode_frame(frame)
        if _in_burst(sim) and sim.rng.random() < FLIP_PROBABILITY:
            data = _flip_bit(sim, data)
        stream.write(data)

    def notify(uuid: int, value: bytes) -> None:
        nonlocal seq
        frame = Frame(FrameType.NOTIFY, uuid, value, seq)
        seq = (seq + 1) & 0xFF
        if held is not None:
            held.append(frame)
        else:
            send(frame)

    def dispatch(frame: Frame) -> None:
        nonlocal held
        sim.host_alive()
        if frame.type is FrameType.KEEPALIVE:
            return
        held = []
        try:
            if frame.type is FrameType.WRITE:
                status = sim.handle_write(frame.uuid, frame.value)
                send(Frame(FrameType.WRITE_RESPONSE, frame.uuid, bytes([status]), frame.seq))
            elif frame.type is FrameType.READ and frame.uuid == SIMULATOR_CLOCK_UUID:
                # Not FTMS: the link says how fast this process's time runs (framing.py).
                send(Frame(FrameType.READ_RESPONSE, frame.uuid,
                           bytes([STATUS_OK]) + _speedup_text(), frame.seq))
            elif frame.type is FrameType.READ:
                status, value = sim.handle_read(frame.uuid)
                send(Frame(FrameType.READ_RESPONSE, frame.uuid, bytes([status]) + value,
                           frame.seq))
            # NOTIFY / *_RESPONSE from the host are meaningless here: alive, nothing else.
        finally:
            pending, held = held, None
            for f in pending:  # the response leaves before what the request caused
                send(f)

    wake = asyncio.Event()

    def on_fault(name: str, active: bool) -> None:
        if name == "garbage":
            wake.set()

    async def noise_loop() -> None:
        # Random bytes both ways during bursts; idle (no wake-ups) while garbage is off.
        while True:
            if not sim.fault_active("garbage"):
                wake.clear()
                await wake.wait()
                continue
            if _in_burst(sim):
                if not stream.closed and not sim.fault_active("link-drop"):
                    stream.write(_noise(sim))
                for frame in decoder.feed(_noise(sim)):
                    dispatch(frame)  # noise that happens to be a valid frame is acted on
                await sim.clock.sleep(NOISE_INTERVAL_S)
            else:
                # At least 1 ms: a sleep below the clock's resolution would not move virtual
                # time, and this loop would spin at the burst boundary forever.
                remaining = GARBAGE_PERIOD_S - sim.now_s() % GARBAGE_PERIOD_S
                await sim.clock.sleep(max(remaining, 1e-3))

    sim.attach(notify)
    sim.add_fault_listener(on_fault)
    noise = asyncio.get_running_loop().create_task(noise_loop())
    try:
        while True:
            data = await stream.read()
            if not data:
                return
            if sim.fault_active("link-drop"):
                continue
            if _in_burst(sim) and sim.rng.random() < FLIP_PROBABILITY:
                data = _flip_bit(sim, data)
            for frame in decoder.feed(data):
                dispatch(frame)
    finally:
        noise.cancel()
        sim.remove_fault_listener(on_fault)
        if sim.notify_target is notify:
            sim.attach(None)


class SharedMachine(Generic[M]):
    """The one machine behind a server, created with its run() task at first contact."""

    def __init__(self, make: Callable[[], M]) -> None:
        self._make = make
        self.machine: M | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self) -> M:
        if self.machine is None:
            self.machine = self._make()
            self._task = asyncio.get_running_loop().create_task(self.machine.run())
        return self.machine

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def serve_tcp(
    make_sim: MakeSim,
    host: str,
    port: int,
    *,
    ready: asyncio.Future[tuple[str, int]] | None = None,
) -> None:
    """Serve the simulator on TCP until cancelled; ``ready`` gets the bound (host, port)."""
    await serve_tcp_with(make_sim, serve_stream, host, port, ready=ready)


async def serve_tcp_with(
    make: Callable[[], M],
    serve: Serve[M],
    host: str,
    port: int,
    *,
    ready: asyncio.Future[tuple[str, int]] | None = None,
) -> None:
    """Serve one shared machine on TCP with ``serve`` until cancelled, one host at a time;
    ``ready`` gets the bound (host, port)."""
    shared = SharedMachine(make)
    current: tuple[ByteStream, asyncio.Task[None]] | None = None

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal current
        stream = AsyncioByteStream(reader, writer)
        if current is not None:  # one host at a time: the newcomer takes over
            current[0].close()
        task = asyncio.current_task()
        assert task is not None
        current = (stream, task)
        try:
            await serve(shared.get(), stream)
        finally:
            stream.close()
            if current is not None and current[0] is stream:
                current = None

    server = await asyncio.start_server(on_connect, host, port)
    try:
        sockname = server.sockets[0].getsockname()
        if ready is not None and not ready.done():
            ready.set_result((str(sockname[0]), int(sockname[1])))
        async with server:
            await server.serve_forever()
    finally:
        server.close()
        if current is not None:
            current[0].close()
        await shared.close()


class PtyByteStream:
    """A ByteStream over a pty master fd (non-blocking, loop.add_reader)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: no slave open (we keep one open, so only on teardown)
        if not data:
            self._loop.remove_reader(self._fd)
        self._inbox.put_nowait(data)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        return await self._inbox.get()

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        # Nobody draining the slave side: bytes fall on the floor like on an unplugged
        # UART. The framing resynchronises at the next delimiter.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._fd, data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self._inbox.put_nowait(b"")

    @property
    def closed(self) -> bool:
        return self._closed


async def serve_pty(make_sim: MakeSim, *, on_path: Callable[[str], None]) -> None:
    """Open a pty pair, report the slave path (what ``serial:///dev/pts/N`` opens) and
    serve the master until cancelled. The simulator starts at the first byte from the host."""
    await serve_pty_with(make_sim, serve_stream, on_path=on_path)


async def serve_pty_with(
    make: Callable[[], M], serve: Serve[M], *, on_path: Callable[[str], None]
) -> None:
    """A raw pty pair served with ``serve``; ``on_path`` gets the slave path. The machine is
    created at the host's first byte."""
    master, slave = os.openpty()
    try:
        # Raw mode on both ends: no echo, no CR/LF translation, no signal characters.
        tty.setraw(slave, termios.TCSANOW)
        tty.setraw(master, termios.TCSANOW)
        on_path(os.ttyname(slave))
        stream = PtyByteStream(master)
        shared = SharedMachine(make)
        try:
            first = await stream.read()
            if not first:
                return
            await serve(shared.get(), _Prepend(stream, first))
        finally:
            stream.close()
            await shared.close()
    finally:
        os.close(master)
        os.close(slave)


class _Prepend:
    """A ByteStream that returns ``first`` before reading from ``inner``."""

    def __init__(self, inner: ByteStream, first: bytes) -> None:
        self._inner = inner
        self._first: bytes | None = first

    async def read(self) -> bytes:
        if self._first is not None:
            data, self._first = self._first, None
            return data
        return await self._inner.read()

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def close(self) -> None:
        self._inner.close()

    @property
    def closed(self) -> bool:
        return self._inner.closed
