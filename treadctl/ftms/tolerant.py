"""Reading what real treadmills send: the tolerant decoders, split records, deviation counts.

:class:`TelemetryReader` is what a controller puts between the notifications and its
safety logic. It decodes Treadmill Data and Machine Status with ``strict=False``, merges
the notifications of a split ("More Data") record into one sample, and counts every
deviation it sees, calling ``on_new`` once per deviation name (a log line per connection,
not per frame). Still sans-I/O: bytes in, values and names out. See docs/ftms.md.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final

from treadctl.ftms.errors import ByteData
from treadctl.ftms.machine_status import MachineStatus, decode_machine_status
from treadctl.ftms.treadmill_data import (
    DEFAULT_PACE_FORMAT,
    PaceFormat,
    TreadmillData,
    decode_treadmill_data,
)

#: Every name a reader reports, with what it means. The first three are deviations from
#: FTMS 1.0 (the strict decoders reject them); the last two are FTMS 1.0 features that
#: need care (a split record is one sample; a sentinel is not a value) and are reported
#: the same way so an operator learns what the machine sends.
DEVIATIONS: Final[dict[str, str]] = {
    "step-count": "Treadmill Data flag bit 13 with a uint24 step count (not in FTMS 1.0)",
    "short-record": "Treadmill Data records shorter than their flags announce",
    "status-trailing-bytes": "Machine Status notifications with bytes after their parameters",
    "split-records": "Treadmill Data split over several notifications (More Data)",
    "not-available": "'data not available' values in Treadmill Data fields",
}

_META: Final = frozenset({"more_data", "deviations", "missing", "not_available"})
_VALUE_FIELDS: Final = tuple(
    f.name for f in dataclasses.fields(TreadmillData) if f.name not in _META
)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


class TreadmillDataAssembler:
    """Merges the notifications of a split Treadmill Data record into one sample.

    FTMS sends a long record as several notifications: those with the More Data flag set
    carry no speed, the last one (flag clear) carries it. :meth:`feed` holds the parts and
    returns the merged sample when the part with the speed arrives (its own values win),
    ``None`` for a part that is held. A record that is not split passes through unchanged.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] = {}
        self._parts: list[TreadmillData] = []

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def feed(self, td: TreadmillData) -> TreadmillData | None:
        if td.more_data:
            for name in _VALUE_FIELDS:
                value = getattr(td, name)
                if value is not None:
                    self._pending[name] = value
            self._parts.append(td)
            return None
        if not self._parts:
            return td
        parts = [*self._parts, td]
        fill = {k: v for k, v in self._pending.items() if getattr(td, k) is None}
        self._pending = {}
        self._parts = []
        merged = dataclasses.replace(td, **fill)
        deviations = _unique(d for p in parts for d in p.deviations or ())
        missing = _unique(
            m for p in parts for m in p.missing or () if getattr(merged, m) is None
        )
        not_available = _unique(
            n for p in parts for n in p.not_available or () if getattr(merged, n) is None
        )
        object.__setattr__(merged, "deviations", deviations or None)
        object.__setattr__(merged, "missing", missing or None)
        object.__setattr__(merged, "not_available", not_available or None)
        return merged


class TelemetryReader:
    """Tolerant decoding + split-record merging + deviation counting for one connection.

    ``deviations`` counts, per name in :data:`DEVIATIONS`, the notifications that used it;
    ``on_new(name)`` is called the first time each name is seen. Decoding errors propagate
    (:class:`~treadctl.ftms.FTMSDecodeError`): what even the tolerant decoder cannot read
    is never acted on.
    """

    def __init__(
        self,
        *,
        pace_format: PaceFormat = DEFAULT_PACE_FORMAT,
        signed_speed: bool = False,
        on_new: Callable[[str], None] | None = None,
    ) -> None:
        self.pace_format: PaceFormat = pace_format
        self.signed_speed = signed_speed
        self.on_new: Callable[[str], None] = on_new or (lambda name: None)
        self.deviations: Counter[str] = Counter()
        self._assembler = TreadmillDataAssembler()

    def _note(self, name: str) -> None:
        first = name not in self.deviations
        self.deviations[name] += 1
        if first:
            self.on_new(name)

    def treadmill_data(self, value: ByteData) -> TreadmillData | None:
        """The sample in this notification, or None while a split record is incomplete."""
        td = decode_treadmill_data(
            value, pace_format=self.pace_format, signed_speed=self.signed_speed, strict=False
        )
        if td.deviations:
            for name in td.deviations:
                self._note(name)
        if td.not_available:
            self._note("not-available")
        if td.more_data:
            self._note("split-records")
        return self._assembler.feed(td)

    def machine_status(self, value: ByteData) -> MachineStatus:
        status = decode_machine_status(value, signed_speed=self.signed_speed, strict=False)
        for name in getattr(status, "deviations", None) or ():
            self._note(name)
        return status
