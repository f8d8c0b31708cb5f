"""``treadctl run``: the whole path from the command line to a recorded session, on the
simulator (virtual time), with exit codes per docs/cli.md."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        ["run", "quick-demo", "--profile", "kinetic-rx2", "--device", "sim://?profile=nope"],
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


# ---------------------------------------------------------------- first-contact fixes

SHORT_PROGRAM = """
name = "short"
[[segment]]
duration_s = 20
speed_kmh = 4.0
direction = "forward"
"""


def _program_file(tmp_path: Path, text: str = SHORT_PROGRAM) -> str:
    path = tmp_path / "program.toml"
    path.write_text(text)
    return str(path)


def test_default_speedup_is_real_time_on_one_virtual_clock(tmp_path: Path) -> None:
    """Without --speedup the simulator runs in real time (the help says default 1), on the
    paced virtual clock both sides share; 'max' only when asked."""
    from treadctl.cli import build_parser
    from treadctl.control.cli import _prepare

    def plan(*extra: str) -> Any:
        return _prepare(build_parser().parse_args(["run", "quick-demo", *extra]))

    default = plan()
    assert (default.speedup, default.virtual) == (1.0, True)
    assert plan("--speedup", "max").speedup is None
    assert plan("--device", "sim://?speedup=7").speedup == 7.0
    assert plan("--speedup", "30").speedup == 30.0
    tcp = plan("--device", "tcp://127.0.0.1:9")
    assert (tcp.speedup, tcp.virtual) == (1.0, False)
    assert plan("--device", "tcp://127.0.0.1:9", "--speedup", "4").speedup == 4.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tcp://127.0.0.1:9", "--speedup", "max"], "only applies to a simulator"),
        (["--device", "tcp://127.0.0.1:9", "--speedup", "30"], "use at most 5"),
        (["--device", "sim://?speedup=7", "--speedup", "3"], "differ"),
        (["--device", "ble://AA:BB:CC:DD:EE:FF", "--speedup", "2"], "only applies"),
    ],
)
def test_speedups_that_cannot_be_kept_are_refused(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "quick-demo", *args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_sped_up_run_survives_a_starved_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 30x a host stall of 0.3 s real was 9 s of silence for the simulator's watchdog and
    the controller's telemetry check (README demo e-stops under load). On the one virtual
    clock a stall only makes the run slower: the session finishes, nothing trips."""
    import time

    import treadctl.control.cli as run_cli

    real_update = run_cli._View.update
    calls = [0]

    def starving_update(view: Any, snap: Any) -> None:
        calls[0] += 1
        if calls[0] in (20, 60, 100):
            time.sleep(0.3)  # the injected fault: the whole process is starved of CPU
        real_update(view, snap)

    monkeypatch.setattr(run_cli._View, "update", starving_update)
    argv = ["run", _program_file(tmp_path), "--speedup", "30", "--json"]
    rc = main([*argv, "--data-dir", str(tmp_path)])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 0, lines[-1]
    assert lines[-1]["outcome"] == "finished"
    assert not any(line.get("latched") for line in lines)
    assert calls[0] > 100, "the stalls were not all injected"


def test_paced_virtual_time_does_not_move_while_code_runs() -> None:
    """The property the run relies on, at the clock: a blocked loop is not elapsed time."""
    import time

    from treadctl import clock

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # The injected fault: starve the loop (at 50x that used to be 10 s of virtual time).
        time.sleep(0.2)  # noqa: ASYNC251
        stalled = loop.time() - t0
        await asyncio.sleep(1.0)
        return stalled, loop.time() - t0

    stalled, slept = clock.run(scenario(), speedup=50, virtual=True)
    assert stalled == 0.0
    assert slept == pytest.approx(1.0, abs=1e-9)


