"""The stop bound is one formula (``safety.stop_bound_s``); docs/safety.md's worked examples
are its numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from treadctl.control.safety import SafetyConfig, stop_bound_s
from treadctl.profiles import load_profile

DOCS = Path(__file__).resolve().parents[2] / "docs" / "safety.md"
NAMES = {"reference firmware": "treadctl-reference", "kinetic-rx2": "kinetic-rx2"}


def _examples() -> list[tuple[str, float, float]]:
    text = " ".join(DOCS.read_text().split("**Stop bound**", 1)[1].split("\n\n", 1)[0].split())
    found = re.findall(r"([a-z0-9 -]+?) at ([\d.]+) km/h → [\d.+ ]+= ([\d.]+) s", text)
    return [(NAMES[name.strip()], float(v), float(total)) for name, v, total in found]


def test_the_docs_show_two_worked_examples() -> None:
    assert [e[0] for e in _examples()] == ["treadctl-reference", "kinetic-rx2"]


@pytest.mark.parametrize(("profile", "speed_kmh", "documented_s"), _examples())
def test_the_docs_examples_are_the_formula(profile: str, speed_kmh: float,
                                           documented_s: float) -> None:
    bound = stop_bound_s(load_profile(profile), SafetyConfig(), speed_kmh)
    assert round(bound, 2) == documented_s
