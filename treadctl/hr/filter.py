"""The heart-rate plausibility filter and the HR-ceiling decision (docs/heart-rate.md).

Pure: no I/O and no clock of its own; every call passes ``now`` (seconds on the caller's
clock, the controller's ``clock.now()``). One :class:`HRFilter` per lane and source.

Each reading (a strap's decoded 0x2A37 value, or the treadmill's own HR field) goes through,
in this order:

1. **contact** - a strap that reports "no skin contact", or a value of 0 (what straps and
   treadmill grips send with nobody on them), carries no heart rate: quality ``lost``;
2. **physiological bounds** - below ``min_bpm`` or above ``max_bpm`` (default 30..220, or the
   age-predicted maximum + ``max_margin_bpm``): rejected, ``unreliable``;
3. **rate of change** - against the last accepted reading: at most ``jump_bpm`` plus
   ``rate_bpm_per_s`` per second since it. A spike is rejected. Readings that stay outside
   that window but agree with each other for ``relock_s`` are a new level ("relock"): the
   filter follows it, but it stays ``unreliable`` (``discontinuity``: a heart does not jump
   like that, a strap moved to somebody else does) until the heart rate is seen following
   the workload (check 5) or the stream starts anew after a loss; it never counts as a
   plausible rise for the ceiling (below);
4. **stuck value** - the very same value for ``stuck_s`` while the workload as the heart
   sees it (lagged by ``follow_lag_s``: a short stop barely moves it) moved by
   ``stuck_workload_met`` or more (at least ``stuck_after_move_s`` ago), or for
   ``stuck_flat_s`` whatever the workload: ``unreliable`` until the value changes;
5. **following the workload** - when the lane's workload (METs from speed, grade and
   direction, :mod:`treadctl.hr.workload`) moves by ``follow_met`` or more within
   ``follow_window_s``, the heart rate (smoothed over about three readings) must move the
   same way by ``follow_bpm`` within ``follow_s`` from then on, when the move also leads
   the workload as the heart sees it (lagged by ``follow_lag_s``) by half of ``follow_met``
   that way (a walk on after a harder bout and a short stop is a rise, but the heart still
   comes down); a workload that first goes back by half of ``follow_met``, as a stop
   followed by walking on, drops the check. One
   that does not (a strap on somebody else, a stuck or fake value) is ``unreliable`` until
   it follows again.

No reading for ``dropout_s`` is ``lost``. The result is a :class:`HRReading`: the filtered HR
(only while ``good``), the quality (``good`` | ``unreliable`` | ``lost``), the reason, and the
warning name ``hr-unreliable`` whenever the quality is not ``good``.

The HR-ceiling interlock asks :class:`CeilingMonitor` (the seam for the control core): it
trips only on ``good`` readings above the ceiling for the hold time *that rose there
plausibly* (the same continuous run of rate-checked readings was at or below the ceiling
before). Anything else above the ceiling - a fake constant 199, a spike, a relocked jump - is
a ``warn`` decision (``hr-unreliable``), never an e-stop.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from treadctl.hr.codec import HeartRateMeasurement
from treadctl.hr.workload import tanaka_hr_max

Quality = Literal["good", "unreliable", "lost"]
QUALITIES: tuple[Quality, ...] = ("good", "unreliable", "lost")
#: The warning the controller shows whenever the quality is not ``good`` (docs/heart-rate.md).
HR_UNRELIABLE = "hr-unreliable"


@dataclass(frozen=True)
class HRFilterConfig:
    min_bpm: float = 30.0
    max_bpm: float = 220.0
    #: With an age, the upper bound is min(max_bpm, Tanaka HRmax + this margin).
    max_margin_bpm: float = 15.0
    jump_bpm: float = 12.0
    rate_bpm_per_s: float = 3.0
    relock_s: float = 10.0
    relock_spread_bpm: float = 8.0
    stuck_s: float = 15.0
    stuck_workload_met: float = 0.25
    #: ... and the workload moved at least this long ago (0: at once). A heart that read
    #: flat at a steady walk needs a moment to turn after a stop or a speed step.
    stuck_after_move_s: float = 0.0
    stuck_flat_s: float = 60.0
    follow_met: float = 1.0
    follow_bpm: float = 5.0
    follow_s: float = 90.0
    #: Only a move of ``follow_met`` within this window arms the check (a slow drift, as a
    #: governor makes it while it holds a zone, is followed by the heart without a 5 bpm
    #: step and must not count as "not following").
    follow_window_s: float = 60.0
    #: The heart's lag behind the workload (first-order, seconds): a move arms the check
    #: only when it also leads the lagged workload by half of ``follow_met`` that way.
    follow_lag_s: float = 30.0
    dropout_s: float = 5.0

    @classmethod
    def for_age(cls, age_years: float | None, **overrides: float) -> HRFilterConfig:
        cfg = cls(**overrides)
        if age_years is None:
            return cfg
        upper = min(cfg.max_bpm, tanaka_hr_max(age_years) + cfg.max_margin_bpm)
        return HRFilterConfig(**{**cfg.__dict__, "max_bpm": upper})


@dataclass(frozen=True)
class HRReading:
    """What the filter says after one reading or tick."""

    t: float
    quality: Quality
    bpm: int | None  # the filtered HR, only while good
    raw_bpm: int | None  # what the source last sent (None: nothing yet / no contact)
    reason: str | None = None  # why not good: dropout, no-contact, out-of-range, ...
    #: True when the HR reached its value through rate-checked readings from at or below
    #: ``rise_floor_bpm`` (see CeilingMonitor).
    rise_floor_bpm: float | None = None

    @property
    def warning(self) -> str | None:
        return None if self.quality == "good" else HR_UNRELIABLE


@dataclass
class _Follow:
    """An armed workload-following check."""

    sign: int
    hr_ref: float
    deadline: float
    w_from: float = math.nan  # the workload before the move


@dataclass
class HRFilter:
    cfg: HRFilterConfig = field(default_factory=HRFilterConfig)

    def __post_init__(self) -> None:
        self._last_rx: float | None = None
        self._last_raw: int | None = None
        self._acc_t: float | None = None  # last accepted reading
        self._acc_bpm: float | None = None
        self._ema: float | None = None
        self._run_min: float | None = None  # min accepted bpm of the current continuous run
        self._pending: deque[tuple[float, int]] = deque()  # rejected by rate, for relock
        self._same_since: float | None = None  # raw value unchanged since
        self._wl: deque[tuple[float, float]] = deque()  # (t, workload) while unchanged
        # (t, workload) over the last follow_window_s: what the follow check measures a
        # workload move from.
        self._wl_hist: deque[tuple[float, float]] = deque()
        # Its running maximum and minimum (monotonic deques of (entry number, workload);
        # entry numbers count appends, _hist_first is the number of _wl_hist[0]): a move of
        # follow_met is looked for in the history only when one is there, so a tick costs
        # the same with 600 entries as with one.
        self._hist_hi: deque[tuple[int, float]] = deque()
        self._hist_lo: deque[tuple[int, float]] = deque()
        self._hist_first = 0
        self._hist_next = 0
        # The workload as a heart sees it (first-order lag, follow_lag_s): what decides
        # which way a heart must go after a move.
        self._wl_lag: tuple[float, float] | None = None  # (t, lagged workload)
        self._follow: _Follow | None = None
        self._mismatch = False
        self._unconfirmed = False  # relocked after a jump, not yet seen following the workload
        self._no_contact = False
        self._reason: str | None = "no-data"
        self._quality: Quality = "lost"

    # ------------------------------------------------------------------ inputs

    def update(self, m: HeartRateMeasurement, now: float,
               workload_met: float | None = None) -> HRReading:
        """A strap notification."""
        return self.update_bpm(m.bpm, now, contact=m.in_contact, workload_met=workload_met)

    def update_bpm(self, bpm: int | None, now: float, *, contact: bool | None = None,
                   workload_met: float | None = None) -> HRReading:
        """One reading: ``bpm`` (None or 0 = no reading), ``contact`` as the source reports
        it (None = cannot tell), the lane's workload now (METs, None = unknown)."""
        cfg = self.cfg
        self._last_rx = now
        if workload_met is not None and math.isfinite(workload_met):
            self._workload(now, workload_met)
        if contact is False or not bpm:
            self._no_contact = True
            self._last_raw = None
            self._same_since = None
            return self._set(now, "lost", "no-contact")
        self._no_contact = False
        if bpm != self._last_raw:
            self._same_since = now
            self._wl.clear()
            if workload_met is not None and self._wl_lag is not None:
                self._wl.append((now, self._wl_lag[1]))
        self._last_raw = bpm
        if not cfg.min_bpm <= bpm <= cfg.max_bpm:
            return self._set(now, "unreliable", "out-of-range")
        if self._stuck(now):
            return self._set(now, "unreliable", "stuck")
        accepted = self._rate_check(bpm, now)
        if not accepted:
            return self._set(now, "unreliable", "rate-of-change")
        self._check_follow(now)
        if self._mismatch:
            return self._set(now, "unreliable", "not-following-workload")
        if self._unconfirmed:
            return self._set(now, "unreliable", "discontinuity")
        return self._set(now, "good", None)

    def tick(self, now: float, workload_met: float | None = None) -> HRReading:
        """Time passes without a reading: detects dropouts and workload mismatches."""
        if workload_met is not None and math.isfinite(workload_met):
            self._workload(now, workload_met)
        if self._last_rx is None or now - self._last_rx > self.cfg.dropout_s:
            return self._set(now, "lost", "dropout" if self._last_rx is not None else "no-data")
        if self._quality == "good":
            self._check_follow(now)
            if self._mismatch:
                return self._set(now, "unreliable", "not-following-workload")
        return self.reading(now)

    def reading(self, now: float) -> HRReading:
        good = self._quality == "good"
        return HRReading(
            now, self._quality,
            round(self._acc_bpm) if good and self._acc_bpm is not None else None,
            self._last_raw, self._reason,
            self._run_min if good else None,
        )

    # ------------------------------------------------------------------ checks

    def _set(self, now: float, quality: Quality, reason: str | None) -> HRReading:
        self._quality = quality
        self._reason = reason
        return self.reading(now)

    def _rate_check(self, bpm: int, now: float) -> bool:
        cfg = self.cfg
        if self._acc_t is None or self._acc_bpm is None or self._quality == "lost":
            self._accept(bpm, now, continuous=False)
            self._unconfirmed = False  # a new stream (first reading, after a loss)
            return True
        window = cfg.jump_bpm + cfg.rate_bpm_per_s * (now - self._acc_t)
        if abs(bpm - self._acc_bpm) <= window:
            self._accept(bpm, now, continuous=True)
            return True
        self._pending.append((now, bpm))
        while self._pending and now - self._pending[0][0] > cfg.relock_s:
            self._pending.popleft()
        first_t = self._pending[0][0]
        values = [v for _, v in self._pending]
        if (now - first_t >= cfg.relock_s * 0.9
                and max(values) - min(values) <= cfg.relock_spread_bpm):
            self._accept(bpm, now, continuous=False)  # a new level: relock, unconfirmed
            self._unconfirmed = True
            return True
        return False

    def _accept(self, bpm: int, now: float, *, continuous: bool) -> None:
        self._pending.clear()
        if not continuous or self._run_min is None:
            self._run_min = float(bpm)
            self._follow = None
            self._mismatch = False
        else:
            self._run_min = min(self._run_min, float(bpm))
        self._acc_t = now
        self._acc_bpm = float(bpm)
        # Smoothed accepted HR (EMA, ~3 readings) for the workload-following check.
        self._ema = float(bpm) if not continuous or self._ema is None else (
            self._ema + 0.3 * (bpm - self._ema))

    def _workload(self, now: float, w: float) -> None:
        cfg = self.cfg
        lag = self._wl_lag
        if lag is None:
            w_lag = w
        else:
            dt = max(0.0, now - lag[0])
            w_lag = lag[1] + (w - lag[1]) * (1.0 - math.exp(-dt / cfg.follow_lag_s))
        self._wl_lag = (now, w_lag)
        if self._wl:
            # The stuck check judges the workload as the heart sees it: a short stop and
            # walking on barely moves it, and a heart may read flat across one.
            self._wl.append((now, w_lag))
            while len(self._wl) > 2 and now - self._wl[1][0] > self.cfg.stuck_flat_s:
                self._wl.popleft()
        hist = self._wl_hist
        if not hist or abs(w - hist[-1][1]) >= 0.02 or now - hist[-1][0] >= 1.0:
            self._hist_append(now, w)
        while len(hist) > 1 and now - hist[0][0] > cfg.follow_window_s:
            self._hist_popleft()
        f = self._follow
        if f is not None:
            if f.sign * (w - f.w_from) >= cfg.follow_met / 2:
                return
            # The workload went back (a stop, then walking on): the armed check no longer
            # says which way the heart should go. Drop it; the new move arms its own.
            self._follow = None
        if not self._hist_may_move(w):
            return  # no entry is follow_met away from w (the loop below would find none)
        for _t, w_ref in hist:
            if abs(w - w_ref) >= cfg.follow_met:
                # A move of follow_met within follow_window_s: from here on the HR must
                # move that way by follow_bpm within follow_s, if the heart (which lags
                # the workload) has a reason to: after a harder bout, a short stop and a
                # gentler walk on, the workload rose but the heart still comes down.
                hr = self._ema
                sign = 1 if w > w_ref else -1
                agrees = sign * (w - w_lag) >= cfg.follow_met / 2
                if hr is not None and self._quality != "lost" and agrees:
                    self._follow = _Follow(sign, hr, now + cfg.follow_s, w_ref)
                self._hist_clear()
                self._hist_append(now, w)
                return

    def _hist_may_move(self, w: float) -> bool:
        """Whether an entry of the history may be ``follow_met`` or more away from ``w``
        (False: certainly none is), from its running maximum and minimum."""
        fm = self.cfg.follow_met
        return self._hist_hi[0][1] - w >= fm or w - self._hist_lo[0][1] >= fm

    def _hist_append(self, now: float, w: float) -> None:
        self._wl_hist.append((now, w))
        n = self._hist_next
        self._hist_next = n + 1
        hi, lo = self._hist_hi, self._hist_lo
        while hi and hi[-1][1] <= w:
            hi.pop()
        hi.append((n, w))
        while lo and lo[-1][1] >= w:
            lo.pop()
        lo.append((n, w))

    def _hist_popleft(self) -> None:
        self._wl_hist.popleft()
        first = self._hist_first = self._hist_first + 1
        if self._hist_hi[0][0] < first:
            self._hist_hi.popleft()
        if self._hist_lo[0][0] < first:
            self._hist_lo.popleft()

    def _hist_clear(self) -> None:
        self._wl_hist.clear()
        self._hist_hi.clear()
        self._hist_lo.clear()
        self._hist_first = self._hist_next

    def _check_follow(self, now: float) -> None:
        f = self._follow
        if f is None or self._ema is None:
            return
        if f.sign * (self._ema - f.hr_ref) >= self.cfg.follow_bpm:
            self._follow = None
            self._mismatch = False
            self._unconfirmed = False
        elif now >= f.deadline:
            self._follow = None
            self._mismatch = True

    def _stuck(self, now: float) -> bool:
        if self._same_since is None:
            return False
        held = now - self._same_since
        if held >= self.cfg.stuck_flat_s:
            return True
        if held < self.cfg.stuck_s:
            return False
        moved = self._workload_moved_at()
        return moved is not None and now - moved >= self.cfg.stuck_after_move_s

    def _workload_moved_at(self) -> float | None:
        """When the workload had first moved by ``stuck_workload_met`` (its range since
        the current value began); None: it has not."""
        lo = hi = None
        for t, w in self._wl:
            lo = w if lo is None else min(lo, w)
            hi = w if hi is None else max(hi, w)
            if hi - lo >= self.cfg.stuck_workload_met:
                return t
        return None


