"""The simulator's link servers: serve_stream over memory_pipe() on virtual time (with the
link-level faults), then smoke tests over a real TCP socket, a real pty opened with
pyserial, and the ``treadctl sim`` process. Real-time tests wait on frames, never sleep."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from treadctl.clock import run_virtual
from treadctl.ftms.control_point import (
    RequestControl,
    ResultCode,
    SetTargetSpeed,
    StartOrResume,
    decode_control_point_response,
    encode_control_point,
)
from treadctl.ftms.ranges import decode_speed_range
from treadctl.ftms.treadmill_data import decode_treadmill_data
from treadctl.ftms.uuids import CONTROL_POINT, SPEED_RANGE, TREADMILL_DATA
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill, serve_pty, serve_stream, serve_tcp
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.stream import ByteStream, memory_pipe

REF = load_profile("treadctl-reference")
REPO = Path(__file__).resolve().parents[2]


class WireHost:
    """The host end of a framed link, at the byte level."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.frames: list[tuple[float, Frame]] = []
        self.changed = asyncio.Event()
        self.seq = 0
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._pump())

    async def _pump(self) -> None:
        while data := await self.stream.read():
            for frame in self.decoder.feed(data):
                self.frames.append((self._loop.time(), frame))
                self.changed.set()

    def send(self, ftype: FrameType, uuid: int = 0, value: bytes = b"") -> int:
        self.seq = (self.seq + 1) & 0xFF
        self.stream.write(encode_frame(Frame(ftype, uuid, value, self.seq)))
        return self.seq

    async def wait(self, pred: Callable[[Frame], bool], timeout_s: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout_s):
            seen = 0
            while True:
                for _, frame in self.frames[seen:]:
                    if pred(frame):
                        return frame
                seen = len(self.frames)
                self.changed.clear()
                await self.changed.wait()

    async def request(self, ftype: FrameType, uuid: int, value: bytes = b"") -> Frame:
        want = FrameType.WRITE_RESPONSE if ftype is FrameType.WRITE else FrameType.READ_RESPONSE
        seq = self.send(ftype, uuid, value)
        return await self.wait(lambda f: f.type is want and f.seq == seq)

    async def command(self, req: object) -> ResultCode:
        n = self._cp_count()
        resp = await self.request(FrameType.WRITE, CONTROL_POINT, encode_control_point(req))  # type: ignore[arg-type]
        assert resp.value == b"\x00"
        frame = await self.wait(lambda f: self._cp_count() > n)
        del frame
        cps = [f for _, f in self.frames if f.type is FrameType.NOTIFY and f.uuid == CONTROL_POINT]
        return decode_control_point_response(cps[n].value).result

    def _cp_count(self) -> int:
        return sum(
            1 for _, f in self.frames if f.type is FrameType.NOTIFY and f.uuid == CONTROL_POINT
        )

    def close(self) -> None:
        self._task.cancel()
        self.stream.close()


def test_serve_stream_dispatches_frames_on_virtual_time() -> None:
    async def main() -> None:
        host_end, dev_end = memory_pipe()
        sim = SimTreadmill(REF)
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(serve_stream(sim, dev_end))]
        host = WireHost(host_end)
        resp = await host.request(FrameType.READ, SPEED_RANGE)
        assert resp.value[0] == 0 and decode_speed_range(resp.value[1:]).max_kmh == 18.0
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(6.0)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        for _ in range(100):  # 10 s of keepalives
            host.send(FrameType.KEEPALIVE)
            await asyncio.sleep(0.1)
        assert sim.truth().speed_kmh == pytest.approx(6.0)
        td = [f for _, f in host.frames if f.type is FrameType.NOTIFY and f.uuid == TREADMILL_DATA]
        assert len(td) >= 95
        assert decode_treadmill_data(td[-1].value).speed_kmh == pytest.approx(6.0)
        resp = await host.request(FrameType.WRITE, 0x1234, b"\x00")
        assert resp.value == b"\x06"
        assert sim.link_counters is not None and sim.link_counters.dropped == 0
        host_end.close()  # EOF: serve_stream returns
        await asyncio.wait_for(tasks[1], 1.0)
        tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[0]

    run_virtual(main)


def test_garbage_on_the_link_still_delivers_valid_frames_and_counts_drops() -> None:
    async def main() -> None:
        host_end, dev_end = memory_pipe()
        sim = SimTreadmill(REF, faults="garbage@2+20", seed=7)
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(serve_stream(sim, dev_end))]
        host = WireHost(host_end)
        assert await host.command(RequestControl()) == ResultCode.SUCCESS
        assert await host.command(SetTargetSpeed(5.0)) == ResultCode.SUCCESS
        assert await host.command(StartOrResume()) == ResultCode.SUCCESS
        asked = 0
        while sim.now_s() < 22.0:
            host.send(FrameType.KEEPALIVE)
            host.send(FrameType.READ, SPEED_RANGE)
            asked += 1
            await asyncio.sleep(0.1)
        answers = [
            f for t, f in host.frames if f.type is FrameType.READ_RESPONSE and 2.0 < t < 22.0
        ]
        # Most requests still get through, every delivered frame is intact...
        assert asked * 0.5 < len(answers) < asked
        assert all(decode_speed_range(f.value[1:]).max_kmh == 18.0 for f in answers)
        # ...and both ends counted what they threw away.
        assert sim.link_counters is not None and sim.link_counters.dropped > 10
        assert host.decoder.counters.dropped > 10
        assert sim.truth().running and sim.truth().speed_kmh == pytest.approx(5.0)
        # After the fault, a clean link again.
        dropped = host.decoder.counters.dropped
        for _ in range(30):
            host.send(FrameType.KEEPALIVE)
            await asyncio.sleep(0.1)
        assert host.decoder.counters.dropped == dropped
        host.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main)


