"""A fault-free session never says "heart rate unreliable".

Seen by hand before this test: every built-in reverse program on treadctl-reference and
kinetic-rx2 warned ``hr-unreliable`` at its stops and direction changes (the console's HR
field read flat at a steady walk, then "did not follow" a stop; after a harder backward
bout, a short stop and a gentler forward walk it "should have risen"). The treadmill's HR
field here is the simulator's heart model (the same physiology as the simulated strap),
and the filter judges the workload as a heart sees it (lagged).
"""

from __future__ import annotations

from typing import Any

import pytest

from treadctl.clock import run_virtual
from treadctl.control.controller import Controller, Outcome
from treadctl.profiles import load_profile
from treadctl.programs.model import load_program
from treadctl.transport.sim import SimTransport

CASES = [
    ("treadctl-reference", "reverse-intervals"),
    ("treadctl-reference", "backward-uphill-walk"),
    ("treadctl-reference", "forward-warmup-cooldown"),
    ("kinetic-rx2", "reverse-jog"),
]


@pytest.mark.parametrize(("profile", "program"), CASES)
def test_a_fault_free_builtin_session_has_no_heart_rate_warning(profile: str,
                                                                program: str) -> None:
    async def main() -> tuple[Any, list[dict[str, Any]], set[str], list[Any]]:
        prof = load_profile(profile)
        ctl = Controller(SimTransport(prof), prof)
        events: list[dict[str, Any]] = []
        warnings: set[str] = set()
        qualities: list[Any] = []
        ctl.event_listeners.append(events.append)

        def sample(snap: Any) -> None:
            warnings.update(snap.warnings or [])
            qualities.append(snap.hr_quality)

        ctl.telemetry_listeners.append(sample)
        await ctl.open()
        try:
            result = await ctl.start(load_program(program))
        finally:
            await ctl.close()
        return result, events, warnings, qualities

    result, events, warnings, qualities = run_virtual(main)
    assert result.outcome is Outcome.FINISHED
    assert "good" in qualities  # the console's HR field was there and judged
    assert not [e for e in events if str(e["type"]).startswith("hr-")], events
    assert not {w for w in warnings if w.startswith("hr-")}
