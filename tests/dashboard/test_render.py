"""The page's lane cards rewrite only what changed (in Debian's Chromium, no server).

A DOM write of the same text still invalidates the card's style and layout; 200 live cards
rewritten on every push kept the fleet page's main thread busy long enough to hold up an
E-STOP click past 50 ms (docs/fleet.md, "Measured"). ``app.js`` is loaded into a blank page
(its ``main`` waits for a DOMContentLoaded that has already passed, so nothing connects) and
``render`` is called directly; a MutationObserver counts what each call wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dash_stack import chromium_page

APP_JS = Path(__file__).resolve().parents[2] / "treadctl" / "dashboard" / "static" / "app.js"

LANE: dict[str, Any] = {
    "key": "local/lane-1", "site": "local", "id": "lane-1", "status": "online",
    "state": "running", "latched": False, "direction": "forward", "speed_kmh": 3.0,
    "incline_pct": 1.0, "hr_bpm": 98, "program": "walk", "segment": 1, "segments": 3,
    "time_left_s": 300, "elapsed_s": 10, "warnings": [], "profile": "treadctl-reference",
    "protocol": "ftms", "reverse": True, "rear_facing": False,
    "link": {"frames_received": 10, "frames_sent": 9, "crc_errors": 0, "dropped": 0},
}

OBSERVE = """() => {
  window.__m = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const n = r.target.nodeType === 3 ? r.target.parentElement : r.target;
      window.__m.push([r.type, n.className || n.tagName, r.attributeName]);
    }
  }).observe(document.querySelector('[data-lane="local/lane-1"]'),
             { subtree: true, childList: true, characterData: true, attributes: true });
}"""


def _render(page: Any, lane: dict[str, Any]) -> list[list[Any]]:
    """Render ``lane``; the mutations it caused (delivered after the call's microtasks)."""
    page.evaluate("lane => { window.__m = window.__m || []; window.__m.length = 0; "
                  "render(lane); }", lane)
    return page.evaluate("() => new Promise(r => setTimeout(() => r(window.__m), 0))")


def test_render_writes_only_what_changed() -> None:
    with chromium_page() as page:
        page.set_content('<main id="sites"></main><div id="toasts"></div>')
        page.add_script_tag(content=APP_JS.read_text(encoding="utf-8"))
        page.evaluate("() => { S.me = { may: { start: true, pause: true, resume: true, "
                      "reset: true, estop: true } }; S.sites = []; }")
        page.evaluate("lane => render(lane)", LANE)
        page.evaluate(OBSERVE)
        card = '[data-lane="local/lane-1"]'
        assert page.text_content(f"{card} .speed .value") == "3.0"

        assert _render(page, LANE) == [], "the same lane again rewrote the card"

        faster = json.loads(json.dumps(LANE))
        faster["speed_kmh"] = 3.4
        changed = _render(page, faster)
        assert changed and all(m[1] == "value" for m in changed), changed
        assert page.text_content(f"{card} .speed .value") == "3.4"

        latched = {**faster, "state": "estopped", "latched": True,
                   "warnings": ["latched: remote-estop"]}
        changed = _render(page, latched)
        kinds = {m[1] for m in changed}
        assert "warnings" in kinds and "state" in kinds, changed
        assert page.get_attribute(card, "data-state") == "estopped"
        assert page.text_content(f"{card} .warnings") == "latched: remote-estop"
        assert page.is_disabled(f"{card} .pause") and not page.is_disabled(f"{card} .reset")
        assert _render(page, latched) == [], "the same latched lane again rewrote the card"
        assert page.js_errors == []  # type: ignore[attr-defined]
