"""Firmware profiles: the shipped files load, every problem names the file and field,
and the CLI answers bad input with one line and exit code 2."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from treadctl.cli import main
from treadctl.control import reverse
from treadctl.control.reverse import VendorCharacteristic
from treadctl.profiles import (
    REQUIRED_FIELDS,
    REQUIRED_FOR_REVERSE,
    ProfileError,
    list_profiles,
    load_profile,
    load_profile_file,
    shipped_profiles_dir,
)


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


# A complete profile: every required field, nothing else (a reverse machine).
FULL: dict[str, Any] = {
    "name": "x",
    "speed": {"min_kmh": 0.5, "max_kmh": 16.0, "increment_kmh": 0.1},
    "incline": {"min_pct": 0.0, "max_pct": 10.0, "increment_pct": 0.5, "rate_pct_per_s": 0.5},
    "motion": {"accel_mps2": 0.4, "decel_mps2": 0.6, "stop_decel_mps2": 1.0,
               "estop_decel_mps2": 2.0},
    "reverse": {"method": "vendor-characteristic", "characteristic": 0xFF01,
                "max_speed_kmh": 5.0, "accel_mps2": 0.25, "decel_mps2": 0.5,
                "min_incline_pct": 0.0, "max_incline_pct": 6.0, "standstill_dwell_s": 2.0},
    "control": {"ack_timeout_ms": 500, "min_command_interval_ms": 100,
                "link_timeout_ms": 1000, "telemetry_hz": 4.0},
}  # fmt: skip


def _toml(data: dict[str, Any]) -> str:
    """Scalars and one level of tables: all a profile has (JSON scalars are TOML too)."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, values in data.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _variant(**changes: Any) -> dict[str, Any]:
    """FULL with ``section__key=value`` set, or removed when the value is ``...``."""
    data = copy.deepcopy(FULL)
    for name, value in changes.items():
        section, _, key = name.partition("__")
        if value is ...:
            del data[section][key]
        else:
            data.setdefault(section, {})[key] = value
    return data


def test_the_complete_example_loads(tmp_path: Path) -> None:
    p = load_profile_file(_write(tmp_path, _toml(FULL)))
    assert p.speed.max_kmh == 16.0 and p.reverse.characteristic == 0xFF01
    assert p.quirks.pace_format == "uint8-0.1kmpmin"  # optional: the FTMS standard
    assert p.control.requires_start_before_speed is False and p.control.ack_delay_ms == 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_variant(speed__max_kmh="fast"), "speed.max_kmh must be float"),
        (_variant(speed__turbo=1), "unknown field speed.turbo"),
        (_variant(reverse__method="magic"), "reverse.method must be one of"),
        (_variant(speed__min_kmh=5.0, speed__max_kmh=2.0), "speed.min_kmh must be below"),
        (_variant(motion__accel_mps2=-1), "motion.accel_mps2 must not be negative"),
        ({k: v for k, v in FULL.items() if k != "name"}, "name must be a non-empty string"),
        ({**FULL, "wheels": 3}, "unknown section or field 'wheels'"),
        (_variant(reverse__max_speed_kmh=40.0), "reverse.max_speed_kmh must be in"),
        (_variant(control__link_timeout_ms=0), "control.link_timeout_ms must be > 0"),
    ],
)
def test_bad_profile_names_file_and_field(
    tmp_path: Path, data: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, _toml(data))
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name = \n")
    with pytest.raises(ProfileError, match="invalid TOML") as err:
        load_profile_file(path)
    assert str(path) in str(err.value)


def test_a_profile_with_only_a_name_is_refused_naming_every_missing_field(
    tmp_path: Path,
) -> None:
    # It used to load with made-up hardware: 0.5-18 km/h, 0-12 %, 0.4 m/s^2, ...
    path = _write(tmp_path, 'name = "my-treadmill"\n')
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    text = str(err.value)
    assert text.startswith(f"{path}: missing required fields speed.min_kmh, speed.max_kmh,")
    for where in REQUIRED_FIELDS:
        assert where in text
    assert "docs/reference-firmware.md" in text and "\n" not in text


@pytest.mark.parametrize("where", [*REQUIRED_FIELDS, *REQUIRED_FOR_REVERSE,
                                   *VendorCharacteristic.required_fields])  # fmt: skip
def test_each_required_field_is_required(tmp_path: Path, where: str) -> None:
    section, _, key = where.partition(".")
    # Without reverse.method the other reverse fields are not required: it alone is named.
    data = _variant(**{f"{section}__{key}": ...})
    path = _write(tmp_path, _toml(data))
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(err.value).startswith(f"{path}: missing required field {where} ("), err.value


def test_reverse_fields_are_required_only_when_the_machine_reverses(tmp_path: Path) -> None:
    forward_only = copy.deepcopy(FULL)
    forward_only["reverse"] = {"method": "none"}
    assert not load_profile_file(_write(tmp_path, _toml(forward_only))).supports_reverse
    signed = copy.deepcopy(FULL)
    del signed["reverse"]["characteristic"]  # signed speed needs no characteristic
    signed["reverse"]["method"] = "signed-speed"
    assert load_profile_file(_write(tmp_path, _toml(signed))).supports_reverse
    del signed["reverse"]["max_speed_kmh"]
    with pytest.raises(ProfileError, match=r"missing required field reverse\.max_speed_kmh"):
        load_profile_file(_write(tmp_path, _toml(signed)))


def test_no_hidden_hardware_defaults_in_code_either() -> None:
    from treadctl.profiles import ControlSpec, InclineLimits, MotionLimits, SpeedLimits

    for cls in (SpeedLimits, InclineLimits, MotionLimits, ControlSpec):
        with pytest.raises(TypeError):
            cls()


