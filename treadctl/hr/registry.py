"""Which lane a heart-rate strap is bound to: one registry per process (the daemon's lanes,
or one ``treadctl run``), refusing a strap that another lane already has
(docs/heart-rate.md).

A chest strap is on one person: two lanes reading the same strap would govern and guard
two belts with one heart. So::

    from treadctl.hr.registry import STRAPS, StrapInUse
    u = STRAPS.bind("ble://AA:BB:CC:DD:EE:FF", "lane-1")  # -> HRURL (parsed, validated)
    STRAPS.bind("ble://aa:bb:cc:dd:ee:ff", "lane-2")      # StrapInUse: bound to 'lane-1'
    STRAPS.release("ble://AA:BB:CC:DD:EE:FF", "lane-1")   # at the session's / lane's end
    STRAPS.release_lane("lane-1")                         # everything lane-1 holds

Where to call it: the daemon binds a lane's ``hr = "..."`` at start-up (two lanes with the
same strap in the config is a config error: :func:`check_strap_config` reports it before
anything runs); ``cmd/start``'s ``hr_device`` binds for the session and releases at its end
(refused with the lane that holds it); ``treadctl run --hr URL`` binds for the run.

Identity: a ``ble://`` address is compared upper-case (``aa:..`` and ``AA:..`` are one
strap); ``ble://name=PREFIX`` by its prefix (two lanes asking for "the strap named
Polar H10..." would race for the same device). An address and a name prefix may name the
same device; that cannot be known before connecting and is not refused here.
``sim-hr://`` straps are simulated per lane (each follows its own lane's belt): never in
conflict, never registered.

Binding the same strap again to the lane that holds it is a no-op (idempotent); releasing
a strap the lane does not hold is a no-op. Thread-safe (one lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from treadctl.hr.strap import HRURL, HRURLError, parse_hr_url


class StrapInUse(HRURLError):
    """The strap is bound to another lane (one line naming the strap and the lane)."""

    def __init__(self, url: str, holder: str, lane: str) -> None:
        self.url = url
        self.holder = holder
        self.lane = lane
        super().__init__(f"heart-rate strap {url} is already bound to lane {holder!r}; "
                         f"lane {lane!r} cannot use it (release it there first)")


def strap_key(u: HRURL) -> str | None:
    """The identity two lanes must not share (None: a simulated strap, never shared)."""
    if u.scheme != "ble":
        return None
    if u.ble_address is not None:
        return f"ble://{u.ble_address.upper()}"
    return f"ble://name={u.ble_name_prefix}"


class StrapRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[str, str] = {}  # strap key -> lane
        self._urls: dict[str, str] = {}  # strap key -> the URL as first bound

    def bind(self, url: str, lane: str) -> HRURL:
        """Parse and validate ``url`` (:class:`HRURLError`) and bind it to ``lane``
        (:class:`StrapInUse` when another lane holds it). Returns the parsed URL."""
        u = parse_hr_url(url)
        key = strap_key(u)
        if key is None:
            return u
        with self._lock:
            holder = self._lanes.get(key)
            if holder is not None and holder != lane:
                raise StrapInUse(self._urls[key], holder, lane)
            self._lanes[key] = lane
            self._urls.setdefault(key, u.url)
        return u

    def release(self, url: str, lane: str) -> bool:
        """Release ``url`` if ``lane`` holds it; True when something was released. A URL
        that does not parse holds nothing (False)."""
        try:
            key = strap_key(parse_hr_url(url))
        except HRURLError:
            return False
        if key is None:
            return False
        with self._lock:
            if self._lanes.get(key) != lane:
                return False
            del self._lanes[key]
            self._urls.pop(key, None)
            return True

    def release_lane(self, lane: str) -> list[str]:
        """Release everything ``lane`` holds; returns the released strap URLs."""
        with self._lock:
            keys = [k for k, v in self._lanes.items() if v == lane]
            out = [self._urls.pop(k, k) for k in keys]
            for k in keys:
                del self._lanes[k]
        return out

    def holder(self, url: str) -> str | None:
        """The lane ``url`` is bound to, or None."""
        key = strap_key(parse_hr_url(url))
        if key is None:
            return None
        with self._lock:
            return self._lanes.get(key)

    def bound(self) -> dict[str, str]:
        """Strap URL (as first bound) -> lane, a copy."""
        with self._lock:
            return {self._urls[k]: lane for k, lane in self._lanes.items()}


#: The process-wide registry (the daemon's lanes and ``treadctl run`` use this one).
STRAPS = StrapRegistry()


def check_strap_config(lanes: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
                       ) -> list[str]:
    """Problems with a daemon config's per-lane straps (lane id -> ``hr`` URL or None),
    one line each, in lane order: a URL that does not parse, a strap given to two lanes.
    Empty when the config is fine. Binds nothing."""
    items = list(lanes.items()) if isinstance(lanes, Mapping) else list(lanes)
    problems: list[str] = []
    seen: dict[str, str] = {}
    for lane, url in items:
        if url is None or url == "":
            continue
        try:
            key = strap_key(parse_hr_url(url))
        except HRURLError as exc:
            problems.append(f"lane {lane!r}: hr: {exc}")
            continue
        if key is None:
            continue
        if key in seen:
            problems.append(f"lane {lane!r}: hr: strap {url} is already given to lane "
                            f"{seen[key]!r}; one strap is on one person")
        else:
            seen[key] = lane
    return problems
