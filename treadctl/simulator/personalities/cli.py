"""``treadctl sim --profile NAME`` for a profile whose protocol is not FTMS."""

from __future__ import annotations

from treadctl.profiles import FirmwareProfile
from treadctl.simulator.cli import run_server
from treadctl.simulator.faults import FaultPlan
from treadctl.simulator.personalities import Personality, make_personality, serve_pty, serve_tcp


def serve_native(
    profile: FirmwareProfile,
    plan: FaultPlan,
    seed: int,
    speedup: float,
    listen: tuple[str, int] | None,
) -> int:
    def make() -> Personality:
        return make_personality(profile, faults=FaultPlan(list(plan.windows)), seed=seed)

    def announce(text: str) -> None:
        print(text, flush=True)

    return run_server(make, listen, speedup, announce, pty=serve_pty, tcp=serve_tcp)
