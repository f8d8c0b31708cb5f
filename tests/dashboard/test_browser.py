"""The front desk in a real browser (Debian's Chromium, driven by Playwright): a real
mosquitto, ``treadctl daemon`` with three simulated lanes and ``treadctl dashboard``, each a
process of its own. What the page shows is checked against the daemon's retained MQTT state
and its session store, never against the dashboard's own bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from dash_stack import chromium_page, log_in, screenshot

from treadctl.dashboard.history import ReadOnlyStore

BAD = """name = "too-fast"
[[segment]]
duration_s = 60
speed_kmh = 30.0
direction = "forward"

[[segment]]
duration_s = 60
speed_kmh = 3.0
direction = "reverse"
"""


def lane(page: Any, lane_id: str, site: str = "local") -> str:
    return f'[data-lane="{site}/{lane_id}"]'


def wait_state(page: Any, lane_id: str, state: str, within_s: float = 15.0) -> None:
    page.wait_for_selector(f'{lane(page, lane_id)}[data-state="{state}"]',
                           timeout=within_s * 1000)


def lane_sessions(data_dir: Path, lane_id: str) -> tuple[list[Any], ReadOnlyStore]:
    store = ReadOnlyStore(data_dir / "sessions.db")
    return store.list_sessions(treadmill_id=lane_id), store


def test_front_desk_session_estop_reset_and_bad_upload(gym: Any, tmp_path: Path) -> None:
    dash = gym.dashboard
    with chromium_page() as page:
        log_in(page, dash.url, "sam")
        # Three simulated lanes, live: online, idle, their link counters moving.
        for lane_id in ("lane-1", "lane-2", "lane-3"):
            wait_state(page, lane_id, "idle")
        first = page.inner_text(f"{lane(page, 'lane-1')} .link")
        page.wait_for_function(
            "([sel, t]) => document.querySelector(sel).textContent !== t",
            arg=[f"{lane(page, 'lane-1')} .link", first], timeout=10000)
        # What each lane can do, from the daemon's retained info: profile, protocol.
        assert page.inner_text(f"{lane(page, 'lane-3')} .caps") == (
            "generic-ftms · FTMS · forward only")
        assert page.inner_text(f"{lane(page, 'lane-1')} .caps") == (
            "treadctl-reference · FTMS · forward and reverse")

        # Start a built-in program on lane 1: it runs, the direction and speed show.
        page.click(f"{lane(page, 'lane-1')} .start")
        page.select_option("#start-builtin", "forward-warmup-cooldown")
        page.click("#start-builtin-go")
        page.wait_for_selector("#start-result .ok")
        wait_state(page, "lane-1", "running")
        page.wait_for_function(
            "sel => parseFloat(document.querySelector(sel).textContent) > 0.5",
            arg=f"{lane(page, 'lane-1')} .speed .value", timeout=15000)
        assert "FORWARD" in page.inner_text(f"{lane(page, 'lane-1')} .direction")
        assert "forward-warmup-cooldown" in page.inner_text(f"{lane(page, 'lane-1')} .program")
        assert "left" in page.inner_text(f"{lane(page, 'lane-1')} .time-left")
        screenshot(page, tmp_path, "dashboard-running")

        # E-stop lane 1: estopped, latched, with who pressed it in the reason.
        page.click(f"{lane(page, 'lane-1')} .estop")
        wait_state(page, "lane-1", "estopped", 5)
        warnings = page.inner_text(f"{lane(page, 'lane-1')} .warnings")
        assert "latched" in warnings and "(by sam)" in warnings, warnings
        page.wait_for_function(
            "sel => parseFloat(document.querySelector(sel).textContent) < 0.05",
            arg=f"{lane(page, 'lane-1')} .speed .value", timeout=15000)
        screenshot(page, tmp_path, "dashboard-estopped")

        # Reset: needs a reason and the confirmation.
        page.click(f"{lane(page, 'lane-1')} .reset")
        page.click("#reset-go")
        assert "reason" in page.inner_text("#reset-error")
        page.fill("#reset-reason", "runner checked, belt clear")
        page.click("#reset-go")
        assert "Confirm" in page.inner_text("#reset-error")
        page.check("#reset-confirm")
        screenshot(page, tmp_path, "dashboard-reset-dialog")
        page.click("#reset-go")
        wait_state(page, "lane-1", "idle", 10)

        # A bad upload on the forward-only lane: per segment and field, the CLI's words.
        bad = tmp_path / "too-fast.toml"
        bad.write_text(BAD)
        page.click(f"{lane(page, 'lane-3')} .start")
        assert page.is_disabled('#start-builtin option[value="reverse-walk-intro"]')
        page.set_input_files("#start-file", str(bad))
        page.click("#start-file-go")
        page.wait_for_selector("#start-result .violation")
        items = page.query_selector_all("#start-result .violation")
        shown = [(i.get_attribute("data-segment"), i.get_attribute("data-field"),
                  i.inner_text()) for i in items]
        cli = subprocess.run([sys.executable, "-m", "treadctl", "programs", "validate",
                              bad.name, "--profile", "generic-ftms"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 2
        assert [s[2] for s in shown] == cli.stdout.splitlines(), (shown, cli.stdout)
        assert [(s[0], s[1]) for s in shown] == [("1", "speed_kmh"), ("2", "direction")]
        screenshot(page, tmp_path, "dashboard-bad-upload")
        page.click("#start-close")
        wait_state(page, "lane-3", "idle")  # nothing moved
        assert page.js_errors == []

    # The daemon recorded who pressed what, in the session's events: the start, the e-stop
    # and the reset (appended to the session the e-stop ended), with the typed reason.
    audit = [json.loads(x) for x in (gym.workdir / "dash-audit.jsonl").read_text().splitlines()]
    start = next(a for a in audit if a["action"] == "start")
    infos, store = lane_sessions(gym.data_dir, "lane-1")
    try:
        events = [{"type": str(e.type), **dict(e.data)} for e in store.events(infos[0].id)]
    finally:
        store.close()
    commands = {e["command"]: e for e in events if e["type"] == "command"}
    assert {"start", "estop", "reset"} <= set(commands), events
    assert all(commands[c]["by"] == "sam" for c in ("start", "estop", "reset")), commands
    assert commands["reset"]["reason"] == "runner checked, belt clear"
    assert commands["start"]["request_id"] == next(
        a for a in audit if a["action"] == "start")["request_id"]
    assert any("(by sam)" in json.dumps(e) for e in events if e["type"] == "estop"), events
    assert start["user"] == "sam" and start["target"] == "local/lane-1"
    assert [a["action"] for a in audit].count("start-refused") == 1


def test_staff_stop_with_a_reason_is_recorded_in_the_session(gym: Any, tmp_path: Path) -> None:
    dash = gym.dashboard
    with chromium_page() as page:
        log_in(page, dash.url, "sam")
        wait_state(page, "lane-2", "idle")
        page.click(f"{lane(page, 'lane-2')} .start")
        page.select_option("#start-builtin", "forward-warmup-cooldown")
        page.click("#start-builtin-go")
        wait_state(page, "lane-2", "running")
        page.wait_for_selector("#start-dialog", state="hidden")
        page.click(f"{lane(page, 'lane-2')} .stop-why")
        page.fill("#stop-reason", "runner feels dizzy")
        screenshot(page, tmp_path, "dashboard-stop-reason")
        page.click("#stop-go")
        page.wait_for_selector("#stop-dialog", state="hidden")
        wait_state(page, "lane-2", "idle", 20)
        assert page.js_errors == []
    infos, store = lane_sessions(gym.data_dir, "lane-2")
    try:
        assert str(infos[0].outcome) == "stopped"
        events = [{"type": str(e.type), "t_s": e.t_s, **dict(e.data)}
                  for e in store.events(infos[0].id)]
    finally:
        store.close()
    stops = [e for e in events if e["type"] == "command" and e["command"] == "stop"]
    assert len(stops) == 1, events
    assert (stops[0]["by"], stops[0]["reason"]) == ("sam", "runner feels dizzy")
    assert stops[0]["request_id"].startswith("dash-sam-")
    audit = [json.loads(x) for x in (gym.workdir / "dash-audit.jsonl").read_text().splitlines()]
    assert any(a["action"] == "stop" and a["reason"] == "runner feels dizzy"
               and a["request_id"] == stops[0]["request_id"] for a in audit), audit


def test_gym_wide_estop_is_one_click_even_with_a_dialog_open(gym: Any, tmp_path: Path) -> None:
    dash = gym.dashboard
    with chromium_page((1024, 768)) as page:
        log_in(page, dash.url, "sam")
        for lane_id in ("lane-1", "lane-2"):
            wait_state(page, lane_id, "idle")
            page.click(f"{lane(page, lane_id)} .start")
            page.select_option("#start-builtin", "forward-warmup-cooldown")
            page.click("#start-builtin-go")
            wait_state(page, lane_id, "running")
            page.wait_for_selector("#start-dialog", state="hidden")  # closes itself
        # A dialog is open: the gym-wide button is still on screen and takes the click.
        page.click(f"{lane(page, 'lane-3')} .history")
        page.wait_for_selector("#history-dialog[open]")
        screenshot(page, tmp_path, "dashboard-dialog-open")
        page.click("#estop-all")
        for lane_id in ("lane-1", "lane-2", "lane-3"):
            wait_state(page, lane_id, "estopped", 5)
        screenshot(page, tmp_path, "dashboard-gym-estop")


def test_history_plot_and_downloads_from_the_store(gym: Any, tmp_path: Path) -> None:
    dash = gym.dashboard
    with chromium_page() as page:
        log_in(page, dash.url, "vic")  # a viewer: may watch and stop, sees history
        assert page.is_hidden(f"{lane(page, 'lane-2')} .start")
        assert page.is_hidden(f"{lane(page, 'lane-2')} .reset")
        wait_state(page, "lane-2", "idle")
        # A staff member's session, stopped by the viewer.
        csrf = page.evaluate("S.me.csrf")
        assert csrf
    with chromium_page() as page:
        log_in(page, dash.url, "sam")
        page.click(f"{lane(page, 'lane-2')} .start")
        page.select_option("#start-builtin", "forward-warmup-cooldown")
        page.click("#start-builtin-go")
        wait_state(page, "lane-2", "running")
    with chromium_page() as page:
        log_in(page, dash.url, "vic")
        page.click(f"{lane(page, 'lane-2')} .stop")
        wait_state(page, "lane-2", "idle", 20)
        page.click(f"{lane(page, 'lane-2')} .history")
        row = page.wait_for_selector("#history-table tbody tr[data-session]")
        assert row is not None and "stopped" in row.inner_text()
        page.click("#history-table .plot")
        page.wait_for_function("() => document.querySelector('#history-plot').naturalWidth > 0",
                               timeout=30000)
        sid = row.get_attribute("data-session")
        for fmt, magic in (("csv", b"t_s"), ("tcx", b"<?xml"), ("fit", b".FIT")):
            with page.expect_download() as dl:
                page.click(f'#history-table a[href$="export.{fmt}"]')
            path = Path(dl.value.path())
            head = path.read_bytes()[:64]
            assert magic in head, (fmt, head)
            assert dl.value.suggested_filename == f"{sid}.{fmt}"
        screenshot(page, tmp_path, "dashboard-history")
