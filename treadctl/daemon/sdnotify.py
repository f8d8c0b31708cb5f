"""systemd's notify protocol (sd_notify(3)) without python-systemd.

This module owns the daemon's side of ``Type=notify`` + ``WatchdogSec=``: it
sends ``KEY=VALUE`` lines as one datagram to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the abstract
namespace) and reads the watchdog interval systemd hands over in
``$WATCHDOG_USEC`` / ``$WATCHDOG_PID``.

Everything here is a no-op that returns ``False`` when not run by systemd, so
the daemon calls it unconditionally. Sends never block and never raise: a
notification must not stall or crash the loop that keeps belts safe. A lost
``WATCHDOG=1`` is harmless as long as the caller pings at half the interval
(see :func:`watchdog_interval_s`).
"""

from __future__ import annotations

import os
import socket

__all__ = [
    "extend_timeout",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval_s",
]


def _socket_address() -> str | None:
    """The address to send to, or None when there is nothing usable to talk to."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        # Abstract namespace: Linux wants a leading NUL byte instead of '@'.
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    # Unset, empty, relative, or a transport we do not speak (systemd >= 254 also
    # allows "vsock:CID:PORT", used for VMs, never for a service on a Pi).
    return None


def notify(state: str) -> bool:
    """Send ``state`` (one or more ``KEY=VALUE`` lines) to systemd.

    Returns True when the datagram was handed to the socket, False when not run
    under systemd (no ``$NOTIFY_SOCKET``) or when sending failed.
    """
    address = _socket_address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Non-blocking: if systemd's queue is full we drop this notification
            # rather than stall the event loop that runs the belts.
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode("utf-8"))
    except OSError:
        return False
    return True


def _one_line(text: str) -> str:
    # Each assignment is one line of the datagram; a newline inside STATUS would
    # start a bogus assignment.
    return " ".join(text.splitlines())


def ready(status: str | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
    if status is None:
        return notify("READY=1")
    return notify(f"READY=1\nSTATUS={_one_line(status)}")


def stopping() -> bool:
    """Tell systemd a controlled shutdown has begun (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Set the free-form status shown by ``systemctl status`` (``STATUS=``)."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=`` (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1")


def extend_timeout(seconds: float) -> bool:
    """Ask for more time in the current start or stop phase (``EXTEND_TIMEOUT_USEC=``).

    Useful while belts are still ramping down in a controlled stop: systemd then
    waits at least ``seconds`` more before escalating to SIGKILL.
    """
    usec = max(0, round(seconds * 1_000_000))
    return notify(f"EXTEND_TIMEOUT_USEC={usec}")


def watchdog_interval_s() -> float | None:
    """The watchdog timeout systemd enforces on this process, in seconds, or None.

    None when no watchdog is configured, when the values are malformed, or when
    ``$WATCHDOG_PID`` names another process (the variables leaked to a child).
    Ping with :func:`watchdog` at about half this interval, as sd_watchdog_enabled(3)
    recommends, so one late or lost ping never trips it.
    """
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text is not None:
        try:
            pid = int(pid_text)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    return usec / 1_000_000
