"""The systemd unit, sysusers.d and tmpfiles.d files, checked by systemd's own tools."""

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

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "treadctl.service"
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "treadctl.conf"
TMPFILES = ROOT / "systemd" / "tmpfiles.d" / "treadctl.conf"
EXEC_START = "/opt/treadctl/venv/bin/treadctl daemon --config /etc/treadctl/daemon.toml"

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (package systemd)"
)


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return unit_directives(UNIT.read_text())["Service"]


def _testable_unit(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart pointing at an executable that exists here."""
    true = shutil.which("true")
    assert true is not None
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}\n" in text
    text = text.replace(
        "ExecStart=/opt/treadctl/venv/bin/treadctl ", f"ExecStart={true} ", 1
    ).replace("[Install]", f"{extra}\n[Install]", 1)
    path = tmp_path / "treadctl.service"
    path.write_text(text)
    return path


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def _complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    # Lines about our unit (file name or unit name); verify may also mention units
    # of the host that we do not own.
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if "treadctl" in line]


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = _verify(_testable_unit(tmp_path))
    assert result.returncode == 0, result.stderr
    assert _complaints(result) == []


@needs_analyze
def test_verify_would_catch_a_bad_directive(tmp_path: Path) -> None:
    # Guards the test above: a typo must show up in what we inspect.
    result = _verify(_testable_unit(tmp_path, extra="ProtectSystm=strict"))
    assert any("ProtectSystm" in line for line in _complaints(result))


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(_testable_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip("this systemd-analyze has no offline security analysis (systemd < 250)")
    match = re.search(r"Overall exposure level for treadctl\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    # 0 = fully locked down, 10 = unprotected; a daemon needing network, serial
    # devices and D-Bus cannot reach 0. Measured 1.7 with systemd 252.
    assert float(match[1]) <= 2.5


def test_exec_start_and_notify(service: dict[str, list[str]]) -> None:
    assert service["ExecStart"] == [EXEC_START]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["10"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["2"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["TimeoutStopSec"][0]) >= 30


def test_runs_as_dedicated_user_with_serial_and_bluetooth_only(
    service: dict[str, list[str]],
) -> None:
    assert service["User"] == ["treadctl"]
    assert service["DynamicUser"] == ["no"]
    assert service["SupplementaryGroups"][0].split() == ["dialout", "bluetooth"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["StateDirectory"] == ["treadctl"]
    assert service["ConfigurationDirectory"] == ["treadctl"]
    assert service["UMask"] == ["0027"]


def test_hardeningunit_directives(service: dict[str, list[str]]) -> None:
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "PrivateDevices": "no",
        "DevicePolicy": "closed",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert service["RestrictAddressFamilies"][0].split() == [
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_BLUETOOTH",
        "AF_NETLINK",
    ]
    allowed = {entry.split()[0] for entry in service["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA"} <= allowed
    assert all(entry.split()[1] == "rw" for entry in service["DeviceAllow"])


SYSTEMD_SYSUSERS = shutil.which("systemd-sysusers")
SYSTEMD_TMPFILES = shutil.which("systemd-tmpfiles")


@pytest.mark.skipif(SYSTEMD_SYSUSERS is None, reason="systemd-sysusers is not installed")
@pytest.mark.skipif(SYSTEMD_TMPFILES is None, reason="systemd-tmpfiles is not installed")
def test_sysusers_and_tmpfiles_create_user_and_directories(tmp_path: Path) -> None:
    assert SYSTEMD_SYSUSERS is not None and SYSTEMD_TMPFILES is not None
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [SYSTEMD_SYSUSERS, f"--root={tmp_path}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    user = passwd["treadctl"]
    assert user[5:] == ["/var/lib/treadctl", "/usr/sbin/nologin"]
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/group").read_text().splitlines()
    }
    assert "treadctl" in groups["dialout"][3].split(",")
    assert "treadctl" in groups["bluetooth"][3].split(",")

    subprocess.run(
        [SYSTEMD_TMPFILES, f"--root={tmp_path}", "--create", str(TMPFILES)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    uid, gid = int(user[2]), int(user[3])
    config_dir = (tmp_path / "etc/treadctl").stat()
    assert (config_dir.st_uid, config_dir.st_gid, config_dir.st_mode & 0o777) == (0, gid, 0o750)
    state_dir = (tmp_path / "var/lib/treadctl").stat()
    assert (state_dir.st_uid, state_dir.st_gid, state_dir.st_mode & 0o777) == (uid, gid, 0o750)


# MemoryDenyWriteExecute=yes kills a process that maps writable+executable memory:
# the daemon's real dependency stack runs under the same rule here (tests/unit_checks.py).
_DAEMON_STACK = r"""
import ctypes
import numpy, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.plot(numpy.arange(50), numpy.sin(numpy.arange(50) / 5))
fig.savefig(sys.argv[1])
import serial, paho.mqtt.client, bleak, ssl, sqlite3
import treadctl.cli, treadctl.daemon.discovery, treadctl.daemon.sdnotify, treadctl.daemon.service
treadctl.cli.build_parser()
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
assert callback(41) == 42
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_dependencies_run_without_writable_executable_memory(tmp_path: Path) -> None:
    run_under_mdwe(_DAEMON_STACK, tmp_path)


# --- one install story: the unit, the sysusers/tmpfiles files, the docs, the example
# config and the broker ACL say the same thing ------------------------------------------

DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
INSTALL_DOCS = [ROOT / "docs" / "raspberry-pi.md", ROOT / "docs" / "daemon.md"]
EXAMPLE_CONFIG = ROOT / "examples" / "daemon.toml"
ACL = ROOT / "docs" / "examples" / "mosquitto" / "treadctl.acl"
VENV = "/opt/treadctl/venv"


def _sysusers_user() -> str:
    users = [line.split()[1] for line in SYSUSERS.read_text().splitlines()
             if line.startswith("u ")]
    assert len(users) == 1, users
    return users[0]


def test_unit_user_is_the_sysusers_user_and_owns_the_state_directory(
    service: dict[str, list[str]],
) -> None:
    user = _sysusers_user()
    assert service["User"] == [user] and service["Group"] == [user]
    owners = {line.split()[1]: (line.split()[3], line.split()[4])
              for line in TMPFILES.read_text().splitlines() if line.startswith("d ")}
    assert owners["/var/lib/treadctl"] == (user, user)
    assert owners["/etc/treadctl"] == ("root", user)


def test_the_install_docs_create_the_executable_the_unit_runs(
    service: dict[str, list[str]],
) -> None:
    executable = service["ExecStart"][0].split()[0]
    assert executable == f"{VENV}/bin/treadctl"
    for doc in INSTALL_DOCS:
        text = doc.read_text()
        assert f"python3 -m venv {VENV}\n" in text, doc.name
        assert f"{VENV}/bin/pip install /opt/treadctl/src" in text, doc.name


def test_no_doc_installs_treadctl_anywhere_else() -> None:
    # Every venv, pip and treadctl binary under /opt/treadctl is the unit's venv.
    venv_re = re.compile(r"python3? -m venv (\S+)")
    bin_re = re.compile(r"(/opt/treadctl/\S*?)/?bin/(?:pip|treadctl|python)\b")
    files = [*DOCS, EXAMPLE_CONFIG, UNIT]
    for path in files:
        text = path.read_text()
        for target in venv_re.findall(text):
            if target.startswith("/opt/"):
                assert target == VENV, f"{path.name}: venv at {target}"
        for prefix in bin_re.findall(text):
            assert prefix == VENV, f"{path.name}: {prefix}/bin/..."
        # Never a system-wide pip install (PEP 668 refuses it on Bookworm).
        assert not re.search(r"sudo (?:python3 -m )?pip3? install", text), path.name


def test_the_docs_run_commands_as_the_service_user() -> None:
    user = _sysusers_user()
    for path in [*DOCS, EXAMPLE_CONFIG]:
        text = path.read_text()
        for other in re.findall(r"sudo -u (\S+)", text):
            if other != "`.":  # "unless they show `sudo -u`."
                assert other == user, f"{path.name}: sudo -u {other}"
        assert "useradd" not in text, f"{path.name}: users come from sysusers.d"


def _acl_rules(text: str) -> dict[str, list[tuple[str, str]]]:
    """user -> [(access, topic pattern)] from mosquitto ACL lines (comments skipped)."""
    rules: dict[str, list[tuple[str, str]]] = {}
    user: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("user "):
            user = line.split(None, 1)[1]
            rules.setdefault(user, [])
        elif line.startswith("topic ") and user is not None:
            parts = line.split()
            access, pattern = (parts[1], parts[2]) if len(parts) == 3 else ("readwrite", parts[1])
            rules[user].append((access, pattern))
    return rules


def _matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(p) == len(t)


def _may_write(rules: list[tuple[str, str]], topic: str) -> bool:
    return any(access in ("write", "readwrite") and _matches(pattern, topic)
               for access, pattern in rules)


def _acl_snippets() -> list[tuple[str, str]]:
    """The shipped ACL, plus every fenced block in the docs that holds ACL lines."""
    out = [(str(ACL.relative_to(ROOT)), ACL.read_text())]
    for doc in DOCS:
        for block in re.findall(r"```[^\n]*\n(.*?)```", doc.read_text(), flags=re.S):
            if re.search(r"^\s*user \S+", block, flags=re.M) and "topic " in block:
                out.append((doc.name, block))
    return out


def test_acl_matcher_follows_mqtt_wildcards() -> None:
    assert _matches("treadctl/+/cmd/#", "treadctl/lane-1/cmd/reset")
    assert _matches("treadctl/#", "treadctl/lane-1/cmd/reset")
    assert _matches("treadctl/+/cmd/reset", "treadctl/all/cmd/reset")
    assert not _matches("treadctl/+/cmd/stop", "treadctl/lane-1/cmd/reset")
    assert not _matches("treadctl/+/status", "treadctl/lane-1/cmd/reset")
    # The check below would catch the old daemon.md ACL (tablet: treadctl/+/cmd/#).
    old = _acl_rules("user tablet\ntopic read treadctl/#\ntopic write treadctl/+/cmd/#\n")
    assert _may_write(old["tablet"], "treadctl/lane-1/cmd/reset")


def test_only_accounts_with_a_reset_procedure_may_reset_in_every_acl_the_docs_show() -> None:
    """The gym back-end and treadctl dashboard (staff log-in, reason, confirmation) may
    reset; the daemon's own account, staff tablets and Home Assistant may not."""
    snippets = _acl_snippets()
    assert snippets[0][0] == "docs/examples/mosquitto/treadctl.acl"
    for source, text in snippets:
        rules = _acl_rules(text)
        assert rules, source
        resetters = {user for user, r in rules.items()
                     if _may_write(r, "treadctl/lane-1/cmd/reset")}
        assert resetters <= {"gym-backend", "treadctl-dashboard"}, (
            f"{source}: {sorted(resetters)} may send reset")
        for user in ("staff-tablet", "homeassistant", "tablet"):
            if user in rules:
                assert _may_write(rules[user], "treadctl/lane-1/cmd/estop"), (source, user)
                assert _may_write(rules[user], "treadctl/all/cmd/estop"), (source, user)
    shipped = _acl_rules(ACL.read_text())
    assert {u for u, r in shipped.items() if _may_write(r, "treadctl/x/cmd/reset")} == {
        "gym-backend"
    }


def test_example_config_uses_the_daemon_account_of_the_acl() -> None:
    import tomllib

    config = tomllib.loads(EXAMPLE_CONFIG.read_text())
    daemon_accounts = [user for user, r in _acl_rules(ACL.read_text()).items()
                       if _may_write(r, "treadctl/lane-1/state")]
    assert daemon_accounts == [config["mqtt"]["username"]] == ["treadctl-daemon"]
    assert config["daemon"]["data_dir"] == "/var/lib/treadctl"
    assert service_state_dir() == "/var/lib/treadctl"
    pi = (ROOT / "docs" / "raspberry-pi.md").read_text()
    assert 'username = "treadctl-daemon"' in pi
    assert 'password_file = "/etc/treadctl/mqtt-password"' in pi
    assert "/etc/treadctl/mqtt-password" in EXAMPLE_CONFIG.read_text()


def service_state_dir() -> str:
    state = unit_directives(UNIT.read_text())["Service"]["StateDirectory"]
    return f"/var/lib/{state[0]}"
