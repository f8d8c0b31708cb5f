"""Firmware profiles: the shipped files load, every problem names the file and field,
and the CLI answers bad input with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.cli import main
from treadctl.profiles import ProfileError, list_profiles, load_profile, load_profile_file


def test_shipped_profiles_load_and_cover_every_reverse_method() -> None:
    profiles = {p.name: p for p in list_profiles()}
    assert {"generic-ftms", "treadctl-reference", "kinetic-rx2"} <= set(profiles)
    methods = {p.reverse.method for p in profiles.values()}
    assert methods >= {"none", "vendor-characteristic", "signed-speed"}
    ref = profiles["treadctl-reference"]
    assert ref.reverse.characteristic == 0xFF01
    assert ref.reverse.max_speed_kmh == 6.0 < ref.speed.max_kmh
    assert ref.reverse.accel_mps2 < ref.motion.accel_mps2  # reverse ramps gentler
    rx2 = profiles["kinetic-rx2"]
    assert rx2.quirks.pace_format == "uint16-s-per-km"
    assert rx2.control.requires_start_before_speed
    assert rx2.control.ack_delay_ms > ref.control.ack_delay_ms  # slow acks
    assert rx2.control.min_command_interval_ms == 250
    assert not profiles["generic-ftms"].supports_reverse


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\n[speed]\nmax_kmh = "fast"\n', "speed.max_kmh must be float"),
        ('name = "x"\n[speed]\nturbo = 1\n', "unknown field speed.turbo"),
        ('name = "x"\n[reverse]\nmethod = "magic"\n', "reverse.method must be one of"),
        ('name = "x"\n[speed]\nmin_kmh = 5.0\nmax_kmh = 2.0\n', "speed.min_kmh must be below"),
        ('name = "x"\n[motion]\naccel_mps2 = -1\n', "motion.accel_mps2 must not be negative"),
        ("[speed]\nmax_kmh = 10.0\n", "name must be a non-empty string"),
        ('name = "x"\nwheels = 3\n', "unknown section or field 'wheels'"),
        ("name = \n", "invalid TOML"),
        (
            'name = "x"\n[reverse]\nmethod = "signed-speed"\nmax_speed_kmh = 40.0\n',
            "reverse.max_speed_kmh must be in",
        ),
    ],
)
def test_bad_profile_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"known: .*treadctl-reference"):
        load_profile("no-such-firmware")


def test_profiles_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert "kinetic-rx2" in names
    assert main(["profiles", "show", "kinetic-rx2"]) == 0
    assert json.loads(capsys.readouterr().out)["reverse"]["method"] == "signed-speed"
    bad = _write(tmp_path, 'name = "x"\n[speed]\nmax_kmh = "fast"\n')
    # A real process: one line on stderr, exit code 2, for a bad file and for a bad device URL.
    for args in (
        ["profiles", "show", str(bad)],
        ["run", "quick-demo", "--profile", str(bad)],
        ["run", "quick-demo", "--device", "tcp://nowhere"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "treadctl", *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
