"""``treadctl programs list|show|validate``: output lines and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.cli import main

REPO = Path(__file__).resolve().parents[2]

BAD = """\
name = "too-fast"
description = "reverse too fast and an unrepresentable incline"
[[segment]]
duration_s = 60
speed_kmh = 4.0
direction = "forward"
[[segment]]
duration_s = 0
speed_kmh = 7.5
direction = "reverse"
incline_pct = 1.25
"""

LOOSE = """\
name = "loose"
[limits]
reverse_max_speed_kmh = 9.0
[[segment]]
duration_s = 60
speed_kmh = 3.0
direction = "reverse"
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["programs", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "list")
    assert rc == 0
    assert "reverse-walk-intro" in out and "15:00" in out and "27%" in out
    rc, out, _ = run(capsys, "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    intro = next(r for r in rows if r["name"] == "reverse-walk-intro")
    assert intro["duration_s"] == 900 and intro["reverse_s"] == 240
    assert set(intro) >= {"name", "duration_s", "reverse_share", "description"}


def test_show_table_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(capsys, "show", "quick-demo")
    assert rc == 0
    assert "why:" in out and "stand still" in out
    assert "  3  reverse      2.0     0.0   0:25  slow backward walk" in out
    rc, out, _ = run(capsys, "show", "reverse-walk-intro", "--json")
    doc = json.loads(out)
    assert doc["limits"] == {"reverse_max_speed_kmh": 4.0}
    assert doc["segments"][1]["direction"] == "reverse"
    rc, _, err = run(capsys, "show", "no-such-program")
    assert rc == 2 and "unknown built-in program 'no-such-program'" in err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "validate", "reverse-jog", "--profile", "kinetic-rx2")
    assert rc == 0
    assert out.startswith("reverse-jog: OK: reverse-jog, 12 segments")


def test_validate_prints_each_violation_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    rc, out, err = run(capsys, "validate", str(path))
    assert rc == 2
    assert out.splitlines() == [
        f"{path}: segment 2: duration_s: 0 s must be > 0 s",
        f"{path}: segment 2: speed_kmh: 7.5 km/h is above the reverse cap of 6.0 km/h",
        f"{path}: segment 2: incline_pct: 1.25 % is not a multiple of this treadmill's incline "
        "increment 0.5 % (nearest: 1 or 1.5); setpoints are never rounded",
    ]
    assert "3 violations" in err


def test_validate_reverse_on_forward_only_profile(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "validate", "quick-demo", "--profile", "generic-ftms")
    assert rc == 2
    assert out == (
        "quick-demo: segment 3: direction: this treadmill's firmware profile cannot run reverse\n"
    )


def test_validate_rear_facing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Refused without the mode, with a hint naming it; valid with it on forward-only
    # profiles (FTMS and native); refused on a profile whose belt reverses.
    rc, _, err = run(capsys, "validate", "reverse-walk-intro", "--profile", "generic-ftms")
    assert rc == 2 and "hint: on a forward-only treadmill, --rear-facing" in err
    for profile in ("generic-ftms", "trackmaster-tmx428"):
        rc, out, _ = run(capsys, "validate", "reverse-walk-intro", "--profile", profile,
                         "--rear-facing")
        assert rc == 0, out
        assert out.endswith(f"valid on profile {profile} in rear-facing mode\n")
    rc, out, err = run(capsys, "validate", "reverse-walk-intro", "--profile", "biodex-rtm400",
                       "--rear-facing")
    assert rc == 2 and out == ""
    assert "rear-facing mode is for forward-only treadmills" in err
    # The reverse cap still holds in the mode: a too-fast reverse segment is a violation.
    fast = tmp_path / "fast.toml"
    fast.write_text('name = "fast"\n[[segment]]\nduration_s = 60\nspeed_kmh = 7.5\n'
                    'direction = "reverse"\n')
    rc, out, err = run(capsys, "validate", str(fast), "--profile", "generic-ftms",
                       "--rear-facing")
    assert rc == 2 and "above the reverse cap" in out and "hint" not in err


def test_show_prints_the_heart_rate_zone(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "show", "backward-walk-hr-zone")
    assert rc == 0
    lines = out.splitlines()
    head = next(line for line in lines if line.lstrip().startswith("#"))
    assert "HR ZONE" in head
    governed = next(line for line in lines if "backward walk in the heart-rate zone" in line)
    assert "100-110 bpm, 2-5 km/h" in governed
    assert "  -  " in next(line for line in lines if "warm-up walk" in line)
    # No HR column on a program without a governed segment.
    rc, out, _ = run(capsys, "show", "quick-demo")
    assert "HR ZONE" not in out


