"""Serial robustness on REAL ptys (issue 7, item 3): random bytes, truncated frames, bit
flips and bursts between and within valid frames, in both directions.

Topology (every hop a real pty in raw mode, real time)::

    SerialTransport (pyserial)  <->  pty A  <->  Corrupter  <->  pty B  <->  simulator.serve_pty

The simulator is served by ``simulator.serve_pty`` exactly as ``treadctl sim --pty`` does;
the host is a ``SerialTransport`` on the slave of pty A. The :class:`Corrupter` in the
middle reads whole frames (zero-delimited runs) from either side and forwards each one
intact or damaged (one bit flipped, cut short, noise burst inside it, a junk run after it).
It knows exactly how many frames it passed intact in each direction.

What must hold:

* nothing is ever acted on from a corrupted frame: the simulator's ``wire_log`` is exactly
  the subsequence of the host's writes that arrived intact (every host write carries a
  unique value), and the host's notify handler only ever sees (uuid, value) pairs the
  simulator really sent, in order;
* the counters count the damage on both ends (``crc_errors``/``length_errors``/
  ``cobs_errors``/``bytes_discarded`` > 0) and are consistent: each decoder's ``frames`` is
  exactly the number of frames the corrupter passed intact towards it;
* the link keeps working afterwards: clean writes all complete and telemetry flows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import termios
import tty
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from treadctl.ftms import FEATURE, TREADMILL_DATA
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill, serve_pty
from treadctl.transport.base import ResponseTimeout, TransportError, WriteRejected
from treadctl.transport.framing import (
    STATUS_WRITE_NOT_PERMITTED,
    Frame,
    FrameType,
    encode_frame,
)
from treadctl.transport.serial import SerialTransport

pytestmark = pytest.mark.timeout(60)

STEP_TIMEOUT_S = 5.0
#: A characteristic the simulator never notifies: the test's own drain marker.
MARKER_UUID = 0xFFEE


class RecordingSim(SimTreadmill):
    """The real simulator, additionally recording every notification it puts on the link."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.sent: list[tuple[int, bytes]] = []

    def attach(self, notify: Callable[[int, bytes], None] | None) -> None:
        if notify is None:
            super().attach(None)
            return

        def recording(uuid: int, value: bytes) -> None:
            self.sent.append((uuid, bytes(value)))
            notify(uuid, value)

        super().attach(recording)


@dataclass
class Direction:
    """One direction through the corrupter: a frame reassembler plus its tallies."""

    name: str
    buf: bytearray = field(default_factory=bytearray)
    intact: int = 0
    damaged: int = 0
    junk_runs: int = 0


class Corrupter:
    """Forwards frames between two pty fds, damaging a share of them while ``rate`` > 0."""

    MODES = ("flip", "truncate", "burst", "junk-after")

    def __init__(self, host_fd: int, sim_fd: int, seed: int = 7) -> None:
        self.fds = {"to_sim": (host_fd, sim_fd), "to_host": (sim_fd, host_fd)}
        self.dirs = {name: Direction(name) for name in self.fds}
        self.rng = random.Random(seed)
        self.rate = 0.0
        self.modes: dict[str, int] = dict.fromkeys(self.MODES, 0)
        self.changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        for name, (src, _dst) in self.fds.items():
            os.set_blocking(src, False)
            loop.add_reader(src, self._on_readable, name)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for src, _dst in self.fds.values():
            loop.remove_reader(src)  # no-op when already removed

    def _on_readable(self, name: str) -> None:
        src, dst = self.fds[name]
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        d = self.dirs[name]
        d.buf += data
        out = bytearray()
        while (idx := d.buf.find(b"\x00")) >= 0:
            run = bytes(d.buf[:idx])
            del d.buf[: idx + 1]
            if not run:
                out += b"\x00"  # a delimiter on its own
                continue
            out += self._forward(d, run)
        if out:
            os.write(dst, bytes(out))
        self.changed.set()

    def _noise(self, n: int, zeros: bool) -> bytes:
        lo = 0 if zeros else 1
        return bytes(self.rng.randrange(lo, 256) for _ in range(n))

    def _forward(self, d: Direction, run: bytes) -> bytes:
        if self.rng.random() >= self.rate:
            d.intact += 1
            return run + b"\x00"
        mode = self.rng.choice(self.MODES)
        self.modes[mode] += 1
        if mode == "junk-after":
            # The frame survives; a burst of random bytes (zeros included) follows it, then
            # a delimiter so the junk is its own run(s).
            d.intact += 1
            d.junk_runs += 1
            return run + b"\x00" + self._noise(self.rng.randrange(1, 64), zeros=True) + b"\x00"
        d.damaged += 1
        if mode == "flip":
            b = bytearray(run)
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
            return bytes(b) + b"\x00"
        if mode == "truncate":
            # Bytes lost mid-frame, delimiter included: the next frame's leading 0x00 ends it.
            return run[: self.rng.randrange(1, len(run))]
        cut = self.rng.randrange(1, len(run))  # burst: noise (no zeros) inside the frame
        return run[:cut] + self._noise(self.rng.randrange(1, 24), zeros=False) + run[cut:] + (
            b"\x00")


