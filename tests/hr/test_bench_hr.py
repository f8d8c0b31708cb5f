"""The HR benchmark runs and reports in the shape `python -m benchmarks` expects (the numbers
themselves are read by people, not asserted)."""

from __future__ import annotations

from benchmarks.bench_hr import run


def test_quick_run_shape() -> None:
    results = run(quick=True)
    assert [r["name"] for r in results] == ["hr.governor.cpu_per_lane",
                                           "hr.notify_to_filtered.p99"]
    for r in results:
        assert r["value"] > 0 and "target" in r and isinstance(r["met"], bool)
