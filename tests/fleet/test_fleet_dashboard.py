"""The dashboard shows several sites, grouped, through the central broker (a real
browser, the shipped bridge and ACL configs, a daemon per site)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dash_stack import Dashboard, chromium_page, log_in, screenshot

SITES = """
[[dashboard.site]]
name = "site-a"
bridge_topic = "fleet/site-a/bridge"

[[dashboard.site]]
name = "site-b"
bridge_topic = "fleet/site-b/bridge"
"""
# No [dashboard.lanes]: what each lane can do comes over the bridges, in the daemons'
# retained info.


def sel(site: str, lane: str, state: str | None = None) -> str:
    return f'[data-lane="{site}/{lane}"]' + (f'[data-state="{state}"]' if state else "")


async def test_dashboard_groups_sites_through_the_central_broker(fleet: Any,
                                                                 tmp_path: Path) -> None:
    dash = Dashboard(tmp_path, fleet.central.port, SITES, name="fleet-dash",
                     mqtt_extra=f'username = "fleet-dashboard"\n'
                                f'password = "{fleet.passwords["fleet-dashboard"]}"')
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, dash.wait_lanes, 4, 30.0)
        # The browser is synchronous (Playwright's sync API): it runs in a thread while
        # this loop keeps the test's cables between the brokers going.
        await loop.run_in_executor(None, _browse, dash, fleet, tmp_path, loop)
    finally:
        await loop.run_in_executor(None, dash.stop)


def _browse(dash: Dashboard, fleet: Any, tmp_path: Path, loop: asyncio.AbstractEventLoop
            ) -> None:
    with chromium_page() as page:
        log_in(page, dash.url, "sam")
        for site in ("site-a", "site-b"):
            assert page.is_visible(f"#site-{site} .site-name")
            for lane in ("lane-1", "lane-2"):
                page.wait_for_selector(f"#site-{site} {sel(site, lane, 'idle')}", timeout=20000)
        page.wait_for_function("() => document.querySelector('#site-site-a .bridge')"
                               ".textContent === 'linked'", timeout=20000)
        for site in ("site-a", "site-b"):
            page.wait_for_function(
                "([s, t]) => document.querySelector(s).textContent === t",
                arg=[f"{sel(site, 'lane-2')} .caps",
                     "treadctl-reference · FTMS · forward and reverse"], timeout=20000)
        page.click(f"{sel('site-a', 'lane-1')} .start")
        page.select_option("#start-builtin", "forward-warmup-cooldown")
        page.click("#start-builtin-go")
        page.wait_for_selector(sel("site-a", "lane-1", "running"), timeout=20000)
        screenshot(page, tmp_path, "fleet-dashboard")

        # Site A's bridge is cut: the page says so; the lane is left alone at its site.
        asyncio.run_coroutine_threadsafe(fleet.sites["site-a"].cable.cut(), loop).result(10)
        page.wait_for_selector("#site-site-a.bridge-down", timeout=30000)
        assert "site link down" in page.inner_text(sel("site-a", "lane-1"))
        screenshot(page, tmp_path, "fleet-dashboard-site-cut")
        asyncio.run_coroutine_threadsafe(fleet.sites["site-a"].cable.mend(), loop).result(10)
        page.wait_for_function("() => document.querySelector('#site-site-a .bridge')"
                               ".textContent === 'linked'", timeout=30000)
        page.wait_for_selector(sel("site-a", "lane-1", "running"), timeout=20000)

        # E-STOP ALL on the fleet view: one e-stop per lane (the gym-wide topic never
        # crosses a bridge), every lane of every site latches.
        page.click("#estop-all")
        for site in ("site-a", "site-b"):
            for lane in ("lane-1", "lane-2"):
                page.wait_for_selector(sel(site, lane, "estopped"), timeout=10000)
        screenshot(page, tmp_path, "fleet-dashboard-estop-all")
        assert page.js_errors == []
