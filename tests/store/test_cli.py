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
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["id"] in (a, b)


def test_list_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


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