def test_shipped_profiles_state_every_required_field() -> None:
    files = [f for f in shipped_profiles_dir().iterdir() if f.name.endswith(".toml")]
    assert {f.name for f in files} >= {
        "generic-ftms.toml", "treadctl-reference.toml", "kinetic-rx2.toml",
    }  # fmt: skip
    for f in files:
        data = tomllib.loads(f.read_text(encoding="utf-8"))
        method = data["reverse"]["method"]
        required = list(REQUIRED_FIELDS)
        if method != "none":
            required += REQUIRED_FOR_REVERSE
        cls = reverse.method_class(method)
        assert cls is not None, (f.name, method)
        required += cls.required_fields
        for where in required:
            section, _, key = where.partition(".")
            assert key in data.get(section, {}), (f.name, where)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"known: .*treadctl-reference"):
        load_profile("no-such-firmware")


def test_profiles_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert "kinetic-rx2" in names
    assert main(["profiles", "show", "kinetic-rx2"]) == 0
    assert json.loads(capsys.readouterr().out)["reverse"]["method"] == "signed-speed"
    bad = _write(tmp_path, _toml(_variant(speed__max_kmh="fast")))
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


# --------------------------------------------------------------------------- native protocols

NATIVE = {"biodex-rtm400": ("biodex", "direction-command"),
          "woodway-serial": ("woodway", "signed-speed"),
          "bertec-treadmill": ("bertec", "signed-speed"),
          "trackmaster-tmx428": ("trackmaster", "none")}  # fmt: skip


def test_native_profiles_ship_with_their_protocol_and_reverse_method() -> None:
    profiles = {p.name: p for p in list_profiles()}
    for name, (protocol, method) in NATIVE.items():
        assert (profiles[name].protocol, profiles[name].reverse.method) == (protocol, method)
    assert profiles["generic-ftms"].protocol == "ftms"  # the default
    tm = profiles["trackmaster-tmx428"]
    assert tm.wire.watchdog_ms == 500 and 2 * tm.wire.poll_ms <= 500  # CDS fed in time
    assert tm.wire.baud == 4800
    # Every native profile cites its source in the file.
    for name in NATIVE:
        text = shipped_profiles_dir().joinpath(f"{name}.toml").read_text(encoding="utf-8")
        assert "Source" in text or "source" in text.lower(), name


def test_profiles_list_shows_protocol_and_reverse_method(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for name, (protocol, method) in NATIVE.items():
        assert (rows[name]["protocol"], rows[name]["reverse"]) == (protocol, method)
    assert main(["profiles", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("biodex-rtm400"))
    assert "protocol=biodex" in line and "reverse=direction-command" in line


@pytest.mark.parametrize(
    ("extra", "wire", "message"),
    [
        ({"protocol": "csafe"}, None, "protocol must be one of ftms, biodex"),
        ({"protocol": "trackmaster"}, None, "not possible over protocol 'trackmaster'"),
        ({"protocol": "biodex"}, None, "not possible over protocol 'biodex'"),
        ({"protocol": "woodway"}, {"watchdog_ms": 500, "poll_ms": 300}, "does not feed"),
        ({"protocol": "woodway"}, {"speed_unit": "furlongs"}, "wire.speed_unit must be one"),
        ({"protocol": "woodway"}, {"poll_ms": 0}, "wire.poll_ms must be > 0"),
    ],
)
def test_bad_native_settings_name_the_field(
    tmp_path: Path, extra: dict[str, Any], wire: dict[str, Any] | None, message: str
) -> None:
    data = {**_variant(reverse__method="vendor-characteristic"), **extra}
    if extra.get("protocol") == "woodway":
        data["reverse"] = {**data["reverse"], "method": "signed-speed"}
    if wire:
        data["wire"] = wire
    path = _write(tmp_path, _toml(data))
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_registered_reverse_method_is_usable_in_a_profile(tmp_path: Path) -> None:
    """Adding a reverse method is its class and ``register``: the profile loader takes the
    names, the protocols a method may run over and the fields it needs from the registry."""
    from treadctl.control.reverse import ReverseMethod, register, reverse_method

    src = (shipped_profiles_dir() / "kinetic-rx2.toml").read_text(encoding="utf-8")
    path = tmp_path / "flip.toml"
    path.write_text(src.replace('method = "signed-speed"', 'method = "belt-flip"'))
    with pytest.raises(ProfileError, match=r"reverse\.method must be one of none, "):
        load_profile_file(path)

    class BeltFlip(ReverseMethod):
        name = "belt-flip"
        protocols = frozenset({"ftms"})
        required_fields = ("reverse.characteristic",)
        writes_direction = True

    register(BeltFlip)
    try:
        with pytest.raises(ProfileError, match=r"missing required field reverse\.characteristic"):
            load_profile_file(path)
        path.write_text(src.replace('method = "signed-speed"',
                                    'method = "belt-flip"\ncharacteristic = 0xFF01'))
        profile = load_profile_file(path)
        assert profile.supports_reverse and isinstance(reverse_method(profile), BeltFlip)
        native = (shipped_profiles_dir() / "biodex-rtm400.toml").read_text(encoding="utf-8")
        path.write_text(native.replace('method = "direction-command"',
                                       'method = "belt-flip"\ncharacteristic = 0xFF01'))
        with pytest.raises(ProfileError, match="not possible over protocol 'biodex'"):
            load_profile_file(path)
    finally:
        reverse.unregister("belt-flip")
    assert "belt-flip" not in reverse.methods()
