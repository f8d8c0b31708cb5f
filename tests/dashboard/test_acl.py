"""The dashboard's broker account as docs/mosquitto-acl.md gives it: the shipped ACL plus
the documented block, a real mosquitto with passwords, the daemon and the dashboard on their
own accounts. Everything the page does gets through; what it must not do is refused."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

from dash_stack import REPO, Browserless, Dashboard, Proc, daemon_toml, wait_until

ACCOUNTS = {"treadctl-daemon": "daemon-pw", "treadctl-dashboard": "dash-pw"}


def documented_block() -> str:
    doc = (REPO / "docs" / "mosquitto-acl.md").read_text()
    section = doc.split("## The dashboard's account", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


def test_documented_dashboard_account_can_do_what_the_page_does(mosquitto_factory: Any,
                                                                tmp_path: Path) -> None:
    acl = tmp_path / "treadctl.acl"
    acl.write_text((REPO / "docs/examples/mosquitto/treadctl.acl").read_text() + "\n"
                   + documented_block())
    pw = tmp_path / "passwd"
    for i, (user, password) in enumerate(ACCOUNTS.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user,
                        password], check=True, capture_output=True, timeout=60)
    broker = mosquitto_factory([f"password_file {pw}", f"acl_file {acl}"])
    cfg = tmp_path / "daemon.toml"
    body = daemon_toml(broker.port, tmp_path / "data", [("lane-1", "treadctl-reference")],
                       f"acl-{uuid.uuid4().hex[:6]}")
    body = body.replace("keepalive_s = 5\n", 'keepalive_s = 5\nusername = "treadctl-daemon"\n'
                        'password = "daemon-pw"\n')
    cfg.write_text(body)
    daemon = Proc(["daemon", "--config", str(cfg)], tmp_path / "daemon.log")
    dash = Dashboard(tmp_path, broker.port, f'daemon_config = "{cfg}"',
                     mqtt_extra='username = "treadctl-dashboard"\npassword = "dash-pw"')
    try:
        dash.wait_lanes(1)
        c = Browserless(dash.url)
        assert c.login("sam") == 200
        wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "idle", 20,
                   "lane idle", daemon)
        # The daemon may publish its retained info, the dashboard may read it.
        wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["caps_from"] == "daemon", 20,
                   "the lane's info through the ACL", daemon)
        for path, body_ in (("start", {"program": "forward-warmup-cooldown"}), ("pause", {}),
                            ("resume", {}), ("stop", {})):
            _, reply = c.post(f"/api/lanes/local/lane-1/{path}", body_)
            assert reply["type"] == "ack", (path, reply)
            if path in ("start", "resume"):
                wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "running",
                           20, "running")
            if path == "pause":
                wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "paused",
                           20, "paused")
        wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "idle", 20, "idle")
        assert c.post("/api/estop-all")[1]["type"] == "sent"  # treadctl/all/cmd/estop
        wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "estopped", 10,
                   "estopped by the gym-wide e-stop")
        _, reply = c.post("/api/lanes/local/lane-1/reset",
                          {"reason": "checked", "confirm": True})
        assert reply["type"] == "ack", reply
        assert c.post("/api/lanes/local/lane-1/estop")[1]["type"] == "sent"
        wait_until(lambda: c.get("/api/lanes")[1]["lanes"][0]["state"] == "estopped", 10,
                   "estopped")
    finally:
        dash.stop()
        daemon.stop()
    # What the account may not publish, the broker refuses (MQTT v5 PUBACK 135).
    out = subprocess.run(["mosquitto_pub", "-V", "5", "-q", "1", "-d", "-p", str(broker.port),
                          "-u", "treadctl-dashboard", "-P", "dash-pw", "-t",
                          "treadctl/lane-1/cmd/heartbeat", "-m", "{}"],
                         capture_output=True, text=True, timeout=30)
    assert "Not authorized" in out.stdout + out.stderr, out
