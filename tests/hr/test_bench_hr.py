"""The HR benchmark runs and reports in the shape `python -m benchmarks` expects (the timings
are read by people, not asserted); its settle numbers come from the model and are checked."""

from __future__ import annotations

from benchmarks.bench_hr import run


def test_quick_run_shape() -> None:
    results = {r["name"]: r for r in run(quick=True)}
    assert list(results) == ["hr.supervisor.cpu_per_lane", "hr.notify_to_filtered.p99",
                             "hr.governed_reverse.settle_s",
                             "hr.governed_reverse.overshoot_bpm",
                             "hr.governed_reverse.max_step_kmh_per_s"]
    for r in results.values():
        assert "target" in r and isinstance(r["met"], bool) and "baseline" in r
    assert results["hr.supervisor.cpu_per_lane"]["value"] > 0
    assert results["hr.notify_to_filtered.p99"]["value"] > 0
    # Virtual-time model numbers, not wall-clock ones: these are deterministic.
    assert results["hr.governed_reverse.settle_s"]["met"]
    assert results["hr.governed_reverse.overshoot_bpm"]["met"]
    assert results["hr.governed_reverse.max_step_kmh_per_s"]["met"]
