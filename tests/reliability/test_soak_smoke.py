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
