"""What a user does to ``treadctl run``, on every shipped profile, in every phase, judged from
the simulator's physics (like test_fault_matrix.py for the interlocks).

* **profiles:** generic-ftms (forward programs), treadctl-reference, kinetic-rx2;
* **phases:** accelerating, cruising, mid direction change (reverse profiles only);
  *paused* does not apply to ``run``: it has no pause command (a terminal has no pause key;
  pause/resume is the daemon's cmd/pause, covered in tests/control/test_controlled_stop.py
  at the controller and in tests/daemon/);
* **actions:** one Ctrl-C, two Ctrl-C, SIGTERM, the program's natural end.

Documented outcomes (docs/safety.md, docs/cli.md): one stop is a controlled stop (outcome
``stopped``, exit 0, a summary line, nothing latched; the simulated belt brakes at the
firmware's controlled-stop rate and nothing that could move it follows our Stop); two
Ctrl-C is an e-stop (exit 3); the natural end is ``finished`` at the listed duration; never
a traceback; no session left ``running`` in the store.

Most cases run ``treadctl run`` in this process on virtual time, with real signals sent to
this process (the run's own signal handlers take them). A few run the real interpreter
(``python -m treadctl run``), some against ``treadctl sim`` in its own process over TCP, to
catch what only a real process prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import treadctl.control.cli as run_cli
from treadctl.cli import main
from treadctl.profiles import load_profile
from treadctl.store.db import SessionStore, default_db_path

from harness import assert_controlled_stop, first_stop_after, motion_writes_after

FORWARD_PROGRAM = """
name = "ua-forward"
[[segment]]
duration_s = 40
speed_kmh = 4.0
direction = "forward"
[[segment]]
duration_s = 20
speed_kmh = 5.0
direction = "forward"
"""
REVERSE_PROGRAM = """
name = "ua-reverse"
[[segment]]
duration_s = 30
speed_kmh = 4.0
direction = "forward"
[[segment]]
duration_s = 30
speed_kmh = 3.0
direction = "reverse"
"""
LISTED_S = 60.0

PROFILES = ["generic-ftms", "treadctl-reference", "kinetic-rx2"]
PHASES = ["accelerating", "cruising", "mid-direction-change"]
ACTIONS = ["ctrl-c", "ctrl-c-twice", "sigterm"]


def _reverse(profile: str) -> bool:
    return load_profile(profile).supports_reverse


CASES = [
    (profile, phase, action)
    for profile in PROFILES
    for phase in PHASES
    for action in ACTIONS
    if phase != "mid-direction-change" or _reverse(profile)
]


@dataclass
class Run:
    rc: int
    out: str
    err: str
    sim: Any
    t_action: float | None
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        assert self.lines and self.lines[-1].get("summary") is True, self.out[-2000:]
        return self.lines[-1]


def _phase_reached(phase: str, snap: Any, sim: Any) -> bool:
    speed = abs(sim.truth().speed_kmh)
    state = snap.state.value
    if phase == "accelerating":
        return state == "running" and 1.0 < speed < 3.0
    if phase == "cruising":
        return state == "running" and abs(speed - 4.0) < 0.05
    return snap.segment == 2 and snap.phase == "dwell"


def run_in_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    profile: str,
    *,
    phase: str | None = None,
    action: str | None = None,
    extra: list[str] | None = None,
) -> Run:
    """``treadctl run`` in this process on jumping virtual time; at ``phase`` the signals
    of ``action`` are sent to this very process."""
    prog = tmp_path / "program.toml"
    prog.write_text(REVERSE_PROGRAM if _reverse(profile) else FORWARD_PROGRAM)
    transports: list[Any] = []
    real_open = run_cli.open_transport

    def capture(url: Any, **kw: Any) -> Any:
        transports.append(real_open(url, **kw))
        return transports[-1]

    monkeypatch.setattr(run_cli, "open_transport", capture)
    fired: list[float] = []
    real_update = run_cli._View.update

    def update(view: Any, snap: Any) -> None:
        real_update(view, snap)
        if action is None or fired or not transports:
            return
        sim = transports[0].sim
        assert phase is not None
        if not _phase_reached(phase, snap, sim):
            return
        fired.append(sim.now_s())
        sig = signal.SIGTERM if action == "sigterm" else signal.SIGINT
        os.kill(os.getpid(), sig)
        if action == "ctrl-c-twice":
            # A double tap: 0.3 s later while the belt brakes, at once if it stands.
            gap = 0.0 if phase == "mid-direction-change" else 0.3
            loop = asyncio.get_running_loop()
            loop.call_later(gap, os.kill, os.getpid(), signal.SIGINT)

    monkeypatch.setattr(run_cli._View, "update", update)
    argv = ["run", str(prog), "--profile", profile, "--speedup", "max", "--json"]
    rc = main([*argv, "--data-dir", str(tmp_path), *(extra or [])])
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines() if x.startswith("{")]
    sim = transports[0].sim if transports else None
    return Run(rc, captured.out, captured.err, sim, fired[0] if fired else None, lines)


def assert_store_closed(tmp_path: Path, outcome: str) -> None:
    with SessionStore(default_db_path(tmp_path)) as store:
        sessions = store.list_sessions(50)
    assert sessions, "the session was not recorded"
    assert [str(s.outcome) for s in sessions] == [outcome], sessions


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err
    assert "CancelledError" not in run.err


@pytest.mark.parametrize(("profile", "phase", "action"), CASES)
def test_user_action(
    profile: str,
    phase: str,
    action: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = run_in_process(tmp_path, monkeypatch, capsys, profile, phase=phase, action=action)
    assert run.t_action is not None, f"phase {phase} never reached"
    assert_no_traceback(run)
    summary = run.summary
    assert summary["belt_stopped"] is True
    assert run.sim.truth().speed_kmh == 0.0
    if action == "ctrl-c-twice":
        assert run.rc == 3, run.err
        assert summary["outcome"] == "estopped", summary
        assert "second interrupt" in str(summary["reason"])
        # Latched: nothing that could move the belt reached the firmware after our Stop.
        assert motion_writes_after(run.sim, first_stop_after(run.sim, run.t_action)) == []
        assert_store_closed(tmp_path, "estopped")
        return
    assert run.rc == 0, (run.rc, run.err)
    assert summary["outcome"] == "stopped", summary
    assert not any(line.get("latched") for line in run.lines), "a stop request latched"
    assert_controlled_stop(run.sim, run.t_action, profile)
    assert_store_closed(tmp_path, "stopped")


@pytest.mark.parametrize("profile", PROFILES)
def test_natural_end(
    profile: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The program runs to its end: finished, exit 0, at the listed duration; the time left
    shown reaches 0 only with the belt standing and the session over."""
    run = run_in_process(tmp_path, monkeypatch, capsys, profile)
    assert_no_traceback(run)
    assert run.rc == 0, run.err
    summary = run.summary
    assert summary["outcome"] == "finished" and summary["belt_stopped"] is True
    assert summary["segments_completed"] == 2
    assert abs(summary["elapsed_s"] - LISTED_S) <= 0.5, summary["elapsed_s"]
    assert summary["stats"]["duration_s"] == summary["elapsed_s"]  # one duration
    progress = run.lines[:-1]
    for line in progress:
        if line["remaining_s"] == 0:
            assert line["speed_kmh"] == 0.0 and line["state"] == "idle", line
    assert progress[-1]["remaining_s"] == 0
    truth = run.sim.truth()
    assert truth.speed_kmh == 0.0 and truth.stop_reason == "user"
    assert_store_closed(tmp_path, "finished")


