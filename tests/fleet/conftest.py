"""Fleet fixtures: a central mosquitto with the shipped ACL (docs/examples/fleet/), two
site brokers bridged to it with the shipped bridge config (through a TCP cable the test can
cut), and a ``treadctl daemon`` per site with two simulated lanes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "docs" / "examples" / "fleet"


def _load(name: str, file: Path) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("daemon_helpers", REPO / "tests" / "daemon" / "helpers.py")
_load("dash_stack", REPO / "tests" / "dashboard" / "stack.py")

from dash_stack import Proc, daemon_toml  # noqa: E402

from soak.mosquitto import Mosquitto  # noqa: E402

PASSWORDS = {"site-a-bridge": "bridge-a-pw", "site-b-bridge": "bridge-b-pw",
             "fleet-dashboard": "dash-pw", "fleet-observer": "observer-pw",
             "test-spy": "spy-pw"}
SITE_LANES = [("lane-1", "treadctl-reference"), ("lane-2", "treadctl-reference")]


class Cable:
    """A TCP cable between a site's bridge and the central broker: ``cut()`` drops the
    connection and refuses new ones; ``mend()`` plugs it back in (same port)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def mend(self) -> Cable:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (OSError, asyncio.CancelledError):
            writer.close()
            return
        self._writers += [writer, up_w]
        for a, b in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pump(a, b))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
        with contextlib.suppress(Exception):
            writer.close()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        for task in list(self._pumps):
            task.cancel()


def passwd_file(path: Path, users: dict[str, str]) -> Path:
    for i, (user, password) in enumerate(users.items()):
        flags = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True,
                       capture_output=True, timeout=60)
    return path


def site_bridge_lines(site: str, cable_port: int) -> list[str]:
    """The shipped site bridge config for ``site``: the address is the test's cable, the
    password the test's, the central CA line dropped (plain TCP on this machine)."""
    out = []
    for line in (FLEET / "site-bridge.conf").read_text().splitlines():
        line = line.replace("site-a", site)
        if line.startswith("address "):
            line = f"address 127.0.0.1:{cable_port}"
        elif line.startswith("remote_password "):
            line = f"remote_password {PASSWORDS[site + '-bridge']}"
        elif line.startswith("bridge_cafile "):
            continue
        elif line.startswith("restart_timeout "):
            line = "restart_timeout 1 2"  # reconnect fast in the test
        out.append(line)
    return out


@dataclass
class Site:
    name: str
    broker: Mosquitto
    cable: Cable
    daemon: Proc
    lanes: list[str] = field(default_factory=lambda: [x[0] for x in SITE_LANES])


@dataclass
class Fleet:
    central: Mosquitto
    sites: dict[str, Site]
    workdir: Path
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))


@pytest.fixture
async def fleet(mosquitto_bin: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    pw = passwd_file(tmp_path / "central.passwd", PASSWORDS)
    acl = tmp_path / "central.acl"
    acl.write_text((FLEET / "central.acl").read_text()
                   + "\n# test only: sees everything, to prove what never arrives\n"
                     "user test-spy\ntopic read #\n")
    central = Mosquitto(tmp_path, [f"password_file {pw}", f"acl_file {acl}",
                                   "set_tcp_nodelay true"]).start()
    sites: dict[str, Site] = {}
    try:
        for name in ("site-a", "site-b"):
            cable = await Cable(central.port).mend()
            broker = Mosquitto(tmp_path, ["set_tcp_nodelay true",
                                          *site_bridge_lines(name, cable.port)]).start()
            data = tmp_path / f"{name}-data"
            cfg = tmp_path / f"{name}-daemon.toml"
            cfg.write_text(daemon_toml(broker.port, data, SITE_LANES,
                                       f"{name}-{uuid.uuid4().hex[:6]}"))
            daemon = Proc(["daemon", "--config", str(cfg)], tmp_path / f"{name}-daemon.log")
            sites[name] = Site(name, broker, cable, daemon)
        yield Fleet(central, sites, tmp_path)
    finally:
        for s in sites.values():
            s.daemon.stop()
            await s.cable.cut()
            s.broker.stop()
        central.stop()
