"""A real mosquitto on a free port, started and crashed on demand.

Used by the daemon tests (``tests/conftest.py``), the soak's broker phase
(:mod:`soak.broker`) and the daemon benchmark; it needs the ``mosquitto`` binary
(``$MOSQUITTO``, default ``/usr/sbin/mosquitto``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


class Mosquitto:
    """One mosquitto process. ``stop()`` kills it (SIGKILL: a crash, not a shutdown);
    ``start()`` (re)starts it on the same port with the same config."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, lines: list[str] | None = None, port: int | None = None,
                 listener_extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        body = [f"listener {self.port} 127.0.0.1", *(listener_extra or [])]
        if not any(line.startswith(("allow_anonymous", "password_file")) for line in
                   lines or []):
            body.append("allow_anonymous true")
        if not any(line.startswith("set_tcp_nodelay") for line in lines or []):
            # As docs/examples/mosquitto/treadctl.conf ships it: with Nagle on, each small
            # command round trip waited ~40-45 ms for a delayed ACK (measured in the daemon
            # tests and bench_daemon).
            body.append("set_tcp_nodelay true")
        body += [*(lines or []), "persistence false", "log_dest stderr", "log_type error"]
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", who cannot read the test's
            # tmp files (certificates, password file); stay root.
            body.append("user root")
        self.conf.write_text("\n".join(body) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not open its port")
            time.sleep(0.02)  # polling a condition (the port), not waiting for time to pass
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