# --------------------------------------------------------------------------- ceiling

Action = Literal["none", "warn", "trip"]


@dataclass(frozen=True)
class CeilingDecision:
    action: Action
    message: str | None = None


@dataclass
class CeilingMonitor:
    """The HR-ceiling interlock decision, for the control core to call once per reading.

    ``trip`` (latch the ``heart-rate`` interlock): the filtered HR has been above
    ``ceiling_bpm`` for ``hold_s`` on ``good`` readings only, and that run of readings rose
    there plausibly (it was at or below the ceiling before, through rate-checked readings).
    ``warn`` (show ``hr-unreliable``, move nothing): the quality is not ``good``, or the HR
    is above the ceiling without a plausible rise. ``none`` otherwise.
    """

    hold_s: float = 3.0
    _above_since: float | None = None

    def update(self, r: HRReading, ceiling_bpm: float) -> CeilingDecision:
        if r.quality != "good" or r.bpm is None:
            self._above_since = None
            if r.quality == "lost" and r.reason == "no-data":
                return CeilingDecision("none")
            return CeilingDecision("warn", f"{HR_UNRELIABLE}: {r.reason} "
                                           f"(raw {r.raw_bpm} bpm)")
        if r.bpm <= ceiling_bpm:
            self._above_since = None
            return CeilingDecision("none")
        if r.rise_floor_bpm is None or r.rise_floor_bpm > ceiling_bpm:
            self._above_since = None
            return CeilingDecision(
                "warn", f"{HR_UNRELIABLE}: {r.bpm} bpm above the {ceiling_bpm:.0f} bpm ceiling "
                        "without a plausible rise to it; not trusted for the interlock")
        since = r.t if self._above_since is None else self._above_since
        self._above_since = since
        if r.t - since >= self.hold_s:
            return CeilingDecision("trip", f"heart rate {r.bpm} bpm above {ceiling_bpm:.0f}")
        return CeilingDecision("none")
