"""``treadctl sessions``: happy paths and the exit-2 error paths."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.cli import main
from treadctl.store.db import open_store
from treadctl.store.summary import print_summary

import store_synth as synth  # conftest puts it on sys.path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    # Read-only for the tests: built once per module.
    d = tmp_path_factory.mktemp("sessions") / "data"
    with open_store(d) as store:
        a = synth.record(store)
        b = synth.record(store, estop=False)
    return d, a, b


def test_list_table_and_json(
    data_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d, a, b = data_dir
    assert main(["sessions", "list", "--data-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert a in out and b in out and "estopped" in out and "reverse-walk-intro" in out
    assert main(["sessions", "list", "--json", "--limit", "1", "--data-dir", str(d)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["id"] in (a, b)


def test_list_json_is_one_object_per_session_and_line(
    data_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # JSON lines, like every other --json output (run, programs list, profiles list, scan).
    d, a, b = data_dir
    assert main(["sessions", "list", "--json", "--data-dir", str(d)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in rows)
    assert {r["id"] for r in rows} == {a, b}
    assert {r["outcome"] for r in rows} == {"estopped", "finished"}
    assert rows[0]["summary"]["distance_m"] > 0 and rows[0]["sample_count"] > 0


def test_list_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == ""  # no session, no line


def test_default_data_dir_from_xdg(
    data_dir: tuple[Path, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, a, _ = data_dir
    state = tmp_path / "state"
    state.mkdir()
    (state / "treadctl").symlink_to(d)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    assert main(["sessions", "show", a, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == a


def test_show_by_unique_prefix(
    data_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d, a, _ = data_dir
    assert main(["sessions", "show", a[:-1], "--data-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert a in out and "remote e-stop" in out and "segments completed" in out
    assert main(["sessions", "show", a, "--json", "--data-dir", str(d)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outcome"] == "estopped" and doc["summary"]["reverse_distance_m"] > 0
    assert any(e["type"] == "estop" for e in doc["events"])


def summary_of(d: Path, sid: str) -> dict[str, object]:
    with open_store(d) as store:
        summary = store.get_session(sid).summary
    assert summary is not None
    return dict(summary)


def _event_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("events")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("summary"))
    return lines[start:end]


def _count(line: str) -> int:
    """How many events one line of ``sessions show`` stands for (``×N`` when collapsed)."""
    mark = line.rpartition(" ×")[2]
    return int(mark.split()[0]) if " ×" in line and mark.split()[0].isdigit() else 1


def test_show_lists_every_event(
    data_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d, a, _ = data_dir
    with open_store(d) as store:
        stored = store.events(a)
    assert main(["sessions", "show", a, "--data-dir", str(d)]) == 0
    out = capsys.readouterr().out
    lines = _event_lines(out)
    assert out.splitlines()[8] == f"events     {len(stored) + 1}"
    assert sum(_count(line) for line in lines) == len(stored) + 1  # + finished
    text = "\n".join(lines)
    # Segments, in words, numbered from 1 like the program listing.
    for n, seg in enumerate(synth.PROGRAM["segment"], 1):
        head = f"segment          {n}/5 {seg['direction']} {seg['speed_kmh']:.1f} km/h"
        assert head in text, (head, text)
    assert "state            direction=reverse" in text
    assert "command          command=estop, source=mqtt" in text
    # The e-stop with its reason, then how the session ended.
    assert "estop            remote e-stop (front desk) (source=mqtt)" in text
    assert lines[-1].split()[:3] == ["8:04", "finished", "estopped:"]
    summary = summary_of(d, a)
    assert lines[-1].endswith(
        f"remote e-stop (front desk) (distance_m={summary['distance_m']:g},"
        f" segments_completed={summary['segments_completed']})"
    )


def test_show_json_has_every_event_and_the_end(
    data_dir: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    d, a, b = data_dir
    with open_store(d) as store:
        stored = store.events(a)
    assert main(["sessions", "show", a, "--json", "--data-dir", str(d)]) == 0
    doc = json.loads(capsys.readouterr().out)
    events = doc["events"]
    assert [e["type"] for e in events] == [e.type for e in stored] + ["finished"]
    assert all(e["ts"].endswith("Z") for e in events)  # as started_at / ended_at
    assert events[-1]["data"]["outcome"] == "estopped"
    assert events[-1]["data"]["reason"] == "remote e-stop (front desk)"
    assert events[-1]["ts"] == doc["ended_at"]
    assert main(["sessions", "show", b, "--json", "--data-dir", str(d)]) == 0
    last = json.loads(capsys.readouterr().out)["events"][-1]
    assert last["type"] == "finished" and last["data"]["outcome"] == "finished"


def test_show_a_real_simulated_session_with_an_estop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The controller's own events, as `run` records them: segments, FTMS status echoes
    # (one per setpoint: they are collapsed, not dropped), the interlock's e-stop.
    d = str(tmp_path)
    argv = ["run", "quick-demo", "--speedup", "max", "--json", "--data-dir", d,
            "--device", "sim://?faults=runaway@20"]  # fmt: skip
    assert main(argv) == 3
    capsys.readouterr()
    with open_store(d) as store:
        (info,) = store.list_sessions(5, None)
        stored = store.events(info.id)
    assert main(["sessions", "show", info.id, "--data-dir", d]) == 0
    lines = _event_lines(capsys.readouterr().out)
    # The controller records its own `finished` event (one line, the last); every stored
    # event is shown once, none is added.
    assert [e.type for e in stored].count("finished") == 1
    assert sum(_count(line) for line in lines) == len(stored)
    assert any(" segment          1/4 forward 3.0 km/h" in line for line in lines)
    estop = [line for line in lines if line.split()[1] == "estop"]
    assert len(estop) == 1 and "overspeed: belt at" in estop[0]
    assert lines[-1].split()[1:3] == ["finished", "estopped:"]
    assert any("×" in line for line in lines)  # the status echoes of a ramp, counted


def test_export_to_stdout_and_files(
    data_dir: tuple[Path, str, str],
    tmp_path: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, a, _ = data_dir
    assert main(["sessions", "export", a, "--format", "csv", "--data-dir", str(d)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsysbinary.readouterr().out.decode())))
    assert any(float(r["signed_speed_kmh"]) < 0 for r in rows)
    assert main(["sessions", "export", a, "--format", "tcx", "--data-dir", str(d)]) == 0
    assert b"TrainingCenterDatabase" in capsysbinary.readouterr().out
    out = tmp_path / "x.tcx"
    assert main(["sessions", "export", a, "-f", "tcx", "-o", str(out), "--data-dir", str(d)]) == 0
    assert out.read_bytes().startswith(b"<?xml")
    monkeypatch.chdir(tmp_path)
    assert main(["sessions", "export", a, "--format", "fit", "--data-dir", str(d)]) == 0
    assert (tmp_path / f"{a}.fit").read_bytes()[8:12] == b".FIT"


def test_plot(data_dir: tuple[Path, str, str], tmp_path: Path) -> None:
    d, a, _ = data_dir
    out = tmp_path / "p.png"
    assert main(["sessions", "plot", a, "-o", str(out), "--data-dir", str(d)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv",
    [
        ["sessions", "show", "nope"],
        ["sessions", "show", "2026"],  # ambiguous prefix
        ["sessions", "export", "ID", "--format", "gpx"],
        ["sessions", "export", "ID", "--format", "fit", "-o", "/nonexistent-dir/x.fit"],
        ["sessions", "export", "ID", "--format", "csv", "-o", "DIR"],  # a directory
        ["sessions", "plot", "ID", "-o", "plot.jpg"],
        ["sessions", "plot", "ID", "-o", "p.png", "--size", "big"],
        ["sessions", "plot", "nope", "-o", "p.png"],
        ["sessions", "list", "--limit", "-1"],
    ],
)
def test_errors_exit_2_with_one_line(
    argv: list[str],
    data_dir: tuple[Path, str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d, a, _ = data_dir
    argv = [{"ID": a, "DIR": str(tmp_path)}.get(x, x) for x in argv]
    assert main([*argv, "--data-dir", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("treadctl: error:") and "\n" not in err


def test_missing_database_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "show", "x", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no sessions recorded" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_exit_2(data_dir: tuple[Path, str, str], tmp_path: Path) -> None:
    d, a, _ = data_dir
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    argv = ["sessions", "export", a, "-f", "csv", "-o", str(ro / "x.csv"), "--data-dir", str(d)]
    assert main(argv) == 2


def test_real_cli_process(data_dir: tuple[Path, str, str]) -> None:
    d, a, _ = data_dir
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from treadctl.cli import main; sys.exit(main())",
         "sessions", "export", a, "--format", "gpx", "--data-dir", str(d)],
        capture_output=True, text=True, cwd=root, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "gpx" in proc.stderr


def test_print_summary_line() -> None:
    samples, events = synth.synthetic_session()
    from treadctl.store.recorder import summarize

    line = print_summary(summarize(samples, events, outcome="estopped", reason="remote e-stop"))
    assert line.startswith("estopped (remote e-stop) · 8:04 · 0.61 km (reverse 0.10 km in 2:19)")
    assert "max 8.0 km/h, reverse 3.0 km/h" in line and "4 segments completed" in line
    assert "\n" not in line


def test_sessions_list_closes_a_session_left_running_by_a_dead_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The way out for a session a killed process left 'running': the next `sessions`
    command that opens the store closes it as aborted, with its data."""
    from treadctl.store.db import SessionStore, default_db_path

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
    # A session of a live process on this host is left alone.
    alive = subprocess.Popen([sys.executable, "-c", code.replace("os._exit(0)",
                                                                   "sys.stdin.read()"),
                              str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert alive.stdout is not None
        live = alive.stdout.readline().strip()
        assert main(["sessions", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    finally:
        assert alive.stdin is not None
        alive.stdin.close()
        alive.wait(30)
    out = capsys.readouterr()
    assert f"session {stale} was left running; closed as aborted" in out.err
    assert live not in out.err
    rows = {row["id"]: row for row in map(json.loads, out.out.splitlines())}
    assert rows[stale]["outcome"] == "aborted", rows[stale]
    assert rows[live]["outcome"] == "running", rows[live]
    with SessionStore(db) as store:
        assert "killed or crashed" in (store.get_session(stale).reason or "")
