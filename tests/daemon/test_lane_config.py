"""Per-lane config: ``rear_facing`` (forward-only profiles only) and native-protocol lanes,
as ``treadctl daemon --check`` reports them (exit code and the words it prints)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from treadctl.daemon.config import ConfigError, parse_config
from treadctl.daemon.info import lane_info
from treadctl.profiles import load_profile

REPO = Path(__file__).resolve().parents[2]


def check(tmp_path: Path, lanes: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[daemon]\ndata_dir = "{tmp_path}"\n{lanes}')
    return subprocess.run([sys.executable, "-m", "treadctl", "daemon", "--check", "--config",
                           str(cfg)], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_rear_facing_is_off_by_default_and_parsed() -> None:
    c = parse_config({"treadmill": [
        {"id": "a", "device": "sim://", "profile": "generic-ftms"},
        {"id": "b", "device": "sim://", "profile": "generic-ftms", "rear_facing": True}]})
    assert [t.rear_facing for t in c.treadmills] == [False, True]


@pytest.mark.parametrize("profile", ["treadctl-reference", "kinetic-rx2", "biodex-rtm400"])
def test_rear_facing_refused_on_a_profile_that_can_reverse(profile: str) -> None:
    assert load_profile(profile).reverse.method != "none"
    with pytest.raises(ConfigError) as err:
        parse_config({"treadmill": [{"id": "a", "device": "sim://", "profile": profile,
                                     "rear_facing": True}]}, "daemon.toml")
    msg = str(err.value)
    assert msg.startswith("daemon.toml: [[treadmill]] #1.rear_facing: refused") and profile in msg
    assert "\n" not in msg


def test_rear_facing_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"treadmill": [{"id": "a", "device": "sim://", "profile": "generic-ftms",
                                     "rear_facing": "yes"}]})
    assert "rear_facing: must be true or false" in str(err.value)


def test_check_refuses_rear_facing_on_a_reversing_profile(tmp_path: Path) -> None:
    r = check(tmp_path, '[[treadmill]]\nid = "lane-1"\ndevice = "sim://"\n'
                        'profile = "treadctl-reference"\nrear_facing = true\n')
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert "rear_facing: refused" in r.stderr and "treadctl-reference" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_check_native_serial_lane_says_what_it_will_drive(tmp_path: Path) -> None:
    r = check(tmp_path, '[[treadmill]]\nid = "lane-1"\ndevice = "serial:///dev/ttyUSB0"\n'
                        'profile = "biodex-rtm400"\n'
                        '[[treadmill]]\nid = "lane-2"\ndevice = "sim://"\n'
                        'profile = "generic-ftms"\nrear_facing = true\n'
                        '[[treadmill]]\nid = "lane-3"\ndevice = "tcp://127.0.0.1:9"\n'
                        'profile = "generic-ftms"\n')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("OK (3 treadmill(s): lane-1, lane-2, lane-3)")
    biodex = load_profile("biodex-rtm400")
    assert lines[1].strip().startswith(
        "lane-1: biodex-rtm400 (native biodex protocol) on serial:///dev/ttyUSB0: forward up "
        f"to {biodex.speed.max_kmh:g} km/h, reverse up to"), lines
    assert "lane-2: generic-ftms (FTMS)" in lines[2] and "rear-facing" in lines[2]
    assert "lanyard" in lines[2]
    assert "lane-3: generic-ftms (FTMS)" in lines[3] and "forward only" in lines[3]
    assert "reverse programs are refused" in lines[3]
    # --check opened nothing: no device, no broker (nothing listens on port 9, no ttyUSB0).
    assert "Traceback" not in r.stderr


def test_native_profile_over_bluetooth_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"treadmill": [{"id": "a", "device": "ble://AA:BB:CC:DD:EE:FF",
                                     "profile": "woodway-serial"}]}, "daemon.toml")
    assert "#1.device" in str(err.value) and "not Bluetooth" in str(err.value)


def test_lane_info_names_profile_protocol_and_tightest_limits() -> None:
    c = parse_config({"site_limits": {"max_speed_kmh": 12.0},
                      "treadmill": [
                          {"id": "a", "device": "sim://", "profile": "treadctl-reference",
                           "limits": {"reverse_max_speed_kmh": 4.0}},
                          {"id": "b", "device": "sim://", "profile": "generic-ftms"},
                          {"id": "c", "device": "sim://", "profile": "generic-ftms",
                           "rear_facing": True},
                          {"id": "d", "device": "serial:///dev/ttyUSB0",
                           "profile": "biodex-rtm400"}]})
    from treadctl.daemon.service import merge_limits

    infos = {t.id: lane_info(t, load_profile(t.profile), merge_limits(c.site_limits, t.limits))
             for t in c.treadmills}
    a, b, rf, d = infos["a"], infos["b"], infos["c"], infos["d"]
    assert (a["profile"], a["protocol"], a["can_reverse"], a["rear_facing"]) == (
        "treadctl-reference", "ftms", True, False)
    assert a["limits"]["max_speed_kmh"] == 12.0 and a["limits"]["reverse_max_speed_kmh"] == 4.0
    assert (b["can_reverse"], b["reverse_programs"]) == (False, False)
    assert b["limits"]["reverse_max_speed_kmh"] is None
    assert (rf["can_reverse"], rf["rear_facing"], rf["reverse_programs"]) == (False, True, True)
    assert rf["limits"]["reverse_max_speed_kmh"] > 0
    assert (d["protocol"], d["can_reverse"]) == ("biodex", True)


def test_home_assistant_device_model_names_profile_and_protocol() -> None:
    import json

    from treadctl.daemon.discovery import discovery_messages
    from treadctl.daemon.info import hass_model

    for profile, needle in (("biodex-rtm400", "biodex-rtm400 (biodex protocol)"),
                            ("generic-ftms", "FTMS treadmill (generic-ftms)")):
        messages = discovery_messages("lane-1", programs=[],
                                      model=hass_model(load_profile(profile)))
        models = {json.loads(payload)["device"]["model"] for _topic, payload in messages}
        assert models == {needle}
