"""FramedTransport at the byte level over memory_pipe(): the device end is driven by hand."""

from __future__ import annotations

import asyncio

import pytest

from treadctl.clock import run_virtual
from treadctl.transport.base import LinkLost, ResponseTimeout, TransportError, WriteRejected
from treadctl.transport.framed import FramedTransport
from treadctl.transport.framing import Frame, FrameDecoder, FrameType, encode_frame
from treadctl.transport.stream import ByteStream, memory_pipe

CP = 0x2AD9
TD = 0x2ACD
BELT = 0xFF01


class Device:
    """The firmware end of the pipe, driven by the test."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        while data := await self.stream.read():
            for f in self.decoder.feed(data):
                self.inbox.put_nowait(f)

    async def recv(self) -> Frame:
        return await asyncio.wait_for(self.inbox.get(), 1.0)

    def send(self, frame: Frame) -> None:
        self.stream.write(encode_frame(frame))

    def respond(self, req: Frame, status: int = 0, data: bytes = b"") -> None:
        kind = FrameType.WRITE_RESPONSE if req.type is FrameType.WRITE else FrameType.READ_RESPONSE
        self.send(Frame(kind, req.uuid, bytes([status]) + data, req.seq))

    def stop(self) -> None:
        self._task.cancel()


async def _pair() -> tuple[FramedTransport, Device, ByteStream]:
    host, dev = memory_pipe()

    async def factory() -> ByteStream:
        return host

    t = FramedTransport(factory, "mem://test")
    await t.connect()
    return t, Device(dev), dev


def test_write_is_acknowledged_by_seq() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        task = asyncio.create_task(t.write(CP, b"\x00"))
        req = await dev.recv()
        assert (req.type, req.uuid, req.value) == (FrameType.WRITE, CP, b"\x00")
        dev.respond(req)
        await task
        assert t.counters["frames_sent"] == 1
        assert t.counters["in_flight"] == 0
        await t.close()

    run_virtual(main)


def test_many_in_flight_answered_out_of_order() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        tasks = [asyncio.create_task(t.read(BELT)) for _ in range(5)]
        reqs = [await dev.recv() for _ in range(5)]
        assert len({r.seq for r in reqs}) == 5
        for i, req in reversed(list(enumerate(reqs))):
            dev.respond(req, data=bytes([i]))
        assert await asyncio.gather(*tasks) == [bytes([i]) for i in range(5)]
        await t.close()

    run_virtual(main)


def test_seq_wraps_at_256_and_skips_outstanding() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        # One request stays outstanding while 300 others come and go.
        stuck = asyncio.create_task(t.write(CP, b"\x07", timeout_s=100))
        stuck_req = await dev.recv()
        seqs = []
        for _ in range(300):
            task = asyncio.create_task(t.write(TD, b""))
            req = await dev.recv()
            assert req.seq != stuck_req.seq
            seqs.append(req.seq)
            dev.respond(req)
            await task
        assert max(seqs) == 255 and min(seqs) == 0
        dev.respond(stuck_req)
        await stuck
        await t.close()

    run_virtual(main)


def test_timeout_raises_on_virtual_time_and_late_response_is_ignored() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        t, dev, _ = await _pair()
        t0 = loop.time()
        task = asyncio.create_task(t.write(CP, b"\x02\x10\x01", timeout_s=0.3))
        req = await dev.recv()
        with pytest.raises(ResponseTimeout, match=r"0x2AD9 within 0\.3 s"):
            await task
        assert loop.time() - t0 == pytest.approx(0.3)
        dev.respond(req)  # too late: counted, not acted on
        await asyncio.sleep(0.01)
        assert t.counters["timeouts"] == 1
        assert t.counters["unmatched_responses"] == 1
        assert t.counters["in_flight"] == 0
        await t.close()

    run_virtual(main)


def test_rejected_write_and_read_raise_with_status() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        task = asyncio.create_task(t.write(BELT, b"\x01"))
        dev.respond(await dev.recv(), status=0x80)
        with pytest.raises(WriteRejected) as info:
            await task
        assert (info.value.uuid, info.value.status) == (BELT, 0x80)
        task2 = asyncio.create_task(t.read(0x2AD4))
        dev.respond(await dev.recv(), status=0x06)
        with pytest.raises(WriteRejected, match="0x06"):
            await task2
        assert t.counters["rejected"] == 2
        await t.close()

    run_virtual(main)


def test_response_with_wrong_uuid_or_type_is_not_matched() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        task = asyncio.create_task(t.write(CP, b"\x00", timeout_s=0.5))
        req = await dev.recv()
        dev.send(Frame(FrameType.WRITE_RESPONSE, TD, b"\x00", req.seq))  # wrong uuid
        dev.send(Frame(FrameType.READ_RESPONSE, CP, b"\x00", req.seq))  # wrong type
        with pytest.raises(ResponseTimeout):
            await task
        assert t.counters["unmatched_responses"] == 2
        await t.close()

    run_virtual(main)


def test_notifications_delivered_synchronously_in_order() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        got: list[tuple[int, bytes]] = []
        t.set_notify_handler(lambda uuid, value: got.append((uuid, value)))
        for i in range(3):
            dev.send(Frame(FrameType.NOTIFY, TD, bytes([i, 0, 0]), i))
        dev.send(Frame(FrameType.NOTIFY, CP, b"\x80\x00\x01", 3))
        await asyncio.sleep(0.01)
        assert got == [(TD, b"\x00\x00\x00"), (TD, b"\x01\x00\x00"), (TD, b"\x02\x00\x00"),
                       (CP, b"\x80\x00\x01")]
        assert t.counters["notifications"] == 4
        await t.close()

    run_virtual(main)


def test_failing_notify_handler_does_not_kill_the_link() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()

        def boom(uuid: int, value: bytes) -> None:
            raise RuntimeError("handler bug")

        t.set_notify_handler(boom)
        dev.send(Frame(FrameType.NOTIFY, TD, b"\x00\x00\x00", 0))
        task = asyncio.create_task(t.write(CP, b"\x00"))
        dev.respond(await dev.recv())
        await task
        await t.close()

    run_virtual(main)


def test_resync_after_garbage_and_corruption() -> None:
    async def main() -> None:
        t, _dev, raw = await _pair()
        got: list[bytes] = []
        t.set_notify_handler(lambda uuid, value: got.append(value))
        good = encode_frame(Frame(FrameType.NOTIFY, TD, b"\x00\x00\xe8\x03", 1))
        corrupt = bytearray(good)
        corrupt[5] ^= 0x40  # flip a bit inside the frame: CRC must catch it
        raw.write(b"\x13\x37garbage\xff\xfe")  # no delimiter: joins the next frame's flush
        raw.write(good)
        raw.write(bytes(corrupt))
        raw.write(b"\x00\x05\x01\x02\x00")  # a runt between delimiters
        # The next good frame arrives split byte by byte.
        for b in encode_frame(Frame(FrameType.NOTIFY, TD, b"\x00\x00\x10\x27", 2)):
            raw.write(bytes([b]))
        await asyncio.sleep(0.01)
        assert got == [b"\x00\x00\xe8\x03", b"\x00\x00\x10\x27"]
        c = t.counters
        assert c["frames_received"] == 2
        assert c["crc_errors"] + c["cobs_errors"] + c["length_errors"] >= 2
        assert c["dropped"] >= 2
        assert c["bytes_discarded"] > 0
        await t.close()

    run_virtual(main)


def test_write_puts_bytes_on_the_stream_before_its_first_await() -> None:
    async def main() -> None:
        host, dev = memory_pipe()
        sent: list[bytes] = []

        class Recording:
            closed = False

            async def read(self) -> bytes:
                return await host.read()

            def write(self, data: bytes) -> None:
                sent.append(data)
                host.write(data)

            def close(self) -> None:
                host.close()

        async def factory() -> ByteStream:
            return Recording()

        t = FramedTransport(factory, "mem://rec")
        await t.connect()
        coro = t.write(CP, b"\x08\x01")
        coro.send(None)  # run the coroutine to its first suspension, no further
        assert len(sent) == 1
        assert FrameDecoder().feed(sent[0])[0].value == b"\x08\x01"
        coro.close()
        # write_nowait sends inside the call itself.
        fut = t.write_nowait(CP, b"\x08\x01")
        assert len(sent) == 2
        d = Device(dev)
        req = await dev_first(d, FrameType.WRITE, sent_seq(sent[1]))
        d.respond(req)
        await fut
        await t.close()

    run_virtual(main)


def sent_seq(data: bytes) -> int:
    return FrameDecoder().feed(data)[0].seq


async def dev_first(dev: Device, kind: FrameType, seq: int) -> Frame:
    while True:
        f = await dev.recv()
        if f.type is kind and f.seq == seq:
            return f


def test_writes_leave_in_call_order() -> None:
    """Whatever calls write first is first on the wire (stop pre-empts in the client queue)."""

    async def main() -> None:
        t, dev, _ = await _pair()
        a = asyncio.create_task(t.write(CP, b"\x02\xe8\x03"))
        await asyncio.sleep(0)
        stop = t.write_nowait(CP, b"\x08\x01")
        first, second = await dev.recv(), await dev.recv()
        assert first.value == b"\x02\xe8\x03" and second.value == b"\x08\x01"
        dev.respond(second)
        dev.respond(first)
        await stop
        await a
        await t.close()

    run_virtual(main)


def test_write_nowait_reports_rejection() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        fut = t.write_nowait(CP, b"\x08\x01")
        dev.respond(await dev.recv(), status=0xFE)
        with pytest.raises(WriteRejected, match="0xFE"):
            await fut
        await t.close()

    run_virtual(main)


def test_keepalive_frame() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        await t.keepalive()
        f = await dev.recv()
        assert (f.type, f.uuid, f.value) == (FrameType.KEEPALIVE, 0, b"")
        assert t.counters["frames_sent"] == 1
        await t.close()

    run_virtual(main)


def test_eof_fails_pending_and_reports_link_lost_once() -> None:
    async def main() -> None:
        t, dev, raw = await _pair()
        reasons: list[str] = []
        t.set_disconnect_handler(reasons.append)
        task = asyncio.create_task(t.write(CP, b"\x00", timeout_s=10))
        await dev.recv()
        dev.stop()
        raw.close()  # the firmware end goes away
        with pytest.raises(LinkLost):
            await task
        await asyncio.sleep(0.01)
        assert reasons == ["link closed by peer"]
        assert not t.connected
        with pytest.raises(LinkLost):
            await t.write(CP, b"\x00")
        with pytest.raises(LinkLost):
            t.write_nowait(CP, b"\x00")
        with pytest.raises(LinkLost):
            await t.keepalive()
        await t.close()
        await t.close()  # idempotent
        assert reasons == ["link closed by peer"]

    run_virtual(main)


def test_stream_error_is_link_lost() -> None:
    async def main() -> None:
        class Broken:
            closed = False

            async def read(self) -> bytes:
                await asyncio.sleep(0.1)
                raise OSError(5, "Input/output error")

            def write(self, data: bytes) -> None:
                pass

            def close(self) -> None:
                self.closed = True

        async def factory() -> ByteStream:
            return Broken()

        t = FramedTransport(factory, "broken://")
        reasons: list[str] = []
        t.set_disconnect_handler(reasons.append)
        await t.connect()
        with pytest.raises(LinkLost):
            await t.read(BELT, timeout_s=5)
        assert reasons == ["link error: Input/output error"]

    run_virtual(main)


def test_close_and_drop_do_not_call_disconnect_handler() -> None:
    async def main() -> None:
        for how in ("close", "drop"):
            t, dev, raw = await _pair()
            reasons: list[str] = []
            t.set_disconnect_handler(reasons.append)
            task = asyncio.create_task(t.write(CP, b"\x00", timeout_s=10))
            await dev.recv()
            if how == "close":
                await t.close()
            else:
                t.drop()
            with pytest.raises(LinkLost):
                await task
            assert await raw.read() == b""  # the firmware sees the link end
            assert reasons == []

    run_virtual(main)


def test_connect_failure_is_one_line_transport_error() -> None:
    async def main() -> None:
        async def factory() -> ByteStream:
            raise ConnectionRefusedError(111, "Connection refused")

        t = FramedTransport(factory, "tcp://127.0.0.1:9")
        with pytest.raises(TransportError, match=r"^cannot connect to tcp://127.0.0.1:9: "
                                                 r"Connection refused$"):
            await t.connect()

    run_virtual(main)


def test_256_in_flight_then_an_abandoned_request_frees_its_seq() -> None:
    async def main() -> None:
        t, dev, _ = await _pair()
        futs = [t.write_nowait(CP, b"\x00", timeout_s=100) for _ in range(256)]
        with pytest.raises(TransportError, match="256 requests in flight"):
            t.write_nowait(CP, b"\x00")
        futs[7].cancel()
        again = t.write_nowait(BELT, b"\x01", timeout_s=100)
        reqs = [await dev.recv() for _ in range(257)]
        assert reqs[-1].seq == reqs[7].seq and reqs[-1].uuid == BELT
        dev.respond(reqs[-1], status=0x80)
        with pytest.raises(WriteRejected):
            await again
        assert t.counters["in_flight"] == 255
        await t.close()
        assert all(f.done() for f in futs)

    run_virtual(main)
