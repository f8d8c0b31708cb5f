"""The real byte pipes under the framed transport: a TCP socket and a pty serial port.

Real sockets and ptys, real time: every wait has a timeout, nothing sleeps to let time pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from treadctl.transport.base import LinkLost, TransportError
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.serial import SerialTransport, open_serial_stream
from treadctl.transport.stream import AsyncioByteStream
from treadctl.transport.tcp import TcpTransport

CP = 0x2AD9
TD = 0x2ACD


# -- TCP -------------------------------------------------------------------------------


class TcpDevice:
    """A one-connection TCP server speaking frames by hand."""

    def __init__(self) -> None:
        self.connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connected.set_result((r, w))

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def tcp_device() -> AsyncIterator[TcpDevice]:
    dev = TcpDevice()
    await dev.start()
    yield dev
    assert dev.server is not None
    dev.server.close()
    if dev.connected.done():
        dev.connected.result()[1].close()


async def _recv(reader: asyncio.StreamReader, dec: FrameDecoder) -> Frame:
    async with asyncio.timeout(5):
        while True:
            frames = dec.feed(await reader.read(4096))
            if frames:
                return frames[0]


async def test_tcp_roundtrip_and_nodelay(tcp_device: TcpDevice) -> None:
    t = TcpTransport("127.0.0.1", tcp_device.port)
    await t.connect()
    assert t.name == f"tcp://127.0.0.1:{tcp_device.port}"
    r, w = await asyncio.wait_for(tcp_device.connected, 5)
    got: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    t.set_notify_handler(lambda u, v: got.put_nowait((u, v)))
    task = asyncio.create_task(t.write(CP, b"\x00", timeout_s=5))
    dec = FrameDecoder()
    req = await _recv(r, dec)
    assert (req.type, req.uuid, req.value) == (FrameType.WRITE, CP, b"\x00")
    w.write(encode_frame(Frame(FrameType.WRITE_RESPONSE, CP, b"\x00", req.seq)))
    w.write(encode_frame(Frame(FrameType.NOTIFY, TD, b"\x00\x00\xe8\x03", 0)))
    await asyncio.wait_for(task, 5)
    assert await asyncio.wait_for(got.get(), 5) == (TD, b"\x00\x00\xe8\x03")
    assert isinstance(t.stream, AsyncioByteStream)
    sock = t.stream.get_extra_info("socket")
    assert isinstance(sock, socket.socket | asyncio.trsock.TransportSocket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await t.close()
    assert await asyncio.wait_for(r.read(), 5) == b""


async def test_tcp_peer_close_is_link_lost(tcp_device: TcpDevice) -> None:
    t = TcpTransport("127.0.0.1", tcp_device.port)
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    t.set_disconnect_handler(lost.set_result)
    await t.connect()
    _, w = await asyncio.wait_for(tcp_device.connected, 5)
    w.close()
    assert await asyncio.wait_for(lost, 5) == "link closed by peer"
    with pytest.raises(LinkLost):
        await t.write(CP, b"\x00")


async def test_tcp_drop_resets_the_connection(tcp_device: TcpDevice) -> None:
    t = TcpTransport("127.0.0.1", tcp_device.port)
    await t.connect()
    r, _ = await asyncio.wait_for(tcp_device.connected, 5)
    t.drop()
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(r.read(), 5) == b""


async def test_tcp_connect_refused_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nobody accepts
    t = TcpTransport("127.0.0.1", port, connect_timeout_s=2)
    with pytest.raises(TransportError, match=rf"^cannot connect to tcp://127.0.0.1:{port}: "):
        await t.connect()


# -- serial over a real pty ----------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)  # pyserial opens the slave by path, like a real port
    os.set_blocking(master, False)
    yield master, path
    with contextlib.suppress(OSError):
        os.close(master)


async def _master_frames(master: int, dec: FrameDecoder, n: int = 1) -> list[Frame]:
    loop = asyncio.get_running_loop()
    got: list[Frame] = []
    ready = asyncio.Event()

    def on_read() -> None:
        with contextlib.suppress(BlockingIOError):
            got.extend(dec.feed(os.read(master, 4096)))
        if len(got) >= n:
            ready.set()

    loop.add_reader(master, on_read)
    try:
        await asyncio.wait_for(ready.wait(), 5)
    finally:
        loop.remove_reader(master)
    return got


async def test_serial_pty_roundtrip(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    t = SerialTransport(path, 115200)
    await t.connect()
    assert t.name == f"serial://{path}"
    got: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    t.set_notify_handler(lambda u, v: got.put_nowait((u, v)))
    task = asyncio.create_task(t.read(0xFF01, timeout_s=5))
    (req,) = await _master_frames(master, FrameDecoder())
    assert (req.type, req.uuid) == (FrameType.READ, 0xFF01)
    os.write(master, encode_frame(Frame(FrameType.READ_RESPONSE, 0xFF01, b"\x00\x01", req.seq)))
    os.write(master, encode_frame(Frame(FrameType.NOTIFY, TD, b"\x00\x00\x64\x00", 9)))
    assert await asyncio.wait_for(task, 5) == b"\x01"
    assert await asyncio.wait_for(got.get(), 5) == (TD, b"\x00\x00\x64\x00")
    await t.close()


async def test_serial_port_is_exclusive_and_errors_are_one_line(
    pty_pair: tuple[int, str],
) -> None:
    _, path = pty_pair
    t = SerialTransport(path, 115200)
    await t.connect()
    with pytest.raises(TransportError, match=rf"^serial port {path} is busy"):
        await SerialTransport(path, 115200).connect()
    await t.close()
    with pytest.raises(TransportError, match=r"^serial port /dev/ttyNOPE9 not found$"):
        await SerialTransport("/dev/ttyNOPE9").connect()


async def test_serial_large_write_survives_a_full_port_buffer(
    pty_pair: tuple[int, str],
) -> None:
    """Bytes beyond the pty's buffer wait on add_writer and still arrive in order."""
    master, path = pty_pair
    stream = open_serial_stream(path, 115200)
    payload = bytes(range(256)) * 2000  # 512 KB, far beyond a pty buffer
    stream.write(payload[:1000])
    stream.write(payload[1000:])
    received = bytearray()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def on_read() -> None:
        with contextlib.suppress(BlockingIOError):
            received.extend(os.read(master, 65536))
        if len(received) >= len(payload):
            done.set()

    loop.add_reader(master, on_read)
    try:
        await asyncio.wait_for(done.wait(), 10)
    finally:
        loop.remove_reader(master)
    assert bytes(received) == payload
    stream.close()
    assert stream.closed


async def test_serial_master_gone_is_link_lost(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    t = SerialTransport(path, 115200)
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    t.set_disconnect_handler(lost.set_result)
    await t.connect()
    os.close(master)  # the other side of the cable disappears
    assert await asyncio.wait_for(lost, 5) == "link closed by peer"
    await t.close()
