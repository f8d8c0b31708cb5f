"""ONE behaviour suite, run over every transport that can run here (python-can style):

* ``sim``    - ``sim://`` in-process, on virtual time
* ``tcp``    - ``tcp://`` against ``treadctl sim --listen`` in a separate process
* ``serial`` - ``serial:///dev/pts/N`` against ``treadctl sim --pty`` (real pty, real pyserial)
* ``ble``    - ``BleTransport`` through the fake bleak client onto an in-process simulator

Cross-process runs use real time: every wait is for a frame or event, with a timeout; the
belt's ground truth is the simulator (in-process) or its telemetry (other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from treadctl.clock import run, run_virtual
from treadctl.ftms import (
    BELT_DIRECTION,
    CONTROL_POINT,
    MACHINE_STATUS,
    TREADMILL_DATA,
    ControlPointRequest,
    ControlPointResponse,
    RequestControl,
    ResultCode,
    SetTargetSpeed,
    StartOrResume,
    StopOrPause,
    decode_belt_direction,
    decode_control_point_response,
    decode_treadmill_data,
    encode_control_point,
)
from treadctl.profiles import load_profile
from treadctl.simulator import SimTreadmill
from treadctl.transport import LinkLost, Transport, WriteRejected, open_transport
from treadctl.transport.ble import BleTransport

import fake_bleak

PROFILE = "treadctl-reference"
REPO = Path(__file__).resolve().parents[2]
TARGET_KMH = 2.0
MOVING_KMH = 1.0  # enough to prove the belt moves; keeps the real-time runs short


# -- the transports --------------------------------------------------------------------------


@dataclass
class Link:
    kind: str
    url: str = ""
    virtual: bool = True
    #: In-process runs: the simulator behind the transport (ground truth).
    sim: SimTreadmill | None = None
    _cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def open(self) -> Transport:
        """A new, unconnected transport to the same treadmill (call inside the loop)."""
        if self.kind == "sim":
            t = open_transport(f"sim://?profile={PROFILE}")
            # SimTransport creates its simulator at connect(); remember it afterwards.
            return t
        if self.kind == "ble":
            if self.sim is None:
                self.sim = SimTreadmill(load_profile(PROFILE))
                task = asyncio.get_running_loop().create_task(self.sim.run())
                self._cleanup.append(lambda: fake_bleak.stop_task(task))
            scanner = fake_bleak.FakeScanner(
                [fake_bleak.other_advert(), fake_bleak.treadmill_advert()]
            )
            return BleTransport(
                name_prefix="TREADCTL",
                client_factory=fake_bleak.ClientFactory(self.sim),
                scanner=scanner,
                scan_timeout_s=2.0,
            )
        return open_transport(self.url)

    def truth_kmh(self, t: Transport) -> float | None:
        sim = self.sim or getattr(t, "_sim", None)
        return None if sim is None else abs(sim.truth().speed_kmh)

    async def aclose(self) -> None:
        for fn in reversed(self._cleanup):
            await fn()

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        async def wrapped() -> None:
            try:
                await main()
            finally:
                await self.aclose()

        if self.virtual:
            run_virtual(wrapped)
        else:
            run(wrapped(), speedup=1)


def _spawn_sim(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadctl.cli", "sim", "--profile", PROFILE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().strip() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"treadctl sim {' '.join(args)} printed no address: {err.strip()}")
    return proc, line


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture(params=["sim", "tcp", "serial", "ble"])
def link(request: pytest.FixtureRequest) -> Iterator[Link]:
    kind = request.param
    if kind in ("sim", "ble"):
        yield Link(kind)
        return
    args = ("--listen", "tcp://127.0.0.1:0") if kind == "tcp" else ("--pty",)
    proc, where = _spawn_sim(*args)
    request.addfinalizer(lambda: _kill(proc))
    url = where if kind == "tcp" else f"serial://{where}"
    assert url.startswith(("tcp://127.0.0.1:", "serial:///dev/")), where
    yield Link(kind, url=url, virtual=False)


# -- what the host sees ------------------------------------------------------------------------


class Seen:
    """Notifications as they arrive, and a way to wait for a condition on them."""

    def __init__(self) -> None:
        self.speeds_kmh: list[float] = []
        self.directions: list[bool] = []  # True = reverse
        self.cp: asyncio.Queue[ControlPointResponse] = asyncio.Queue()
        self.statuses: list[bytes] = []
        self._changed = asyncio.Event()

    def __call__(self, uuid: int, value: bytes) -> None:
        if uuid == TREADMILL_DATA:
            td = decode_treadmill_data(value)
            if td.speed_kmh is not None:
                self.speeds_kmh.append(abs(td.speed_kmh))
        elif uuid == CONTROL_POINT:
            self.cp.put_nowait(decode_control_point_response(value))
        elif uuid == BELT_DIRECTION:
            self.directions.append(decode_belt_direction(value).reverse)
        elif uuid == MACHINE_STATUS:
            self.statuses.append(value)
        self._changed.set()

    async def until(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not pred():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")

    @property
    def speed_kmh(self) -> float | None:
        return self.speeds_kmh[-1] if self.speeds_kmh else None


async def _connect(t: Transport, seen: Seen) -> None:
    t.set_notify_handler(seen)
    await t.connect()
    for uuid in (TREADMILL_DATA, CONTROL_POINT, MACHINE_STATUS, BELT_DIRECTION):
        await t.subscribe(uuid)


def _keepalive(t: Transport) -> asyncio.Task[None]:
    async def loop() -> None:
        with contextlib.suppress(LinkLost):
            while True:
                await t.keepalive()
                await asyncio.sleep(0.1)  # reference firmware: link_timeout_ms = 500

    return asyncio.get_running_loop().create_task(loop())


async def _command(t: Transport, seen: Seen, req: ControlPointRequest) -> None:
    await t.write(CONTROL_POINT, encode_control_point(req), timeout_s=2.0)
    resp = await asyncio.wait_for(seen.cp.get(), 2.0)
    assert resp.request_opcode == req.opcode
    assert resp.result == ResultCode.SUCCESS, resp


# -- the behaviour ------------------------------------------------------------------------------


def test_session_start_speed_telemetry_direction_stop(link: Link) -> None:
    async def main() -> None:
        t = await link.open()
        seen = Seen()
        await _connect(t, seen)
        keepalive = _keepalive(t)
        try:
            await _command(t, seen, RequestControl())
            assert decode_belt_direction(await t.read(BELT_DIRECTION, timeout_s=2)).reverse is False
            await _command(t, seen, StartOrResume())
            await _command(t, seen, SetTargetSpeed(TARGET_KMH))
            await seen.until(
                lambda: (seen.speed_kmh or 0) >= MOVING_KMH, 10, "telemetry showing the belt moving"
            )
            assert seen.directions and seen.directions[-1] is False  # notified: forward

            # A direction change while the belt moves is refused with the same ATT error
            # (0x80) on every transport.
            with pytest.raises(WriteRejected) as info:
                await t.write(BELT_DIRECTION, b"\x01", timeout_s=2)
            assert (info.value.uuid, info.value.status) == (BELT_DIRECTION, 0x80)

            await _command(t, seen, StopOrPause())
            await seen.until(lambda: seen.speed_kmh == 0.0, 10, "telemetry showing the belt at 0")
            truth = link.truth_kmh(t)
            assert truth is None or truth == 0.0
            assert max(seen.speeds_kmh) >= MOVING_KMH
            assert len(seen.speeds_kmh) >= 3
            assert seen.statuses  # Fitness Machine Status events arrived (started, stopped...)
            assert t.counters.get("notifications", 0) > 0
        finally:
            keepalive.cancel()
            await t.close()

    link.run(main)


def test_link_loss_stops_the_belt_through_the_firmware_watchdog(link: Link) -> None:
    """``drop()`` cuts the link; the firmware, not the host, then stops the belt."""

    async def main() -> None:
        t = await link.open()
        seen = Seen()
        await _connect(t, seen)
        keepalive = _keepalive(t)
        await _command(t, seen, RequestControl())
        await _command(t, seen, StartOrResume())
        await _command(t, seen, SetTargetSpeed(TARGET_KMH))
        await seen.until(lambda: (seen.speed_kmh or 0) >= MOVING_KMH, 10, "the belt moving")
        sim = link.sim or getattr(t, "_sim", None)
        t.drop()
        keepalive.cancel()
        with pytest.raises(LinkLost):
            await t.write(CONTROL_POINT, encode_control_point(StopOrPause()))

        if sim is not None:  # in-process: ground truth, on virtual time
            await asyncio.sleep(3.0)
            truth = sim.truth()
            assert truth.speed_kmh == 0.0
            assert truth.stop_reason == "watchdog"
            await t.close()
            return

        # Another process: listen on a new link without sending anything (a frame would
        # feed the watchdog) and watch the telemetry fall to zero.
        again = await link.open()
        seen2 = Seen()
        await _connect(again, seen2)
        try:
            await seen2.until(
                lambda: seen2.speed_kmh == 0.0, 10, "telemetry showing the watchdog stop"
            )
        finally:
            await again.close()

    link.run(main)
