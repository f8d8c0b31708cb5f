"""A session as a picture: signed belt speed, incline, segments and safety events.

Top panel: speed with reverse below zero (target dashed, measured solid), each program
segment shaded (forward blue, reverse orange) and labelled; e-stops, interlocks and faults
as red vertical lines with their reason. Middle panel, when the session has a heart rate or
a heart-rate-governed segment: the trusted heart rate (:attr:`Sample.hr_trusted`; the line
breaks where there is none), each governed segment's ``hr_zone_bpm`` as a band, and the
stretches where the heart rate was unreliable or lost hatched grey, and the HR-loss rule's
``hr-loss-walk`` / ``hr-loss-stop`` events as amber dashed lines. Bottom panel: incline
(target dashed, measured solid). Rendered with matplotlib's Agg backend (no display
needed), 1600x900 by default.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from treadctl.store.model import ALARM_EVENT_TYPES, Event, Sample, SessionInfo
from treadctl.store.segments import Span, program_segments, segment_spans
from treadctl.types import Direction

FORWARD_COLOR = "#2b6cb0"
REVERSE_COLOR = "#dd6b20"
FORWARD_SHADE = "#bee3f8"
REVERSE_SHADE = "#feebc8"
ALARM_COLOR = "#c53030"
HR_COLOR = "#97266d"
ZONE_SHADE = "#fbb6ce"
HR_BAD_COLOR = "#718096"
HR_LOSS_COLOR = "#b7791f"


def zone_bands(spans: Sequence[Span], program: Any) -> list[tuple[float, float, float, float]]:
    """``(t_start, t_end, low, high)`` for every span of a segment with ``hr_zone_bpm``."""
    segs = program_segments(program)
    out: list[tuple[float, float, float, float]] = []
    for span in spans:
        if span.index is None or not 0 <= span.index < len(segs):
            continue
        zone = segs[span.index].get("hr_zone_bpm")
        if (isinstance(zone, (list, tuple)) and len(zone) == 2
                and all(isinstance(v, (int, float)) for v in zone)):
            out.append((span.t_start_s, span.t_end_s, float(zone[0]), float(zone[1])))
    return out


def bad_hr_runs(samples: Sequence[Sample]) -> list[tuple[float, float]]:
    """Time ranges where the recorded HR quality was ``unreliable`` or ``lost``."""
    runs: list[tuple[float, float]] = []
    start: float | None = None
    for i, s in enumerate(samples):
        bad = s.hr_quality in ("unreliable", "lost")
        if bad and start is None:
            start = s.t_s
        if not bad and start is not None:
            runs.append((start, s.t_s))
            start = None
        if bad and i == len(samples) - 1 and start is not None:
            runs.append((start, s.t_s))
    return runs


def _fmt_clock(seconds: float, _pos: Any = None) -> str:
    s = round(seconds)
    if s < 0:
        return ""
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _tick_step_s(t_end_s: float) -> float:
    """Whole-minute-friendly tick spacing giving about 8-16 ticks."""
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if t_end_s / step <= 16:
            return float(step)
    return 14400.0


def _alarm_text(e: Event) -> str:
    data = e.data or {}
    what = str(data.get("interlock") or data.get("fault") or e.type).replace("_", " ")
    reason = str(data.get("reason") or "")
    text = "E-STOP" if e.type == "estop" else what
    if reason and reason != what:
        text += f": {reason}"
    return text if len(text) <= 48 else text[:47] + "…"


def speed_runs(samples: Sequence[Sample]) -> list[tuple[Direction, int, int]]:
    """The measured-speed curve cut into pieces of one colour: ``(direction, first, last)``,
    a polyline through samples ``first..last`` (inclusive; a piece shares its last sample
    with the next one, so the curve has no gaps).

    The colour is the belt's recorded direction, never the sign of the plotted value: a
    belt standing at 0 km/h is forward or reverse according to what it was told. The line
    between two samples takes the direction of the faster one (the belt moved that way in
    between); between two standing samples, the earlier one's.
    """
    if not samples:
        return []
    if len(samples) == 1:
        return [(samples[0].direction, 0, 0)]
    runs: list[tuple[Direction, int, int]] = []
    for i in range(len(samples) - 1):
        a, b = samples[i], samples[i + 1]
        direction = b.direction if b.speed_kmh > a.speed_kmh else a.direction
        if runs and runs[-1][0] == direction:
            runs[-1] = (direction, runs[-1][1], i + 1)
        else:
            runs.append((direction, i, i + 1))
    return runs


def plot_session(
    session: SessionInfo,
    samples: Sequence[Sample],
    events: Sequence[Event],
    out: str | os.PathLike[str],
    *,
    width_px: int = 1600,
    height_px: int = 900,
) -> None:
    """Write a PNG of the session to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

    dpi = 100
    spans = segment_spans(samples, session.program)
    bands = zone_bands(spans, session.program)
    hr = [s.hr_trusted for s in samples]
    with_hr = bands or any(v is not None for v in hr)
    fig, axes = plt.subplots(
        3 if with_hr else 2,
        1,
        figsize=(width_px / dpi, height_px / dpi),
        dpi=dpi,
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1.6, 1] if with_hr else [3, 1], "hspace": 0.08},
    )
    ax, ax_inc = axes[0], axes[-1]
    ax_hr = axes[1] if with_hr else None
    try:
        t = [s.t_s for s in samples]
        t_end = max([*t, *(e.t_s for e in events), 1.0])
        speeds = [s.signed_speed_kmh for s in samples]
        targets = [s.signed_target_speed_kmh for s in samples]
        top = max([1.0, *speeds, *targets])
        bottom = min([0.0, *speeds, *targets])
        pad = 0.12 * (top - bottom)
        y_max = top + pad * 2.2  # room for segment labels above the curves
        y_min = bottom - pad if bottom < 0 else -pad * 0.5

        for k, span in enumerate(spans):
            rev = span.direction == Direction.REVERSE
            for a in axes:
                a.axvspan(
                    span.t_start_s,
                    span.t_end_s,
                    color=REVERSE_SHADE if rev else FORWARD_SHADE,
                    alpha=0.55 if k % 2 == 0 else 0.8,
                    lw=0,
                    zorder=0,
                )
            mid = (span.t_start_s + span.t_end_s) / 2
            head = f"{span.index + 1}" if span.index is not None else "manual"
            arrow = "◀ reverse" if rev else "forward ▶"
            zone = next(((lo, hi) for t0, _t1, lo, hi in bands if t0 == span.t_start_s), None)
            if zone is not None:  # governed: the speed is the governor's, the zone is the aim
                label = f"{head}  {arrow}\nHR zone {zone[0]:.0f}-{zone[1]:.0f} bpm"
            elif span.target_speed_kmh > 0:
                label = f"{head}  {arrow}\n{span.target_speed_kmh:.1f} km/h"
            else:
                label = f"{head}  standstill"  # a belt told to stand has no direction to show
            if span.target_incline_pct:
                label += f" · {span.target_incline_pct:+.0f} %"
            frac = span.duration_s / t_end
            ax.text(
                mid,
                y_max - pad * 0.25,
                label if frac > 0.06 else head,
                ha="center",
                va="top",
                fontsize=11 if frac > 0.1 else 9,
                color=REVERSE_COLOR if rev else FORWARD_COLOR,
                fontweight="bold",
                clip_on=True,
            )

        ax.axhline(0, color="#4a5568", lw=1.0, zorder=1)
        ax.plot(t, targets, color="#2d3748", lw=1.6, ls=(0, (5, 3)), zorder=3)
        # Measured speed coloured by the belt's direction (a standing belt included).
        for direction, first, last in speed_runs(samples):
            ax.plot(
                t[first : last + 1],
                speeds[first : last + 1],
                color=REVERSE_COLOR if direction == Direction.REVERSE else FORWARD_COLOR,
                lw=2.4,
                solid_capstyle="butt",
                zorder=4,
                marker="o" if first == last else None,
            )
        ax.set_ylim(y_min, y_max)
        ax.set_ylabel("belt speed (km/h)\n← reverse  |  forward →", fontsize=12)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.grid(True, axis="y", color="#cbd5e0", lw=0.6, zorder=0)
        ax.tick_params(labelsize=11)

        hr_sources = sorted({s.hr_source for s in samples
                             if s.hr_source and s.hr_trusted is not None})
        bad_runs = bad_hr_runs(samples)
        hr_loss = [e for e in events if e.type in ("hr-loss-walk", "hr-loss-stop")]
        if ax_hr is not None:
            for t0, t1, low, high in bands:
                ax_hr.fill_between([t0, t1], [low, low], [high, high], color=ZONE_SHADE,
                                   alpha=0.75, lw=0, zorder=1)
                ax_hr.text((t0 + t1) / 2, high, f"zone {low:.0f}-{high:.0f} bpm", ha="center",
                           va="bottom", fontsize=10, color=HR_COLOR, clip_on=True)
            for t0, t1 in bad_runs:
                ax_hr.axvspan(t0, t1, facecolor="none", edgecolor=HR_BAD_COLOR, hatch="///",
                              lw=0, zorder=2)
            ax_hr.plot(t, [math.nan if v is None else v for v in hr], color=HR_COLOR, lw=2.0,
                       zorder=4)
            # The HR-loss rule's steps (docs/heart-rate.md): walking, then a controlled stop.
            for e in hr_loss:
                walk = e.type == "hr-loss-walk"
                for a in axes:
                    a.axvline(e.t_s, color=HR_LOSS_COLOR, lw=1.6, ls=(0, (4, 2)), zorder=5)
                ax_hr.annotate("HR lost: walking" if walk else "HR lost: controlled stop",
                               xy=(e.t_s, 0.96), xycoords=ax_hr.get_xaxis_transform(),
                               xytext=(4, 0), textcoords="offset points", ha="left",
                               va="top", fontsize=10, color=HR_LOSS_COLOR,
                               fontweight="bold", zorder=6,
                               bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                                     "ec": "none", "alpha": 0.85})
            values = [v for v in hr if v is not None]
            lo_hr = min([*values, *(b[2] for b in bands)], default=60.0)
            hi_hr = max([*values, *(b[3] for b in bands)], default=120.0)
            span_hr = max(hi_hr - lo_hr, 10.0)
            ax_hr.set_ylim(lo_hr - 0.15 * span_hr, hi_hr + 0.25 * span_hr)
            ax_hr.set_ylabel("heart rate (bpm)", fontsize=12)
            ax_hr.yaxis.set_major_locator(MaxNLocator(5, integer=True))
            ax_hr.grid(True, axis="y", color="#cbd5e0", lw=0.6, zorder=0)
            ax_hr.tick_params(labelsize=11)

        incl = [s.incline_pct for s in samples]
        tincl = [s.target_incline_pct for s in samples]
        ax_inc.plot(t, tincl, color="#2d3748", lw=1.4, ls=(0, (5, 3)), zorder=3)
        ax_inc.plot(t, incl, color="#2f855a", lw=2.2, zorder=4)
        lo = min([0.0, *incl, *tincl])
        hi = max([1.0, *incl, *tincl])
        ax_inc.set_ylim(lo - 0.15 * (hi - lo), hi + 0.25 * (hi - lo))
        ax_inc.set_ylabel("incline (%)", fontsize=12)
        ax_inc.yaxis.set_major_locator(MaxNLocator(4))
        ax_inc.grid(True, axis="y", color="#cbd5e0", lw=0.6, zorder=0)
        alarms = [e for e in events if e.type in ALARM_EVENT_TYPES]
        # A recording that ends at its e-stop would hide the red line in the frame's edge.
        at_end = any(e.t_s >= 0.99 * t_end for e in alarms)
        ax_inc.set_xlim(0, t_end * 1.02 if at_end else t_end)
        ax_inc.xaxis.set_major_formatter(FuncFormatter(_fmt_clock))
        ax_inc.xaxis.set_major_locator(MultipleLocator(_tick_step_s(t_end)))
        ax_inc.set_xlabel("session time (min:s)", fontsize=12)
        ax_inc.tick_params(labelsize=11)

        # Labels go between the zero line and the curves of the larger half of the speed
        # panel (the band under the plateaus is empty), in axes-fraction rows;
        # alarms close together in time step down a row so their labels never overlap.
        zero = (0.0 - y_min) / (y_max - y_min)
        above = (1.0 - zero) > zero
        base = zero + (1.0 - zero) * 0.45 if above else zero * 0.75
        row = 0
        last_t = -math.inf
        for e in alarms:
            row = row + 1 if e.t_s - last_t < 0.25 * t_end else 0
            last_t = e.t_s
            for a in axes:
                a.axvline(e.t_s, color=ALARM_COLOR, lw=2.0, zorder=5)
            right = e.t_s > 0.6 * t_end  # label to the left of lines near the right edge
            text = _alarm_text(e)
            ax.annotate(
                f"{text} ⚠" if right else f"⚠ {text}",
                xy=(e.t_s, base - 0.075 * (row % 5)),
                xycoords=ax.get_xaxis_transform(),
                xytext=(-6 if right else 6, 0),
                textcoords="offset points",
                ha="right" if right else "left",
                va="center",
                fontsize=11,
                color="white",
                fontweight="bold",
                bbox={"boxstyle": "round,pad=0.3", "fc": ALARM_COLOR, "ec": "none"},
                zorder=6,
            )

        legend = [
            Line2D([], [], color=FORWARD_COLOR, lw=2.4, label="measured, forward"),
            Line2D([], [], color=REVERSE_COLOR, lw=2.4, label="measured, reverse"),
            Line2D([], [], color="#2d3748", lw=1.6, ls=(0, (5, 3)), label="target"),
            Patch(color=FORWARD_SHADE, label="forward segment"),
            Patch(color=REVERSE_SHADE, label="reverse segment"),
        ]
        if ax_hr is not None:
            src = f" ({', '.join(hr_sources)})" if hr_sources else ""
            legend.append(Line2D([], [], color=HR_COLOR, lw=2.0, label=f"heart rate{src}"))
            if bands:
                legend.append(Patch(color=ZONE_SHADE, label="HR zone"))
            if bad_runs:
                legend.append(Patch(facecolor="none", edgecolor=HR_BAD_COLOR, hatch="///",
                                    label="HR unreliable / lost"))
            if hr_loss:
                legend.append(Line2D([], [], color=HR_LOSS_COLOR, lw=1.6, ls=(0, (4, 2)),
                                     label="HR-loss rule"))
        if alarms:
            legend.append(Line2D([], [], color=ALARM_COLOR, lw=2, label="e-stop / interlock"))
        fig.legend(
            handles=legend,
            loc="lower center",
            ncol=min(len(legend), 6),
            fontsize=11,
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )

        summary = session.summary or {}
        when = session.started_at.strftime("%a %d %b %Y, %H:%M UTC")
        title = f"{session.program_name or 'manual session'} — {when} — {session.treadmill_id}"
        sub = f"{_fmt_clock(float(summary.get('duration_s') or t_end))}"
        if summary:
            sub += f" · {float(summary.get('distance_m') or 0) / 1000:.2f} km"
            if summary.get("reverse_distance_m"):
                sub += f" (reverse {float(summary['reverse_distance_m']):.0f} m)"
            if summary.get("avg_hr_bpm") is not None:
                sub += f" · avg HR {float(summary['avg_hr_bpm']):.0f} bpm"
        sub += f" · {session.outcome}"
        if session.reason:
            sub += f": {session.reason}"
        fig.suptitle(title, fontsize=16, fontweight="bold", y=0.975)
        fig.text(0.5, 0.925, sub, ha="center", fontsize=12, color="#4a5568")
        fig.subplots_adjust(left=0.07, right=0.985, top=0.9, bottom=0.12)
        fig.savefig(os.fspath(out), dpi=dpi, format="png")
    finally:
        plt.close(fig)