def test_link_drop_over_a_stream_carries_nothing() -> None:
    async def main() -> None:
        host_end, dev_end = memory_pipe()
        sim = SimTreadmill(REF, faults="link-drop@1+2")
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(serve_stream(sim, dev_end))]
        host = WireHost(host_end)
        await asyncio.sleep(1.5)
        n = len(host.frames)
        host.send(FrameType.READ, SPEED_RANGE)
        await asyncio.sleep(1.0)
        assert len(host.frames) == n  # no answer, no telemetry
        assert sim.wire_log == []
        await asyncio.sleep(3.0 - sim.now_s())
        resp = await host.request(FrameType.READ, SPEED_RANGE)  # after the drop
        assert resp.value[0] == 0
        host.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main)


# -- real sockets, real ptys, real processes (real time: wait on frames, with timeouts) ---


def test_serve_tcp_smoke_one_shared_simulator() -> None:
    made: list[SimTreadmill] = []

    def make_sim() -> SimTreadmill:
        made.append(SimTreadmill(REF))
        return made[-1]

    async def main() -> None:
        ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve_tcp(make_sim, "127.0.0.1", 0, ready=ready))
        host_addr, port = await asyncio.wait_for(ready, 5.0)
        try:
            from treadctl.transport.stream import AsyncioByteStream

            first = WireHost(AsyncioByteStream(*await asyncio.open_connection(host_addr, port)))
            assert await first.command(RequestControl()) == ResultCode.SUCCESS
            await first.wait(lambda f: f.uuid == TREADMILL_DATA)  # telemetry flows
            # A second connection takes over the same treadmill; the first is closed.
            second = WireHost(AsyncioByteStream(*await asyncio.open_connection(host_addr, port)))
            resp = await second.request(FrameType.READ, SPEED_RANGE)
            assert resp.value[0] == 0
            await asyncio.wait_for(first._task, 5.0)  # EOF on the replaced connection
            assert len(made) == 1 and made[0].truth().control_granted
            second.close()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    asyncio.run(main())


def test_serve_pty_smoke_with_pyserial() -> None:
    async def main() -> None:
        path: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(
            serve_pty(lambda: SimTreadmill(REF), on_path=path.set_result)
        )
        try:
            tty_path = await asyncio.wait_for(path, 5.0)
            assert tty_path.startswith("/dev/")
            port = serial.Serial(tty_path, 115200, timeout=0.2)
            try:
                port.write(encode_frame(Frame(FrameType.READ, SPEED_RANGE, b"", 9)))
                decoder = FrameDecoder()

                def read_response() -> Frame:
                    for _ in range(50):  # up to ~10 s
                        for frame in decoder.feed(port.read(256)):
                            if frame.type is FrameType.READ_RESPONSE:
                                return frame
                    raise AssertionError("no READ_RESPONSE from the pty")

                frame = await asyncio.to_thread(read_response)
                assert frame.seq == 9 and decode_speed_range(frame.value[1:]).max_kmh == 18.0
            finally:
                port.close()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server

    asyncio.run(main())


def _sim_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        # Not ``-m treadctl.cli``: that would run cli.py as __main__, a second copy of
        # the module whose UsageError the commands do not raise.
        [sys.executable, "-c", "import sys; from treadctl.cli import main; sys.exit(main())",
         "sim", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sim_command_serves_tcp_until_sigint() -> None:
    proc = _sim_process("--listen", "tcp://127.0.0.1:0", "--faults", "runaway@600")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://127.0.0.1:")
        host, port = url.removeprefix("tcp://").rsplit(":", 1)

        async def talk() -> None:
            from treadctl.transport.stream import AsyncioByteStream

            wire = WireHost(AsyncioByteStream(*await asyncio.open_connection(host, int(port))))
            resp = await wire.request(FrameType.READ, SPEED_RANGE)
            assert decode_speed_range(resp.value[1:]).max_kmh == 18.0
            wire.close()

        asyncio.run(talk())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sim_command_pty_prints_the_path_first() -> None:
    proc = _sim_process("--pty", "--profile", "kinetic-rx2")
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/") and os.path.exists(path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "x@3"], "unknown fault 'x'"),
        (["--listen", "udp://127.0.0.1:5"], "tcp://HOST:PORT"),
        (["--listen", "tcp://127.0.0.1"], "missing port"),
        (["--profile", "no-such-firmware"], "unknown firmware profile"),
        (["--speedup", "0"], "--speedup must be > 0"),
    ],
)
def test_sim_command_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = _sim_process(*args)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert message in err and out == ""
