"""The dashboard's door: log-in, roles, CSRF, and what is refused before anything is sent.
Plain HTTP against a running ``treadctl dashboard`` next to a real daemon; whether a
command reached the daemon is judged from the daemon's retained state on the broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dash_stack import Browserless, wait_until

from treadctl.dashboard.auth import hash_password, verify_password
from treadctl.dashboard.config import DashboardConfigError, parse_dashboard_config


def _state(gym: Any, lane: str) -> str:
    c = Browserless(gym.dashboard.url)
    assert c.login("vic") == 200
    lanes = {x["id"]: x for x in c.get("/api/lanes")[1]["lanes"]}
    return str(lanes[lane]["state"])


def test_no_command_without_log_in_csrf_and_role(gym: Any) -> None:
    url = gym.dashboard.url
    anon = Browserless(url)
    assert anon.get("/api/lanes")[0] == 401
    assert anon.post("/api/lanes/local/lane-1/estop", csrf=None)[0] == 401
    assert anon.post("/api/estop-all", csrf=None)[0] == 401
    assert anon.login("sam", "wrong-password") == 401
    assert anon.get("/api/lanes")[0] == 401

    staff = Browserless(url)
    assert staff.login("sam") == 200
    # CSRF: missing, wrong, or a foreign Origin: refused before anything is sent.
    assert staff.post("/api/lanes/local/lane-1/start", {"program": "quick-demo"},
                      csrf=None)[0] == 403
    assert staff.post("/api/lanes/local/lane-1/start", {"program": "quick-demo"},
                      csrf="forged")[0] == 403
    assert staff.post("/api/lanes/local/lane-1/start", {"program": "quick-demo"},
                      headers={"Origin": "http://evil.example"})[0] == 403
    wait_until(lambda: _state(gym, "lane-1") == "idle", 10, "lane-1 idle")

    viewer = Browserless(url)
    assert viewer.login("vic") == 200
    status, body = viewer.post("/api/lanes/local/lane-2/start", {"program": "quick-demo"})
    assert status == 403 and "viewer" in body
    assert viewer.post("/api/lanes/local/lane-2/reset", {"reason": "x", "confirm": True}
                       )[0] == 403
    assert viewer.get("/api/audit")[0] == 403
    # A viewer may stop: a stop is never held back by a role.
    status, reply = viewer.post("/api/lanes/local/lane-2/stop")
    assert status == 200 and reply["type"] == "ack", reply
    assert reply["request_id"].startswith("dash-vic-")

    # Reset needs a reason and the confirmation (and staff).
    assert staff.post("/api/lanes/local/lane-2/reset", {"confirm": True})[0] == 400
    assert staff.post("/api/lanes/local/lane-2/reset", {"reason": "checked"})[0] == 400
    status, reply = staff.post("/api/lanes/local/lane-2/reset",
                               {"reason": "checked", "confirm": True})
    # Not latched: the daemon acks (a reset of an unlatched lane changes nothing); the reason
    # is what was typed.
    assert status == 200 and reply["type"] == "ack", reply
    assert reply["reason"] == "checked"  # who pressed it travels as ``by``

    admin = Browserless(url)
    assert admin.login("ada") == 200
    status, audit = admin.get("/api/audit")
    assert status == 200
    assert any(a["user"] == "vic" and a["action"] == "stop" for a in audit), audit


def test_reverse_program_refused_on_a_forward_only_lane_before_anything_moves(
        gym: Any) -> None:
    staff = Browserless(gym.dashboard.url)
    assert staff.login("sam") == 200
    status, reply = staff.post("/api/lanes/local/lane-3/start",
                               {"program": "reverse-walk-intro"})
    assert status == 422 and reply["type"] == "invalid", reply
    assert all(v["field"] == "direction" for v in reply["violations"])
    assert all("cannot run reverse" in line for line in reply["lines"])
    # Nothing was sent: the daemon's retained state stays idle with no program...
    assert _state(gym, "lane-3") == "idle"
    # ... and the same program is accepted on a lane that can run reverse.
    status, reply = staff.post("/api/lanes/local/lane-1/start", {"program": "quick-demo"})
    assert status == 200 and reply["type"] == "ack", reply
    wait_until(lambda: _state(gym, "lane-1") == "running", 15, "lane-1 running")
    assert staff.post("/api/lanes/local/lane-1/stop")[1]["type"] == "ack"


def test_login_throttled_after_repeated_failures(gym: Any) -> None:
    c = Browserless(gym.dashboard.url)
    for _ in range(5):
        assert c.login("sam", "nope") == 401
    assert c.login("sam") == 429  # even the right password, for a minute


# --------------------------------------------------------------------------- config


def _cfg(user: dict[str, Any], **extra: Any) -> Any:
    return parse_dashboard_config({"dashboard": {"user": [user], **extra}}, "d.toml")


def test_config_refuses_plain_passwords_bad_roles_and_unknown_fields() -> None:
    good = hash_password("long-enough")
    assert _cfg({"name": "a", "password_hash": good, "role": "staff"}).bind == "127.0.0.1"
    with pytest.raises(DashboardConfigError, match=r"password_hash: required, an argon2"):
        _cfg({"name": "a", "password_hash": "hunter22", "role": "staff"})
    with pytest.raises(DashboardConfigError, match=r"role: one of viewer, staff, admin"):
        _cfg({"name": "a", "password_hash": good, "role": "root"})
    with pytest.raises(DashboardConfigError, match=r"\[dashboard\]\.bnid: unknown field"):
        _cfg({"name": "a", "password_hash": good}, bnid="0.0.0.0")
    with pytest.raises(DashboardConfigError, match=r"no \[\[dashboard.user\]\]"):
        parse_dashboard_config({"dashboard": {}}, "d.toml")
    with pytest.raises(DashboardConfigError, match=r"lanes.lane-1: unknown firmware profile"):
        _cfg({"name": "a", "password_hash": good}, lanes={"lane-1": "no-such-profile"})


def test_hash_password_command_makes_a_verifiable_argon2_hash(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "treadctl", "dashboard", "hash-password",
                          "--stdin"], input="correct horse\n", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    h = out.stdout.strip()
    assert re.match(r"^\$argon2id\$", h)
    assert verify_password(h, "correct horse") and not verify_password(h, "correct hors")
    short = subprocess.run([sys.executable, "-m", "treadctl", "dashboard", "hash-password",
                            "--stdin"], input="short\n", capture_output=True, text=True,
                           timeout=60)
    assert short.returncode == 2 and "8 characters" in short.stderr
