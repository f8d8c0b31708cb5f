"""Config validation: defaults, every section, errors that name the field, secrets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from treadctl.daemon.config import ConfigError, load_config, parse_config
from treadctl.daemon.service import merge_limits
from treadctl.limits import Limits

MIN = {"treadmill": [{"id": "lane-1", "device": "sim://"}]}


def test_defaults() -> None:
    c = parse_config(MIN)
    assert c.mqtt.host == "127.0.0.1" and c.mqtt.port == 1883 and c.mqtt.base_topic == "treadctl"
    assert c.mqtt.max_payload_bytes == 16384
    assert c.daemon.telemetry_hz == 4 and c.daemon.broker_lost_policy == "stop"
    assert c.daemon.broker_grace_s == 10 and c.daemon.command_rate_per_s == 20
    assert c.treadmills[0].profile == "treadctl-reference" and not c.homeassistant.enabled


def test_full_example_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "daemon.toml"
    if not example.exists():
        pytest.skip("examples/daemon.toml not written yet")
    c = load_config(example)
    assert c.treadmills


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({}, "[[treadmill]]"),
        ({"mqtt": {"port": 0}, **MIN}, "[mqtt].port"),
        ({"mqtt": {"port": "1883"}, **MIN}, "[mqtt].port"),
        ({"mqtt": {"hots": "x"}, **MIN}, "[mqtt].hots: unknown field"),
        ({"mqtt": {"password": "p"}, **MIN}, "[mqtt].username"),
        ({"mqtt": {"base_topic": "a/#"}, **MIN}, "base_topic"),
        ({"mqtt": {"tls": {"ca_file": "/nonexistent/ca.pem"}}, **MIN}, "tls.ca_file"),
        ({"daemon": {"telemetry_hz": 10}, **MIN}, "[daemon].telemetry_hz"),
        ({"daemon": {"broker_lost_policy": "panic"}, **MIN}, "broker_lost_policy"),
        ({"daemon": {"heartbeat_s": -1}, **MIN}, "heartbeat_s"),
        ({"site_limits": {"max_speed_kmh": "fast"}, **MIN}, "max_speed_kmh"),
        ({"safety": {"bogus": 1}, **MIN}, "bogus"),
        ({"homeassistant": {"enabled": "yes"}, **MIN}, "[homeassistant].enabled"),
        ({"homeassistant": {"node_id": "gym/north"}, **MIN}, "[homeassistant].node_id"),
        ({"treadmill": [{"id": "lane 1", "device": "sim://"}]}, ".id"),
        ({"treadmill": [{"id": "all", "device": "sim://"}]}, ".id"),
        ({"treadmill": [{"id": "a/b", "device": "sim://"}]}, ".id"),
        ({"treadmill": [{"id": "a", "device": "sim://"}, {"id": "a", "device": "sim://"}]},
         "duplicate"),
        ({"treadmill": [{"id": "a", "device": "ftp://x"}]}, "#1.device"),
        ({"treadmill": [{"id": "a", "device": "sim://", "profile": "nope"}]}, "#1.profile"),
        ({"treadmill": [{"id": "a", "device": "sim://", "limits": {"max_speed_kmh": -2}}]},
         "max_speed_kmh"),
    ],
)
def test_errors_name_the_field(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "daemon.toml")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_password_never_in_repr_and_readable_file_warns(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text('[mqtt]\nusername = "gym"\npassword = "hunter2-secret"\n'
                    '[[treadmill]]\nid = "a"\ndevice = "sim://"\n')
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING):
        c = load_config(path)
    assert c.mqtt.password == "hunter2-secret"
    assert "hunter2" not in repr(c)
    assert "readable" in caplog.text and "hunter2" not in caplog.text
    caplog.clear()
    os.chmod(path, 0o600)
    with caplog.at_level(logging.WARNING):
        load_config(path)
    assert "readable" not in caplog.text


def test_password_file_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("pw\n")
    path = tmp_path / "daemon.toml"
    path.write_text('[mqtt]\nusername = "gym"\npassword_file = "secret"\n'
                    '[[treadmill]]\nid = "a"\ndevice = "sim://"\n')
    assert load_config(path).mqtt.password == "pw"


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text("[mqtt\nport = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "invalid TOML" in str(err.value)


def test_per_treadmill_limits_tighten_the_site() -> None:
    site = Limits(max_speed_kmh=12.0, min_incline_pct=0.0, reverse_max_speed_kmh=5.0)
    lane = Limits(max_speed_kmh=14.0, min_incline_pct=1.0, accel_mps2=0.3)
    merged = merge_limits(site, lane)
    assert merged == Limits(max_speed_kmh=12.0, min_incline_pct=1.0, reverse_max_speed_kmh=5.0,
                            accel_mps2=0.3)
    assert merge_limits(None, lane) is lane and merge_limits(site, None) is site