def test_validate_warns_about_loosened_limits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "loose.toml"
    path.write_text(LOOSE)
    rc, out, _ = run(capsys, "validate", str(path))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"{path}: warning: program limits: reverse_max_speed_kmh = 9 km/h is above the 6 km/h "
        "already in force and has no effect"
    )
    assert lines[1].startswith(f"{path}: OK: loose")


def test_validate_with_site_limits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text("[limits]\nreverse_max_speed_kmh = 2.5\n")
    rc, out, _ = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(site))
    assert rc == 2
    assert "segment 8: speed_kmh: 3 km/h is above the reverse cap of 2.5 km/h" in out
    site.write_text("[limits]\nreverse_max_speed = 2.5\n")
    rc, _, err = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(site))
    assert rc == 2 and "unknown field 'reverse_max_speed'" in err


DAEMON_CONFIG = """\
[mqtt]
host = "127.0.0.1"
[[treadmill]]
id = "lane-1"
device = "sim://"
"""


def test_validate_site_limits_from_a_daemon_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A daemon config's [site_limits] is the site layer, not silently ignored."""
    config = tmp_path / "daemon.toml"
    config.write_text(DAEMON_CONFIG + "[site_limits]\nreverse_max_speed_kmh = 2.5\n")
    rc, out, _ = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(config))
    assert rc == 2
    assert "segment 8: speed_kmh: 3 km/h is above the reverse cap of 2.5 km/h" in out
    # Without the table: said so, validated without site limits.
    config.write_text(DAEMON_CONFIG)
    rc, out, err = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(config))
    assert rc == 0 and "without a [site_limits] table: no site limits" in err
    # Neither kind of file, or both tables: refused, not checked against nothing.
    other = tmp_path / "other.toml"
    other.write_text("[limit]\nreverse_max_speed_kmh = 2.5\n")
    rc, _, err = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(other))
    assert rc == 2 and "no [limits] table" in err
    other.write_text("[limits]\nmax_speed_kmh = 8\n[site_limits]\nmax_speed_kmh = 9\n")
    rc, _, err = run(capsys, "validate", "reverse-walk-intro", "--site-limits", str(other))
    assert rc == 2 and "both [limits] and [site_limits]" in err


def test_validate_site_limits_from_the_shipped_example_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The example config caps reverse at 5 km/h for the whole site."""
    example = REPO / "examples" / "daemon.toml"
    prog = tmp_path / "fast-reverse.toml"
    prog.write_text('name = "r"\n[[segment]]\nduration_s = 60\nspeed_kmh = 5.5\n'
                    'direction = "reverse"\n')
    rc, out, _ = run(capsys, "validate", str(prog), "--site-limits", str(example))
    assert rc == 2, out
    assert "segment 1: speed_kmh: 5.5 km/h is above the reverse cap of 5.0 km/h" in out


def test_validate_load_errors_and_bad_profile(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('name = "x"\n[[segment]]\nduration_s = "60"\nspeed_kmh = 2\n'
                    'direction = "forward"\nspeeed = 3\n')
    rc, out, _ = run(capsys, "validate", str(path))
    assert rc == 2
    assert out.splitlines() == [
        f"{path}: segment 1: speeed: unknown field (known: direction, duration_s, hr_zone_bpm, "
        "incline_pct, label, max_speed_kmh, min_speed_kmh, speed_kmh)",
        f"{path}: segment 1: duration_s: must be a number, got str",
    ]
    rc, out, _ = run(capsys, "validate", str(tmp_path / "missing.toml"))
    assert rc == 2 and "file: cannot read" in out
    rc, _, err = run(capsys, "validate", "quick-demo", "--profile", "no-such-profile")
    assert rc == 2 and "unknown firmware profile" in err


def test_exit_codes_through_the_real_entry_point(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "treadctl.cli", "programs", "validate"]
    bad = subprocess.run([*cmd, str(path)], capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2, bad.stderr
    assert f"{path}: segment 2: speed_kmh:" in bad.stdout
    good = subprocess.run([*cmd, "reverse-walk-intro"], capture_output=True, text=True, env=env,
                          check=False)
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
