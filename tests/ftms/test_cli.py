"""``treadctl ftms decode``: hex notations, JSON output, one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.cli import UsageError
from treadctl.ftms.cli import parse_hex, register

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> int:
    """The ftms command group alone, dispatched the way treadctl.cli.main does."""
    parser = argparse.ArgumentParser(prog="treadctl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize(
    "text",
    [
        "0c00e803",
        "0C00E803",
        "0x0c00e803",
        "0c 00 e8 03",
        "0c:00:e8:03",
        "0C-00-E8-03",
        "(0x) 0C-00-E8-03",
        "0x0c 0x00 0xe8 0x03",
        "  0c00 e803\n",
    ],
)
def test_parse_hex_notations(text: str) -> None:
    assert parse_hex(text) == b"\x0c\x00\xe8\x03"


@pytest.mark.parametrize(("text", "message"), [("0c0", "odd number"), ("zz", "'z'")])
def test_parse_hex_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hex(text)


def test_decode_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ftms", "decode", "treadmill-data", "0c00e80310270032001400"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "type": "TreadmillData",
        "speed_kmh": 10.0,
        "total_distance_m": 10000,
        "inclination_pct": 5.0,
        "ramp_angle_deg": 2.0,
        "more_data": False,
    }


def test_decode_nrf_connect_paste_unquoted(capsys: pytest.CaptureFixture[str]) -> None:
    # nRF Connect's "(0x) 8C-05-..." pasted without quotes arrives as several arguments.
    argv = [
        "ftms",
        "decode",
        "0x2ACD",
        "(0x)",
        "8C-05-64-00-14-00-00-00-00-00-00-05-00-E7-00-03-00-5B-00",
    ]
    assert _run(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speed_kmh"] == 1.0 and out["elapsed_time_s"] == 91


def test_decode_quirk_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ftms", "decode", "treadmill-data", "0000a2fe", "--signed-speed"]) == 0
    assert json.loads(capsys.readouterr().out)["speed_kmh"] == -3.5
    argv = ["ftms", "decode", "treadmill-data", "2000e8032c01", "--pace-format", "uint16-s-per-km"]
    assert _run(argv) == 0
    assert json.loads(capsys.readouterr().out)["instantaneous_pace"] == 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ftms", "decode", "treadmill-data", "0c00e8"], "truncated"),
        (["ftms", "decode", "treadmill-data", "xyz"], "not a hex string"),
        (["ftms", "decode", "heart-rate", "00"], "unknown characteristic"),
        (["ftms", "decode", "belt-direction", "02"], "out of range"),
    ],
)
def test_decode_errors_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _run(argv)


def _treadctl(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from treadctl.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_real_command_line() -> None:
    ok = _treadctl("ftms", "decode", "machine-status", "03")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"type": "StoppedBySafetyKey", "opcode": 3}
    bad = _treadctl("ftms", "decode", "treadmill-data", "0c00e8")
    assert bad.returncode == 2
    assert bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0], bad.stderr


# ---------------------------------------------------------------- deviations and --strict
CS_WALKING = "(0x) 84-24-2C-01-09-00-00-00-00-00-00-00-0D-00-0C-00-00"  # CS-WP8 capture
MATRIX = "9e1f5100b2005800000000ff7f0000ffff0c0097"  # TrackMyIndoorWorkout fixture


def test_decode_names_the_deviations(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ftms", "decode", "treadmill-data", CS_WALKING]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["speed_kmh"] == 3.0 and out["step_count"] == 12
    assert out["deviations"] == ["step-count"]
    assert _run(["ftms", "decode", "treadmill-data", MATRIX]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deviations"] == ["short-record"]
    assert out["missing"][0] == "energy_per_hour_kcal"
    assert out["not_available"] == ["ramp_angle_deg"]
    assert _run(["ftms", "decode", "0x2ADA", "02-01-00"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "type": "StoppedOrPausedByUser",
        "opcode": 2,
        "paused": False,
        "deviations": ["status-trailing-bytes"],
    }


def test_decode_without_deviations_has_no_deviations_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["treadmill-data", "0c00e80310270032001400"], ["machine-status", "0201"]):
        assert _run(["ftms", "decode", *argv]) == 0
        assert "deviations" not in json.loads(capsys.readouterr().out)
        assert _run(["ftms", "decode", "--strict", *argv]) == 0
        capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["treadmill-data", CS_WALKING], "reserved flag bits"),
        (["treadmill-data", MATRIX], "truncated"),
        (["machine-status", "040000"], "2 trailing bytes"),
        (["0x2ADA", "020100"], "1 trailing bytes"),
    ],
)
def test_strict_rejects_the_deviations(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _run(["ftms", "decode", "--strict", *argv])


def test_real_command_line_strict() -> None:
    ok = _treadctl("ftms", "decode", "treadmill-data", CS_WALKING)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["deviations"] == ["step-count"]
    bad = _treadctl("ftms", "decode", "--strict", "treadmill-data", CS_WALKING)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "reserved flag bits" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