def _start_sim(speedup: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadctl", "sim", "--speedup", str(speedup)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_sim_and_run_speedups_must_agree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`treadctl sim --speedup 2` pairs with `run --device tcp://... --speedup 2`; a run at
    another speed-up is refused before anything moves, naming the value to pass."""
    proc, url = _start_sim(2.0)
    try:
        prog = _program_file(tmp_path, SHORT_PROGRAM.replace("20", "4"))
        assert main(["run", prog, "--device", url, "--no-record"]) == 2
        err = capsys.readouterr().err
        assert "runs at 2x and this run at 1x: pass --speedup 2" in err, err
        rc = main(["run", prog, "--device", url, "--speedup", "2", "--json", "--no-record"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert _json_lines(out)[-1]["outcome"] == "finished"
    finally:
        _stop(proc)


def _serve(handler: Any) -> tuple[Any, int]:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    conns: list[Any] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            handler(conn)

    threading.Thread(target=loop, daemon=True).start()
    return (server, conns), server.getsockname()[1]


def test_speedup_against_something_that_is_not_a_simulator_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server, conns), port = _serve(lambda conn: None)  # accepts, never answers
    try:
        argv = ["run", "quick-demo", "--device", f"tcp://127.0.0.1:{port}", "--speedup", "2"]
        assert main([*argv, "--no-record"]) == 2
        err = capsys.readouterr().err
        assert "is for a simulator" in err and "is not one" in err, err
    finally:
        server.close()
        for c in conns:
            c.close()


def test_peer_that_hangs_up_is_a_connection_error_not_an_estop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (server, _), port = _serve(lambda conn: conn.close())  # accepts, then hangs up
    try:
        argv = ["run", "quick-demo", "--device", f"tcp://127.0.0.1:{port}"]
        rc = main([*argv, "--data-dir", str(tmp_path)])
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert rc == 1
    assert err.count("\n") == 1, err
    assert "cannot use tcp://127.0.0.1" in err and "nothing moved" in err
    assert "estop" not in (out + err).lower() and "Traceback" not in err


def test_heartbeat_program_is_refused_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` has no dead-man heartbeat source: such a program would always e-stop."""
    prog = _program_file(tmp_path, "heartbeat_s = 3.0\n" + SHORT_PROGRAM)
    assert main(["run", prog, "--speedup", "max", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "heartbeat" in err and "treadctl daemon" in err and "nothing moved" in err
    assert not default_db_path(tmp_path).exists()  # nothing started, nothing recorded


def test_one_summary_line_with_the_session_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["run", "quick-demo", "--speedup", "max", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    tail = [line for line in out.splitlines() if not line.startswith("[")]
    assert len(tail) == 1, tail  # one summary, not two that disagree
    assert tail[0].startswith("session ") and " · 1:30 · " in tail[0], tail[0]
    assert "4/4 segments" in tail[0] and "belt stopped" in tail[0]


def test_live_view_final_frame_shows_how_it_ended() -> None:
    from rich.console import Console

    from treadctl.control.cli import STOPPING_NOTE, _View
    from treadctl.control.controller import Outcome, SessionResult, Snapshot, State
    from treadctl.programs.model import load_program

    frames: list[Any] = []

    class FakeLive:
        def update(self, renderable: Any, refresh: bool = False) -> None:
            frames.append(renderable)

        def stop(self) -> None:
            pass

    view = _View(True, load_program("quick-demo"))
    view._live = FakeLive()
    view.update(Snapshot(state=State.RUNNING, segment=4, segment_count=4, remaining_s=0.1))
    # What the controller shows once the session is over: idle, no segment.
    view.update(Snapshot(state=State.IDLE, segment=None, segment_count=4, remaining_s=0.0))
    result = SessionResult(Outcome.FINISHED, None, "s1", 89.95, 52.0, 4, True)
    view.close(result)
    console = Console(width=100, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(frames[-1])
    text = console.export_text()
    assert "finished" in text and "running" not in text and "idle" not in text, text
    assert "4/4" in text and "01:30 elapsed, 00:00 left" in text, text
    # A stopped session: the two times add up to the listed 1:30.
    frames.clear()
    view._live = FakeLive()
    view.note(STOPPING_NOTE)  # what Ctrl-C showed while the stop ran
    view.close(SessionResult(Outcome.STOPPED, "stopped on request", "s2", 29.4, 19.0, 1, True))
    console.print(frames[-1])
    text = console.export_text()
    assert "stopped (stopped on request)" in text and "00:29 elapsed, 01:01 left" in text
    assert "stopping" not in text, text  # the progress note is gone from the last frame


def test_a_session_left_running_by_a_killed_process_is_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL leaves a session 'running' for ever: the next run closes it as aborted."""
    db = default_db_path(tmp_path)
    code = (
        "import os, sys; from treadctl.store.db import SessionStore; "
        "s = SessionStore(sys.argv[1]); "
        "print(s.create_session({'treadmill_id': 'local', 'device': 'sim://', "
        "'profile': 'treadctl-reference', 'program_name': 'quick-demo'}), flush=True); "
        "os._exit(0)"  # dies without finishing it, like SIGKILL
    )
    child = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True,
                           text=True, check=True)
    stale = child.stdout.strip()
    with SessionStore(db) as store:
        assert str(store.get_session(stale).outcome) == "running"
    assert main(["run", "quick-demo", "--speedup", "max", "--data-dir", str(tmp_path)]) == 0
    assert f"session {stale} was left running" in capsys.readouterr().err
    with SessionStore(db) as store:
        info = store.get_session(stale)
        assert str(info.outcome) == "aborted" and "killed or crashed" in info.reason
        assert [str(s.outcome) for s in store.list_sessions()].count("running") == 0


def test_ctrl_c_while_connecting_starts_nothing_and_prints_no_traceback(tmp_path: Path) -> None:
    """A real process interrupted while it still talks to a treadmill that does not answer:
    nothing was started, exit 0 (the user's stop), one line, no traceback."""
    import threading

    accepted = threading.Event()

    def hold(conn: Any) -> None:
        accepted.set()  # accepts and never answers: the run waits for its acks

    (server, conns), port = _serve(hold)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadctl", "run", "quick-demo", "--device",
             f"tcp://127.0.0.1:{port}", "--no-record"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert accepted.wait(30), "the run never connected"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        server.close()
        for c in conns:
            c.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted before the session started; nothing moved" in err


def test_peer_that_never_speaks_ftms_is_a_connection_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Accepts the connection, never answers nor sends data: not a session that e-stops on
    command-timeout, but one line saying the device does not talk (exit 1)."""
    (server, conns), port = _serve(lambda conn: None)
    try:
        rc = main(["run", "quick-demo", "--device", f"tcp://127.0.0.1:{port}", "--no-record"])
    finally:
        server.close()
        for c in conns:
            c.close()
    out, err = capsys.readouterr()
    assert rc == 1, out + err
    assert "no treadmill data" in err and "nothing moved" in err and err.count("\n") == 1, err
    assert "estop" not in (out + err).lower()


def test_a_running_session_of_another_host_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its process cannot be checked from here: it may well be running."""
    import socket

    db = default_db_path(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(socket, "gethostname", lambda: "another-host")  # recorded over there
        with SessionStore(db) as store:
            other = store.create_session({"treadmill_id": "lane-9", "device": "sim://",
                                          "profile": "treadctl-reference", "program_name": "x"})
    assert main(["run", "quick-demo", "--speedup", "max", "--data-dir", str(tmp_path)]) == 0
    with SessionStore(db) as store:
        assert str(store.get_session(other).outcome) == "running"
