"""The ``treadctl`` command line (docs/cli.md).

Each command group lives next to the code it drives and exposes
``register(subparsers)``; the parser it adds sets ``func=handler`` where
``handler(args) -> int`` returns the exit code. Exit codes: 0 finished, 1 runtime
error, 2 bad usage / invalid input (nothing moved), 3 stopped by an interlock or e-stop.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from treadctl import __version__

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_SAFETY = 3

# Modules that add sub-commands, in the order they appear in --help.
_COMMAND_MODULES = (
    "treadctl.control.cli",  # run
    "treadctl.daemon.cli",  # daemon
    "treadctl.simulator.cli",  # sim
    "treadctl.transport.cli",  # scan
    "treadctl.programs.cli",  # programs
    "treadctl.profiles_cli",  # profiles
    "treadctl.ftms.cli",  # ftms decode
    "treadctl.hr.cli",  # hr decode
    "treadctl.store.cli",  # sessions
    "treadctl.dashboard.cli",  # dashboard
)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="treadctl",
        description="Safe forward/reverse treadmill sessions over FTMS.",
    )
    parser.add_argument("--version", action="version", version=f"treadctl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # command group not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