def _raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master, termios.TCSANOW)
    tty.setraw(slave, termios.TCSANOW)
    return master, slave


async def _until(pred: Callable[[], bool], event: asyncio.Event, what: str) -> None:
    async def wait() -> None:
        while not pred():
            event.clear()
            await event.wait()

    try:
        await asyncio.wait_for(wait(), STEP_TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass
class Rig:
    host: SerialTransport
    sim: RecordingSim
    corrupter: Corrupter
    received: list[tuple[int, bytes]]
    rx: asyncio.Event
    sent_writes: list[bytes] = field(default_factory=list)
    ok_writes: list[bytes] = field(default_factory=list)
    lost_writes: int = 0

    async def write(self, i: int, timeout_s: float) -> None:
        """A unique write to a read-only characteristic: logged by the firmware, answered
        WRITE_NOT_PERMITTED, harmless. Proves a round trip without moving anything."""
        value = struct.pack("<II", 0xF0220000, i)
        self.sent_writes.append(value)
        try:
            await self.host.write(FEATURE, value, timeout_s=timeout_s)
        except WriteRejected as exc:
            assert exc.status == STATUS_WRITE_NOT_PERMITTED
            self.ok_writes.append(value)
        except ResponseTimeout:
            self.lost_writes += 1
        else:
            raise AssertionError("the firmware accepted a write to a read-only characteristic")


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[Rig]:
    sims: list[RecordingSim] = []
    path: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def make_sim() -> SimTreadmill:
        sims.append(RecordingSim(load_profile("treadctl-reference"), seed=3))
        return sims[-1]

    server = asyncio.create_task(serve_pty(make_sim, on_path=path.set_result))
    host_master, host_slave = _raw_pty()
    sim_fd = -1
    host: SerialTransport | None = None
    corrupter: Corrupter | None = None
    r: Rig | None = None
    try:
        sim_path = await asyncio.wait_for(path, STEP_TIMEOUT_S)
        sim_fd = os.open(sim_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(sim_fd, termios.TCSANOW)
        corrupter = Corrupter(host_master, sim_fd)
        host = SerialTransport(os.ttyname(host_slave))
        received: list[tuple[int, bytes]] = []
        rx = asyncio.Event()

        def on_notify(uuid: int, value: bytes) -> None:
            received.append((uuid, bytes(value)))
            rx.set()

        host.set_notify_handler(on_notify)
        await host.connect()
        r = Rig(host, None, corrupter, received, rx)  # type: ignore[arg-type]
        await r.write(0, STEP_TIMEOUT_S)  # first contact starts the simulator
        assert sims, "serve_pty did not create the simulator"
        r.sim = sims[0]
        yield r
    finally:
        if host is not None:
            with contextlib.suppress(TransportError, OSError):
                await host.close()
        for relay in {id(x): x for x in (corrupter, r.corrupter if r else None) if x}.values():
            relay.close()  # the test may have swapped in a fresh relay
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        for fd in (sim_fd, host_master, host_slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _is_subsequence(sub: list[object], seq: list[object]) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def _telemetry(received: list[tuple[int, bytes]]) -> int:
    return sum(1 for uuid, _ in received if uuid == TREADMILL_DATA)


async def test_corruption_is_never_acted_on_and_is_counted() -> None:
    async with rig() as r:
        c = r.corrupter
        # 1. Clean link: writes round-trip, telemetry (10 Hz) arrives.
        for i in range(1, 6):
            await r.write(i, STEP_TIMEOUT_S)
        await _until(lambda: _telemetry(r.received) >= 3, r.rx, "clean telemetry")
        assert r.lost_writes == 0
        assert r.host.counters["dropped"] == 0

        # 2. Damage: 30% of frames each way, every mode, for 40 host writes (+ keepalives)
        #    and until enough telemetry has been damaged on its way to the host.
        c.rate = 0.3
        for i in range(100, 140):
            await r.write(i, 0.1)
            await r.host.keepalive()
        await _until(lambda: c.dirs["to_host"].damaged >= 8, c.changed,
                     "damaged telemetry towards the host")
        assert all(n > 0 for n in c.modes.values()), c.modes
        assert 0 < r.lost_writes < 40

        # 3. Clean again: the link works, nothing needs a reconnect.
        c.rate = 0.0
        mark = len(r.received)
        for i in range(200, 210):
            await r.write(i, STEP_TIMEOUT_S)
        await _until(lambda: _telemetry(r.received[mark:]) >= 3, r.rx, "telemetry after")
        assert r.ok_writes[-10:] == [struct.pack("<II", 0xF0220000, i) for i in range(200, 210)]

        # Drain. Towards the simulator: the host sends nothing after this round trip, so
        # every frame forwarded before it has been decoded. Towards the host: stop
        # forwarding, then put one marker frame behind everything forwarded so far.
        await r.write(999, STEP_TIMEOUT_S)
        c.close()
        host_fd = c.fds["to_sim"][0]
        os.write(host_fd, encode_frame(Frame(FrameType.NOTIFY, MARKER_UUID, b"drain", 0)))
        await _until(lambda: (MARKER_UUID, b"drain") in r.received, r.rx, "the marker")
        assert r.received[-1] == (MARKER_UUID, b"drain")
        received = r.received[:-1]

        # -- nothing acted on from a corrupted frame -------------------------------------
        logged = [value for _t, uuid, value in r.sim.wire_log if uuid == FEATURE]
        assert len(logged) == len(r.sim.wire_log)  # the host wrote nothing else
        assert _is_subsequence(logged, r.sent_writes), "firmware logged a write nobody sent"
        assert set(r.ok_writes) <= set(logged)  # an answered write really reached it
        assert len(set(logged)) == len(logged)  # and none was acted on twice
        assert _is_subsequence(received, r.sim.sent), "host saw a value the sim never sent"

        # -- the damage is counted, consistently, on both ends ---------------------------
        host_c = r.host.counters
        sim_c = r.sim.link_counters
        assert sim_c is not None
        sim_counts = dict(vars(sim_c))
        for name, counters, frames, towards in (
            ("host", host_c, host_c["frames_received"] - 1, "to_host"),  # minus the marker
            ("sim", sim_counts, sim_counts["frames"], "to_sim"),
        ):
            d = c.dirs[towards]
            assert frames == d.intact, (name, counters, d)
            damage = (counters["crc_errors"] + counters["length_errors"]
                      + counters["cobs_errors"] + counters["type_errors"]
                      + counters["oversize"])
            assert damage >= d.damaged > 0, (name, counters, d)
            assert counters["bytes_discarded"] > 0, (name, counters)
            assert counters["crc_errors"] + counters["cobs_errors"] > 0, (name, counters)
        assert host_c["dropped"] == (host_c["crc_errors"] + host_c["length_errors"]
                                     + host_c["cobs_errors"] + host_c["type_errors"]
                                     + host_c["oversize"])
        # The host's own tallies agree with what crossed the corrupter.
        to_sim = c.dirs["to_sim"]
        assert host_c["frames_sent"] == to_sim.intact + to_sim.damaged, (host_c, to_sim)
        assert host_c["notifications"] == len(r.received)
        assert host_c["timeouts"] == r.lost_writes
        assert len(received) <= c.dirs["to_host"].intact


async def test_random_bytes_only_never_reach_the_firmware() -> None:
    """Pure line noise (no valid frames at all) into both ends: nothing is logged or
    delivered, the noise is counted, and the link then works at once."""
    async with rig() as r:
        before_log = len(r.sim.wire_log)
        before_rx = len(r.received)
        rng = random.Random(11)
        host_fd, sim_fd = r.corrupter.fds["to_sim"]
        r.corrupter.close()  # no forwarding while the noise is written
        sim_before = r.sim.link_counters.bytes_discarded if r.sim.link_counters else 0
        noise = bytes(rng.randrange(256) for _ in range(3000))
        os.write(sim_fd, noise)  # towards the simulator's decoder
        written = os.write(host_fd, noise)  # towards the host's decoder
        assert written == len(noise)
        # Back to forwarding: the first write after the noise goes through. Both ptys are
        # FIFOs, so the write reaches the firmware after the noise, and its response reaches
        # the host after the noise: once it completes, both decoders have seen all of it.
        r.corrupter = Corrupter(host_fd, sim_fd)
        await r.write(1, STEP_TIMEOUT_S)
        assert r.ok_writes[-1] == struct.pack("<II", 0xF0220000, 1)
        counters = r.host.counters
        assert counters["dropped"] > 0 and counters["bytes_discarded"] >= 1000, counters
        sim_c = r.sim.link_counters
        assert sim_c is not None and sim_c.bytes_discarded - sim_before >= 1000
        assert [v for _t, _u, v in r.sim.wire_log[before_log:]] == [r.ok_writes[-1]]
        assert _is_subsequence(r.received[before_rx:], r.sim.sent)
