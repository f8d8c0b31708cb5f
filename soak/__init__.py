"""The fault campaign (soak): ``python -m soak``; see :mod:`soak.virtual`
(virtual-time phase, the checks, the summary table) and :mod:`soak.broker` (the
real-time daemon + mosquitto phase). Documented in docs/soak.md."""

from soak.virtual import ALL_FAULTS, SoakStats, format_table, main, run_soak, stop_bound_s

__all__ = ["ALL_FAULTS", "SoakStats", "format_table", "main", "run_soak", "stop_bound_s"]
