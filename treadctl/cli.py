"""The ``treadctl`` command line (docs/cli.md).

Each command group lives next to the code it drives and exposes
``register(subparsers)``; the parser it adds sets ``func=handler`` where
``handler(args) -> int`` returns the exit code. Exit codes: 0 finished, 1 runtime
error, 2 bad usage / invalid input (nothing moved), 3 stopped by an interlock or e-stop.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from treadctl import __version__

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_SAFETY = 3

#: Every sub-command: (name, the module that adds it, its one-line help), in --help order.
#: A module is imported only when its command runs (or its own --help is asked for):
#: ``treadctl --help`` and ``treadctl profiles list`` do not pay for asyncio, the
#: controller or the daemon. tests/test_cli.py checks each help against its module.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "treadctl.control.cli", "run one program (default device: the built-in simulator)"),
    ("daemon", "treadctl.daemon.cli", "run the MQTT gym daemon"),
    ("sim", "treadctl.simulator.cli", "run the treadmill simulator behind TCP or a pty"),
    ("scan", "treadctl.transport.cli", "list FTMS treadmills nearby (BLE)"),
    ("programs", "treadctl.programs.cli", "training programs: list, show NAME, validate FILE"),
    ("profiles", "treadctl.profiles_cli", "firmware profiles: list, show NAME"),
    ("ftms", "treadctl.ftms.cli", "FTMS codec tools"),
    ("hr", "treadctl.hr.cli", "heart-rate tools"),
    ("sessions", "treadctl.store.cli", "list, show, export and plot recorded sessions"),
    ("dashboard", "treadctl.dashboard.cli",
     "the web front desk: every lane live, stop any belt"),
)  # fmt: skip


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command word of ``argv`` (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full parser of the command ``argv`` names (every command's
    full parser when ``argv`` is None); the others are one-line entries for --help."""
    parser = argparse.ArgumentParser(
        prog="treadctl",
        description="Safe forward/reverse treadmill sessions over FTMS or a treadmill "
        "maker's own protocol.",
    )
    parser.add_argument("--version", action="version", version=f"treadctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if argv is None else _command_of(argv)
    for name, module_name, help_text in COMMANDS:
        if argv is None or name == wanted:
            importlib.import_module(module_name).register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, *, program: bool = False) -> int:
    """Run one command and return its exit code. ``program``: this is the ``treadctl``
    process itself (:func:`entry`), which exits next; otherwise (a caller in the same
    process, such as a test) the interrupt handler found here is put back on return."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    interrupts = signal.getsignal(signal.SIGINT)
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except BrokenPipeError:
        return EXIT_OK
    finally:
        # A command may leave interrupts ignored once it has nothing left to stop (``run``
        # after its session: docs/cli.md); the program keeps it so through its exit.
        if not program and interrupts is not None:
            signal.signal(signal.SIGINT, interrupts)


def entry() -> None:
    """The ``treadctl`` console script and ``python -m treadctl``."""
    sys.exit(main(program=True))


if __name__ == "__main__":
    entry()
