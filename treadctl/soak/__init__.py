"""The fault campaign (soak): ``python -m treadctl.soak``; see :mod:`treadctl.soak.virtual`
(virtual-time phase, the checks, the summary table) and :mod:`treadctl.soak.broker` (the
real-time daemon + mosquitto phase). Documented in docs/soak.md."""

from treadctl.soak.virtual import ALL_FAULTS, SoakStats, format_table, main, run_soak, stop_bound_s

__all__ = ["ALL_FAULTS", "SoakStats", "format_table", "main", "run_soak", "stop_bound_s"]
