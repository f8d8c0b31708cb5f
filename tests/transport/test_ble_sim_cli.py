"""``treadctl sim --ble --hci TRANSPORT`` as its own process, on a virtual link: the test
runs a Bumble virtual controller and serves its HCI over TCP (``tcp-server:``); the simulator
process opens it as its adapter (``--hci tcp-client:``), exactly as it would open
``usb:0``. treadctl's BLE transport then finds, connects and drives it through a second
virtual controller on the same link. Real time (another process): every wait is for an
event, with a timeout; nothing asserts on durations."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from bumble.controller import Controller
from bumble.transport import open_transport

from treadctl import clock, ftms
from treadctl.clock import wait_until
from treadctl.simulator.ble import (
    CENTRAL_ADDRESS,
    BumbleScanner,
    PacedLink,
    _virtual_device,
    bumble_bleak_backend,
)
from treadctl.transport.ble import BleTransport

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_sim_ble_serves_an_ftms_treadmill_over_an_hci_transport() -> None:
    port = _free_port()
    speeds: list[float] = []

    async def main() -> tuple[str, int | None]:
        link = PacedLink()
        hci = await open_transport(f"tcp-server:127.0.0.1:{port}")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "treadctl", "sim", "--ble", "--hci",
            f"tcp-client:127.0.0.1:{port}",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=_env(),
        )
        try:
            # The adapter the simulator process drives: a virtual controller on our link.
            Controller("adapter", host_source=hci.source, host_sink=hci.sink, link=link)
            assert proc.stdout is not None
            first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
            central = _virtual_device(link, "treadctl", CENTRAL_ADDRESS)
            await central.power_on()

            def factory(device: object, cb: object) -> object:
                from bleak import BleakClient

                return BleakClient(device, cb, backend=bumble_bleak_backend(), central=central)

            t = BleTransport(name_prefix="TREADCTL-SIM", client_factory=factory,
                             scanner=BumbleScanner(central), scan_timeout_s=10.0)
            t.set_notify_handler(
                lambda uuid, v: speeds.append(
                    ftms.decode_treadmill_data(v, pace_format="uint8-0.1kmpmin").speed_kmh or 0
                ) if uuid == ftms.TREADMILL_DATA and not v[0] & 1 else None
            )
            await t.connect()
            assert t._client.address == first.removeprefix("ble://")
            for uuid in (ftms.TREADMILL_DATA, ftms.MACHINE_STATUS, ftms.CONTROL_POINT):
                await t.subscribe(uuid)
            for req in (ftms.RequestControl(), ftms.StartOrResume(), ftms.SetTargetSpeed(2.0)):
                await t.write(ftms.CONTROL_POINT, ftms.encode_control_point(req), timeout_s=5)
                await asyncio.sleep(0.3)
            assert await wait_until(lambda: bool(speeds) and speeds[-1] > 1.0, 20)
            await t.write(ftms.CONTROL_POINT,
                          ftms.encode_control_point(ftms.StopOrPause(pause=False)), timeout_s=5)
            assert await wait_until(lambda: speeds[-1] == 0.0, 20)
            await t.close()
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 20)
            return first, rc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await hci.close()

    first, rc = clock.run(main(), speedup=1)
    assert first == "ble://F0:0D:12:34:56:78"
    assert rc == 0
    assert max(speeds) >= 1.0


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=_env(), timeout=60)


def test_without_bumble_sim_ble_is_one_line_and_the_rest_never_imports_it() -> None:
    out = _run(
        "import sys; sys.modules['bumble'] = None\n"
        "from treadctl.cli import main\n"
        "sys.exit(main(['sim', '--ble']))"
    )
    assert out.returncode == 1
    err = out.stderr.strip()
    assert "\n" not in err and err.startswith("treadctl sim: --ble needs Bumble (")
    assert "pip install 'treadctl[ble-sim]'" in err
    out = _run(
        "import sys\n"
        "import treadctl.cli, treadctl.simulator, treadctl.simulator.cli, treadctl.transport\n"
        "import treadctl.transport.ble, treadctl.control.controller\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bumble'))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sim_ble_usage_errors() -> None:
    out = subprocess.run([sys.executable, "-m", "treadctl", "sim", "--hci", "usb:0"],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert out.returncode == 2 and "--hci needs --ble" in out.stderr
    out = subprocess.run([sys.executable, "-m", "treadctl", "sim", "--ble", "--speedup", "5"],
                         capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert out.returncode == 2 and "real time" in out.stderr
