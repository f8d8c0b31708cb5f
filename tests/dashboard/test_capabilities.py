"""A dashboard that knows nothing of the lanes but their topics (a front-desk PC: no
``daemon_config``, no ``[dashboard.lanes]``) learns what each lane can do from the daemon's
retained ``info``: the lane card shows profile and protocol, and a reverse program is
refused on a forward-only lane before anything is published - checked on the broker."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dash_stack import Browserless, Dashboard, Proc, daemon_toml, wait_until

LANES = [("lane-1", "treadctl-reference"), ("lane-3", "generic-ftms"),
         ("lane-4", "generic-ftms")]


@pytest.fixture
def front_desk(mosquitto_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, Dashboard]]:
    broker = mosquitto_factory(["set_tcp_nodelay true"])
    cfg = tmp_path / "daemon.toml"
    text = daemon_toml(broker.port, tmp_path / "data", LANES, f"d-{uuid.uuid4().hex[:6]}")
    cfg.write_text(text + "rear_facing = true\n")  # the last lane, lane-4
    daemon = Proc(["daemon", "--config", str(cfg)], tmp_path / "daemon.log")
    dash = Dashboard(tmp_path, broker.port, "")  # nothing about the lanes
    try:
        dash.wait_lanes(3)
        yield broker, dash
    finally:
        dash.stop()
        daemon.stop()


class Sub:
    """``mosquitto_sub -v`` on the command topics, its lines read by a thread."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                                      "-v", "-t", "treadctl/+/cmd/#"], stdout=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(10)


def lanes_by_id(client: Browserless) -> dict[str, Any]:
    status, data = client.get("/api/lanes")
    assert status == 200
    return {lane["id"]: lane for lane in data["lanes"]}


def test_capabilities_come_from_the_daemon_and_gate_reverse(
        front_desk: tuple[Any, Dashboard], tmp_path: Path) -> None:
    broker, dash = front_desk
    client = Browserless(dash.url)
    assert client.login("sam") == 200
    wait_until(lambda: all(lane.get("caps_from") == "daemon"
                           for lane in lanes_by_id(client).values()), 20, "info of every lane")
    lanes = lanes_by_id(client)
    assert (lanes["lane-1"]["profile"], lanes["lane-1"]["protocol"], lanes["lane-1"]["reverse"]
            ) == ("treadctl-reference", "ftms", True)
    assert (lanes["lane-3"]["profile"], lanes["lane-3"]["reverse"],
            lanes["lane-3"]["rear_facing"]) == ("generic-ftms", False, False)
    assert (lanes["lane-4"]["reverse"], lanes["lane-4"]["rear_facing"]) == (True, True)

    # Everything the dashboard publishes, as the broker sees it.
    sub = Sub(broker.port)
    try:
        # Subscribed once it has seen a command (sent until it has).
        wait_until(lambda: client.post("/api/lanes/local/lane-3/stop", {"reason": "first"})
                   and any("cmd/stop" in x for x in sub.lines), 20, "mosquitto_sub subscribed")
        # A reverse built-in on the forward-only lane: refused, segment and field named.
        status, reply = client.post("/api/lanes/local/lane-3/start",
                                    {"program": "reverse-walk-intro"})
        assert status == 422 and reply["type"] == "invalid", reply
        assert reply["violations"] and all(v["field"] == "direction"
                                           for v in reply["violations"]), reply
        # The same program is fine where the belt reverses, and on the rear-facing lane.
        for tid in ("lane-1", "lane-4"):
            status, reply = client.post(f"/api/lanes/local/{tid}/start?check=1",
                                        {"program": "reverse-walk-intro"})
            assert status == 200 and reply["type"] == "checked", (tid, reply)
        # A marker after the refusal: once the broker delivered it, anything published
        # before it has been delivered too.
        status, reply = client.post("/api/lanes/local/lane-3/stop", {"reason": "marker"})
        assert status == 200 and reply["type"] == "ack", reply
        wait_until(lambda: any('"marker"' in x for x in sub.lines), 10, "the marker")
    finally:
        sub.stop()
    lines = sub.lines
    assert any(line.startswith("treadctl/lane-3/cmd/stop ") and '"marker"' in line
               for line in lines), lines
    assert not [line for line in lines if "/cmd/start" in line], lines


REAR = """name = "rear-walk"
[[segment]]
duration_s = 120
speed_kmh = 2.0
direction = "reverse"
"""


def test_rear_facing_lane_in_the_browser_turn_then_resume(
        front_desk: tuple[Any, Dashboard], tmp_path: Path) -> None:
    """A reverse upload on the rear-facing lane is accepted; the card asks for the turn,
    nothing moves until Resume, then the lane runs."""
    from dash_stack import chromium_page, log_in, screenshot

    _broker, dash = front_desk
    program = tmp_path / "rear-walk.toml"
    program.write_text(REAR)
    card = '[data-lane="local/lane-4"]'
    with chromium_page() as page:
        log_in(page, dash.url, "sam")
        page.wait_for_selector(f'{card}[data-state="idle"]', timeout=20000)
        page.wait_for_function("s => document.querySelector(s).textContent.includes("
                               "'rear-facing')", arg=f"{card} .caps", timeout=20000)
        page.click(f"{card} .start")
        assert "rear" in page.inner_text("#start-caps")
        assert not page.is_disabled('#start-builtin option[value="reverse-walk-intro"]')
        page.set_input_files("#start-file", str(program))
        page.click("#start-file-go")
        page.wait_for_selector("#start-result .ok", timeout=10000)
        page.wait_for_selector("#start-dialog", state="hidden")  # closes itself
        page.wait_for_selector(f'{card}[data-state="paused"]', timeout=20000)
        page.wait_for_function("s => document.querySelector(s).textContent.includes("
                               "'turn-around')", arg=f"{card} .warnings", timeout=10000)
        assert float(page.inner_text(f"{card} .speed .value")) == 0.0
        screenshot(page, tmp_path, "dashboard-rear-facing-turn")
        page.click(f"{card} .resume")
        page.wait_for_selector(f'{card}[data-state="running"]', timeout=20000)
        page.wait_for_function(
            "sel => parseFloat(document.querySelector(sel).textContent) > 1.0",
            arg=f"{card} .speed .value", timeout=20000)
        assert "turn-around" not in page.inner_text(f"{card} .warnings")
        page.click(f"{card} .stop")
        page.wait_for_selector(f'{card}[data-state="idle"]', timeout=30000)
        assert page.js_errors == []
