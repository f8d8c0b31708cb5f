"""``treadctl run``: the whole path from the command line to a recorded session, on the
simulator (virtual time), with exit codes per docs/cli.md."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.cli import main
from treadctl.store.db import SessionStore, default_db_path


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_run_reverse_program_json_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["run", "quick-demo", "--speedup", "max", "--json", "--data-dir", str(tmp_path)])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 0
    required = {
        "ts",
        "elapsed_s",
        "state",
        "segment",
        "direction",
        "target_speed_kmh",
        "speed_kmh",
        "incline_pct",
    }
    progress, summary = lines[:-1], lines[-1]
    assert all(required <= set(line) for line in progress)
    assert any(line["direction"] == "reverse" and line["state"] == "running" for line in progress)
    assert summary["summary"] is True and summary["outcome"] == "finished"
    assert summary["belt_stopped"] is True
    store = SessionStore(default_db_path(tmp_path))
    try:
        info = store.get_session(str(summary["session_id"]))
        assert info.outcome == "finished"
        samples = store.samples(info.id)
        assert any(s.direction == "reverse" and s.speed_kmh > 1.5 for s in samples)
    finally:
        store.close()


def test_run_exit_3_on_interlock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "run",
            "quick-demo",
            "--device",
            "sim://?faults=runaway@30",
            "--speedup",
            "max",
            "--json",
            "--data-dir",
            str(tmp_path),
        ]
    )
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert rc == 3
    assert summary["outcome"] == "estopped" and "overspeed" in str(summary["reason"])


@pytest.mark.parametrize(
    "args",
    [
        ["run", "no-such-program"],
        ["run", "quick-demo", "--device", "bogus://"],
        ["run", "reverse-walk-intro", "--profile", "generic-ftms"],  # reverse on forward-only
        ["run", "quick-demo", "--speedup", "-3"],
        ["run", "quick-demo", "--device", "tcp://127.0.0.1:9", "--speedup", "10"],
    ],
)
def test_run_bad_usage_exit_2(args: list[str], tmp_path: Path) -> None:
    assert main([*args, "--data-dir", str(tmp_path)]) == 2


def test_sigterm_is_a_controlled_stop(tmp_path: Path) -> None:
    """A real process on scaled time: SIGTERM mid-session stops the belt, exit 0, recorded."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "treadctl",
            "run",
            "reverse-walk-intro",
            "--speedup",
            "5",
            "--json",
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the belt runs
        if '"state": "running"' in line and '"speed_kmh": 0.0' not in line:
            break
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = _json_lines(out)[-1]
    assert summary["outcome"] == "stopped" and summary["belt_stopped"] is True
