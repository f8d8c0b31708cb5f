"""The dashboard's systemd unit and system user, checked by systemd's own tools, and held
to the install story: the daemon's venv, its own user (reading the daemon's config and
store through group treadctl, never the daemon's broker password), its own broker
account, and a dependency stack that runs without writable+executable memory."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# tests/unit_checks.py is shared with the other unit's tests (importlib mode: no package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from unit_checks import run_under_mdwe, unit_directives

from treadctl.daemon.config import ConfigError, load_config
from treadctl.dashboard.cli import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "treadctl-dashboard.service"
DAEMON_UNIT = ROOT / "systemd" / "treadctl.service"
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "treadctl-dashboard.conf"
DAEMON_SYSUSERS = ROOT / "systemd" / "sysusers.d" / "treadctl.conf"
VENV = "/opt/treadctl/venv"
ANALYZE = shutil.which("systemd-analyze")
SYSUSERS_BIN = shutil.which("systemd-sysusers")


SERVICE = unit_directives(UNIT.read_text())["Service"]


def unit_copy(tmp_path: Path, extra: str = "") -> Path:
    true = shutil.which("true")
    assert true is not None
    text = UNIT.read_text().replace(f"ExecStart={VENV}/bin/treadctl ", f"ExecStart={true} ", 1)
    assert f"ExecStart={true} dashboard" in text
    path = tmp_path / "treadctl-dashboard.service"
    path.write_text(text.replace("[Install]", f"{extra}\n[Install]", 1))
    return path


def verify(path: Path) -> list[str]:
    assert ANALYZE is not None, "systemd-analyze is part of the test setup (package systemd)"
    r = subprocess.run([ANALYZE, "verify", "--man=no", str(path)], capture_output=True,
                       text=True, timeout=60, cwd=path.parent)
    return [line for line in (r.stdout + r.stderr).splitlines() if "treadctl" in line]


def test_systemd_analyze_verify_is_clean_and_would_catch_a_typo(tmp_path: Path) -> None:
    assert verify(unit_copy(tmp_path)) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    assert any("ProtectSystm" in line
               for line in verify(unit_copy(bad, "ProtectSystm=strict")))


def test_security_exposure_is_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager",
                        str(unit_copy(tmp_path))], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    match = re.search(r"Overall exposure level for treadctl-dashboard\.service: ([0-9.]+)",
                      r.stdout)
    assert match, r.stdout + r.stderr
    assert float(match[1]) <= 2.0  # measured 1.3 with this machine's systemd


def test_runs_the_daemons_venv_with_the_default_config() -> None:
    assert SERVICE["ExecStart"] == [f"{VENV}/bin/treadctl dashboard --config {DEFAULT_CONFIG}"]
    daemon_exec = unit_directives(DAEMON_UNIT.read_text())["Service"]["ExecStart"][0]
    assert daemon_exec.split()[0] == SERVICE["ExecStart"][0].split()[0]
    assert SERVICE["Type"] == ["exec"] and "WatchdogSec" not in SERVICE
    assert SERVICE["RestartPreventExitStatus"] == ["2"]  # the CLI's config-error exit


def test_own_user_reads_the_daemons_files_and_writes_none() -> None:
    assert SERVICE["User"] == ["treadctl-dashboard"] and SERVICE["DynamicUser"] == ["no"]
    assert SERVICE["SupplementaryGroups"] == ["treadctl"]
    assert SERVICE["ProtectSystem"] == ["strict"] and SERVICE["CapabilityBoundingSet"] == [""]
    # The daemon's state directory is read only here, and not one of this unit's own.
    daemon = unit_directives(DAEMON_UNIT.read_text())["Service"]
    assert daemon["StateDirectory"] == ["treadctl"] and "StateDirectory" not in SERVICE
    assert SERVICE["ReadOnlyPaths"] == ["-/var/lib/treadctl"]
    assert SERVICE["RestrictAddressFamilies"][0].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert SERVICE["PrivateDevices"] == ["yes"]  # no serial port, no Bluetooth


def test_the_daemons_broker_password_is_out_of_reach() -> None:
    # The path the install docs and the example config give the daemon's password.
    pi = (ROOT / "docs" / "raspberry-pi.md").read_text()
    example = (ROOT / "examples" / "daemon.toml").read_text()
    password = "/etc/treadctl/mqtt-password"
    assert f'password_file = "{password}"' in pi and f'password_file = "{password}"' in example
    assert SERVICE["InaccessiblePaths"] == [f"-{password}"]


def test_dashboard_reads_the_daemon_config_without_its_password(tmp_path: Path) -> None:
    cfg = tmp_path / "daemon.toml"
    cfg.write_text('[mqtt]\nusername = "treadctl-daemon"\n'
                   'password_file = "/nonexistent/mqtt-password"\n'
                   '[[treadmill]]\nid = "lane-1"\ndevice = "sim://"\n')
    with pytest.raises(ConfigError):
        load_config(cfg)  # the daemon itself needs it
    config = load_config(cfg, secrets=False)
    assert config.mqtt.password is None and config.mqtt.username == "treadctl-daemon"
    from treadctl.dashboard.config import load_dashboard_config

    dash = tmp_path / "dashboard.toml"
    from dash_stack import users_toml

    dash.write_text(f'[dashboard]\ndaemon_config = "{cfg}"\n' + users_toml())
    assert load_dashboard_config(dash).mqtt.password is None


@pytest.mark.skipif(SYSUSERS_BIN is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_user_in_group_treadctl(tmp_path: Path) -> None:
    assert SYSUSERS_BIN is not None
    (tmp_path / "etc").mkdir()
    subprocess.run([SYSUSERS_BIN, f"--root={tmp_path}", str(DAEMON_SYSUSERS), str(SYSUSERS)],
                   check=True, capture_output=True, timeout=60)
    passwd = {line.split(":")[0]: line.split(":")
              for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":")
              for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert passwd["treadctl-dashboard"][6] == "/usr/sbin/nologin"
    assert "treadctl-dashboard" in groups["treadctl"][3].split(",")
    assert "treadctl-dashboard" not in groups.get("dialout", ["", "", "", ""])[3].split(",")


def test_its_broker_account_is_the_documented_one() -> None:
    acl = (ROOT / "docs" / "mosquitto-acl.md").read_text()
    assert "user treadctl-dashboard\n" in acl
    doc = (ROOT / "docs" / "dashboard.md").read_text()
    assert 'username = "treadctl-dashboard"' in doc
    assert "install -m 0644 /opt/treadctl/src/systemd/treadctl-dashboard.service" in doc
    assert f"{VENV}/bin/pip install '/opt/treadctl/src[dashboard]'" in doc


_DASHBOARD_STACK = r"""
import asyncio, aiohttp.web, paho.mqtt.client, sqlite3, ssl
from treadctl.dashboard.auth import hash_password, verify_password
h = hash_password("front-desk")
assert verify_password(h, "front-desk") and not verify_password(h, "nope")
from treadctl.dashboard import app, hub, history
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot([0, 1, 2], [0, 1, 0])
fig.savefig(sys.argv[1])
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_dashboard_stack_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    run_under_mdwe(_DASHBOARD_STACK, tmp_path)
