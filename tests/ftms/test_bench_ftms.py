"""The FTMS benchmark runs and reports in the shape `python -m benchmarks` expects."""

from __future__ import annotations

from benchmarks.bench_ftms import PAYLOADS, run


def test_benchmark_quick_run_shape() -> None:
    assert len(PAYLOADS) >= 5
    results = run(quick=True)
    names = [r["name"] for r in results]
    assert names == [
        "ftms.treadmill_data.decode",
        "ftms.treadmill_data.encode",
        "ftms.control_point.is_stop",
    ]
    for r in results:
        assert isinstance(r["value"], int | float) and r["value"] > 0
        assert r["unit"].endswith("/s")
    decode = results[0]
    assert decode["note"]
    if "baseline" in decode:  # pyftms found: ratio and target are reported with it
        assert decode["baseline"] > 0
        assert abs(decode["ratio"] - decode["value"] / decode["baseline"]) < 0.01 * decode["ratio"]
        assert decode["target"] == 5.0 and decode["met"] == (decode["ratio"] >= 5.0)
    else:
        assert "unavailable" in decode["note"]
