"""treadctl's treadmill simulator: belt and incline physics, the firmware side of FTMS,
fault injection and the link servers (in-memory, TCP, pty) that stand in for hardware.

See docs/simulator.md (how to use it) and docs/reference-firmware.md (the firmware
behaviour it implements).
"""

from treadctl.simulator.faults import FAULTS, FaultPlan, FaultSpecError, FaultWindow, parse_faults
from treadctl.simulator.firmware import BeltTruth, SimTreadmill
from treadctl.simulator.link import serve_pty, serve_stream, serve_tcp

__all__ = [
    "FAULTS",
    "BeltTruth",
    "FaultPlan",
    "FaultSpecError",
    "FaultWindow",
    "SimTreadmill",
    "parse_faults",
    "serve_pty",
    "serve_stream",
    "serve_tcp",
]
