"""The top-level command line: one-line entries for every command, each command's own
parser only when it runs (a cold ``treadctl --help`` imports none of them)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from treadctl import cli


def _helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {ch.dest: ch.help for ch in sub._choices_actions}


def test_the_static_help_of_every_command_is_the_one_its_module_registers() -> None:
    full = _helps(cli.build_parser())  # every module imported and registered
    assert full == {name: help_text for name, _, help_text in cli.COMMANDS}


def test_only_the_named_command_is_built() -> None:
    parser = cli.build_parser(["profiles", "list"])
    args = parser.parse_args(["profiles", "list"])
    assert callable(args.func)
    assert set(_helps(parser)) == {name for name, _, _ in cli.COMMANDS}


def test_top_level_help_imports_no_command_module() -> None:
    code = (
        "import contextlib, io, json, sys\n"
        "from treadctl import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('treadctl')"
        " or m == 'asyncio')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = set(json.loads(out))
    modules = {module for _, module, _ in cli.COMMANDS}
    assert not loaded & modules, loaded & modules
    assert "asyncio" not in loaded and "treadctl.control.controller" not in loaded


def test_an_unknown_command_is_bad_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "treadctl", "bogus"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'bogus'" in proc.stderr
