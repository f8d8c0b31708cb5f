"""Heart rate a gym can trust (docs/heart-rate.md).

* :mod:`treadctl.hr.codec` - the Bluetooth Heart Rate Measurement characteristic (0x2A37),
  decoded and encoded sans-I/O;
* :mod:`treadctl.hr.filter` - the plausibility filter: filtered HR + quality state
  (``good`` | ``unreliable`` | ``lost``) and the HR-ceiling decision the interlock calls;
* :mod:`treadctl.hr.governor` - heart-rate-governed segments: speed inside the limits,
  rate-limited, with the HR-loss rule;
* :mod:`treadctl.hr.strap` - a chest strap over BLE (bleak), and the simulated strap
  (``sim-hr://``) on the simulator's heart model (:mod:`treadctl.simulator.heart`).

Nothing in this package commands a treadmill: a strap is never a reason for the belt to
move. The control core asks the governor for a setpoint and the filter for a decision.
"""

from treadctl.hr.codec import (
    HEART_RATE_MEASUREMENT,
    HEART_RATE_SERVICE,
    HeartRateCodecError,
    HeartRateMeasurement,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
)

__all__ = [
    "HEART_RATE_MEASUREMENT",
    "HEART_RATE_SERVICE",
    "HeartRateCodecError",
    "HeartRateMeasurement",
    "decode_heart_rate_measurement",
    "encode_heart_rate_measurement",
]