# ------------------------------------------------------------------ real processes


def _popen(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def sim_process() -> Iterator[Callable[[str, float], str]]:
    """Start ``treadctl sim`` in its own process; returns its tcp:// URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(profile: str, speedup: float) -> str:
        proc = _popen(["sim", "--profile", profile, "--speedup", str(speedup)])
        procs.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("tcp://"), proc.stderr.read() if proc.stderr else url
        return url

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _signal_when_cruising(proc: subprocess.Popen[str], signals: list[signal.Signals]) -> str:
    """Read JSON lines until the belt runs at the first segment's 4 km/h, send ``signals``
    (a double tap for two), return the rest of the output."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("state") == "running" and d.get("speed_kmh", 0) >= 3.9:
                break
    else:
        raise AssertionError("the belt never ran: " + "".join(seen))
    proc.send_signal(signals[0])
    if len(signals) > 1:
        # Pending signals of one kind merge in the kernel: the second tap comes once the
        # first one's stop shows (a person's double tap is that far apart too).
        for line in proc.stdout:
            seen.append(line)
            if '"state": "stopping"' in line:
                break
        for sig in signals[1:]:
            proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "Traceback" not in out, err
    return "".join(seen) + out


@pytest.mark.parametrize(
    ("profile", "signals", "rc", "outcome"),
    [
        ("kinetic-rx2", [signal.SIGINT], 0, "stopped"),
        ("kinetic-rx2", [signal.SIGINT, signal.SIGINT], 3, "estopped"),
        ("treadctl-reference", [signal.SIGTERM], 0, "stopped"),
    ],
    ids=["rx2-ctrl-c", "rx2-ctrl-c-twice", "reference-sigterm"],
)
def test_real_process_in_process_sim(
    profile: str, signals: list[signal.Signals], rc: int, outcome: str, tmp_path: Path
) -> None:
    prog = tmp_path / "program.toml"
    prog.write_text(REVERSE_PROGRAM)
    proc = _popen(["run", str(prog), "--profile", profile, "--speedup", "4", "--json",
                   "--data-dir", str(tmp_path)])
    out = _signal_when_cruising(proc, signals)
    assert proc.returncode == rc, out[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["outcome"] == outcome and summary["belt_stopped"] is True
    assert_store_closed(tmp_path, outcome)


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM]], ids=["ctrl-c", "sigterm"])
def test_real_process_over_tcp_kinetic_rx2(
    signals: list[signal.Signals], tmp_path: Path, sim_process: Callable[[str, float], str]
) -> None:
    """The original report: kinetic-rx2 behind a real socket, a stop is a controlled stop."""
    url = sim_process("kinetic-rx2", 4.0)
    prog = tmp_path / "program.toml"
    prog.write_text(REVERSE_PROGRAM)
    proc = _popen(["run", str(prog), "--device", url, "--profile", "kinetic-rx2",
                   "--speedup", "4", "--json", "--data-dir", str(tmp_path)])
    out = _signal_when_cruising(proc, signals)
    assert proc.returncode == 0, out[-2000:]
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert lines[-1]["outcome"] == "stopped", lines[-1]
    assert not any(x.get("latched") for x in lines)
    assert_store_closed(tmp_path, "stopped")


