"""Fitness Machine Feature (0x2ACC): which fields the machine reports and which targets it accepts.

Wire format: uint32 machine feature bits, uint32 target-setting feature bits. Bits 17-31 of
both are reserved for future use; they are kept, not rejected, so a newer machine still
connects (the properties below only read the defined bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from treadctl.ftms._wire import to_int, u32
from treadctl.ftms.errors import ByteData, check_size

_NAME: Final = "feature"

#: Machine feature bits (FTMS 1.0 §4.3.1.1), name -> bit.
MACHINE_FEATURE_BITS: Final = {
    "average_speed": 0,
    "cadence": 1,
    "total_distance": 2,
    "inclination": 3,
    "elevation_gain": 4,
    "pace": 5,
    "step_count": 6,
    "resistance_level": 7,
    "stride_count": 8,
    "expended_energy": 9,
    "heart_rate": 10,
    "metabolic_equivalent": 11,
    "elapsed_time": 12,
    "remaining_time": 13,
    "power_measurement": 14,
    "force_on_belt_and_power_output": 15,
    "user_data_retention": 16,
}
#: Target setting feature bits (FTMS 1.0 §4.3.1.2), name -> bit.
TARGET_FEATURE_BITS: Final = {
    "speed": 0,
    "inclination": 1,
    "resistance": 2,
    "power": 3,
    "heart_rate": 4,
    "expended_energy": 5,
    "step_number": 6,
    "stride_number": 7,
    "distance": 8,
    "training_time": 9,
    "time_in_two_hr_zones": 10,
    "time_in_three_hr_zones": 11,
    "time_in_five_hr_zones": 12,
    "indoor_bike_simulation": 13,
    "wheel_circumference": 14,
    "spin_down_control": 15,
    "cadence": 16,
}


@dataclass(frozen=True)
class FitnessMachineFeature:
    machine: int
    target: int

    def _m(self, name: str) -> bool:
        return bool(self.machine >> MACHINE_FEATURE_BITS[name] & 1)

    def _t(self, name: str) -> bool:
        return bool(self.target >> TARGET_FEATURE_BITS[name] & 1)

    @property
    def machine_features(self) -> list[str]:
        return [n for n, b in MACHINE_FEATURE_BITS.items() if self.machine >> b & 1]

    @property
    def target_features(self) -> list[str]:
        return [n for n, b in TARGET_FEATURE_BITS.items() if self.target >> b & 1]

    @property
    def supports_average_speed(self) -> bool:
        return self._m("average_speed")

    @property
    def supports_total_distance(self) -> bool:
        return self._m("total_distance")

    @property
    def supports_inclination(self) -> bool:
        return self._m("inclination")

    @property
    def supports_elevation_gain(self) -> bool:
        return self._m("elevation_gain")

    @property
    def supports_pace(self) -> bool:
        return self._m("pace")

    @property
    def supports_resistance(self) -> bool:
        return self._m("resistance_level")

    @property
    def supports_expended_energy(self) -> bool:
        return self._m("expended_energy")

    @property
    def supports_heart_rate(self) -> bool:
        return self._m("heart_rate")

    @property
    def supports_elapsed_time(self) -> bool:
        return self._m("elapsed_time")

    @property
    def supports_remaining_time(self) -> bool:
        return self._m("remaining_time")

    @property
    def supports_force_and_power(self) -> bool:
        return self._m("force_on_belt_and_power_output")

    @property
    def can_set_speed(self) -> bool:
        return self._t("speed")

    @property
    def can_set_inclination(self) -> bool:
        return self._t("inclination")

    @property
    def can_set_heart_rate(self) -> bool:
        return self._t("heart_rate")

    @property
    def can_set_distance(self) -> bool:
        return self._t("distance")

    @property
    def can_set_training_time(self) -> bool:
        return self._t("training_time")


def decode_feature(data: ByteData) -> FitnessMachineFeature:
    check_size(_NAME, data, 8, "machine and target feature fields")
    return FitnessMachineFeature(
        int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")
    )


def encode_feature(feature: FitnessMachineFeature) -> bytes:
    machine = to_int(f"{_NAME}.machine", feature.machine, 1, 0, 0xFFFFFFFF)
    target = to_int(f"{_NAME}.target", feature.target, 1, 0, 0xFFFFFFFF)
    return u32(machine) + u32(target)
