"""A short soak in the normal suite: 12 simulated minutes, 2 treadmills (one per profile),
a fixed seed, faults close together. Every fault type must be injected at least once and
every check (stop within bound, nothing moves while latched, data kept) must hold."""

from __future__ import annotations

from pathlib import Path

from soak import ALL_FAULTS, SoakStats, format_table, run_soak

_cache: dict[str, SoakStats] = {}


def _soak(tmp_path: Path) -> SoakStats:
    if "stats" not in _cache:
        _cache["stats"] = run_soak(
            hours=0.2, treadmills=2, seed=7, data_dir=tmp_path, gap_s=(3.0, 20.0)
        )
    return _cache["stats"]


def test_short_soak_has_no_violations(tmp_path: Path) -> None:
    stats = _soak(tmp_path)
    table = format_table(stats)
    assert stats.violations == [], table
    missing = [name for name in ALL_FAULTS if stats.injected[name] == 0]
    assert missing == [], f"fault types never injected: {missing}\n{table}"
    assert stats.stops_checked > 0
    assert stats.stops_within == stats.stops_checked, table
    assert stats.data_checks > 0
    assert stats.sessions > 0 and stats.samples > 0


def test_garbage_alone_never_trips(tmp_path: Path) -> None:
    stats = _soak(tmp_path)
    assert stats.injected["garbage"] > 0
    assert [v for v in stats.violations if "garbage alone tripped" in v] == []


def test_the_faults_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    """A lane's faults come from the seed and its index alone: one process or one per lane,
    the same faults at the same virtual times, so the same counts. (The number of samples
    recorded is not compared: it differs by a couple between the two layouts, 2195 vs 2197
    here, and is the same run to run for each.)"""
    runs = [run_soak(hours=0.05, treadmills=2, seed=3, data_dir=tmp_path / f"w{w}",
                     gap_s=(3.0, 20.0), workers=w) for w in (1, 2)]
    for r in runs:
        assert r.violations == [] and sum(r.injected.values()) > 2
    one, two = (r.as_dict() for r in runs)
    for key in ("faults_injected", "faults_tripped", "faults_without_trip",
                "trips_per_interlock", "stops_checked", "worst_stop_s", "sessions_recorded",
                "spontaneous_trips"):
        assert one[key] == two[key], key