# ---------------------------------------------------- a late tap, after the session ended


def test_ctrl_c_after_the_session_ended_in_process_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One Ctrl-C stops the belt; a second one that comes only once the session is over
    (the summary is being printed) has nothing to stop: exit 0 as for one tap, not a
    KeyboardInterrupt (exit 1); and this process gets its own interrupt handler back."""
    real_summary = run_cli._View.summary
    late: list[bool] = []

    def summary(view: Any, result: Any) -> None:
        late.append(True)
        os.kill(os.getpid(), signal.SIGINT)
        real_summary(view, result)

    monkeypatch.setattr(run_cli._View, "summary", summary)
    before = signal.getsignal(signal.SIGINT)
    run = run_in_process(tmp_path, monkeypatch, capsys, "kinetic-rx2", phase="cruising",
                         action="ctrl-c")
    assert late, "the summary was never printed"
    assert_no_traceback(run)
    assert run.rc == 0, (run.rc, run.err)
    assert run.summary["outcome"] == "stopped"
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_after_the_summary_real_process_exits_0(tmp_path: Path) -> None:
    """The same in a real process: the late tap lands while the interpreter reports and
    exits, where a KeyboardInterrupt would end it by SIGINT (exit -2) or with exit 1."""
    prog = tmp_path / "program.toml"
    prog.write_text(REVERSE_PROGRAM)
    proc = _popen(["run", str(prog), "--profile", "kinetic-rx2", "--speedup", "20", "--json",
                   "--data-dir", str(tmp_path)])
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("{") and json.loads(line).get("state") == "running":
            break
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("{") and json.loads(line).get("summary") is True:
            break
    else:
        raise AssertionError("no summary: " + "".join(seen))
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, (proc.returncode, err)
    assert json.loads(seen[-1])["outcome"] == "stopped"
