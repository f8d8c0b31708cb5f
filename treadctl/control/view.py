"""The live view of ``treadctl run``: a rich panel on a terminal, JSON lines with
``--json``, plain lines otherwise (docs/cli.md). Moved out of ``cli.py``."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

from treadctl.control.snapshot import Outcome, SessionResult, Snapshot
from treadctl.programs.model import Program

#: Progress note shown while a Ctrl-C's controlled stop runs; gone from the final frame.
STOPPING_NOTE = "stopping (controlled stop)..."


class _View:
    """Live progress on a terminal (rich), JSON lines with --json, plain lines otherwise."""

    def __init__(self, as_json: bool, program: Program, *, rear_facing: bool = False) -> None:
        self.as_json = as_json
        self.program = program
        self.rear_facing = rear_facing
        # The controller's clock and session time, for the countdowns in the live view.
        self.clock: Any = None
        self.session_time: Callable[[], float] | None = None
        self._upcoming: dict[str, Any] | None = None  # the last `upcoming` not yet begun
        self._prompt: str | None = None  # what the user is asked to do now (a turn)
        self.last: Snapshot | None = None
        self._last_line_t = -math.inf
        self._last_key: tuple[Any, ...] | None = None
        self._live: Any = None
        self._notes: list[str] = []
        self._tty_attrs: list[Any] | None = None
        self._last_segment: int | None = None  # the final frame shows where it ended
        if not as_json and sys.stdout.isatty():
            from rich.live import Live

            # Rear-facing: Enter confirms a turn; its echo would shift the panel.
            self._tty_attrs = _hide_control_echo(no_echo=rear_facing)
            self._live = Live(self._render(Snapshot()), refresh_per_second=8, transient=False)
            self._live.start()

    def note(self, text: str) -> None:
        self._notes.append(text)
        if self._live is None and not self.as_json:
            print(text, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind in ("estop", "escalate"):
            detail = event.get("reason") or event.get("action")
            self.note(f"{kind}: {detail}")
        elif kind == "ftms-deviation":
            self.note(f"note: this machine sends {event['description']} (read tolerantly)")
        elif kind == "upcoming":
            self._upcoming = dict(event)
            self._plain_note(f"upcoming: {_upcoming_text(event, event['in_s'])}")
        elif kind == "turn-around":
            self._prompt = f"{event['message']}: press Enter"
            self._plain_note(f"TURN AROUND: {self._prompt}")
        elif kind in ("turn-confirmed", "finished", "estop"):
            self._prompt = None
        elif kind in HR_NOTES:
            why = event.get("reason")
            self._plain_note(f"{HR_NOTES[kind]}" + (f" ({why})" if why else ""))
            if kind != "hr-recovered":
                self.note(HR_NOTES[kind])
        if kind in ("upcoming", "turn-around", "turn-confirmed") and self.last is not None:
            self.update(self.last)  # shown now, not at the next telemetry frame

    def _plain_note(self, text: str) -> None:
        """A line of its own in the plain output, stamped like the progress lines."""
        if self._live is None and not self.as_json:
            elapsed = self.last.elapsed_s if self.last is not None else 0.0
            print(f"[{_mmss(elapsed)}] {text}", flush=True)

    def _upcoming_in_s(self, snap: Snapshot) -> float | None:
        """Seconds until the announced change begins: session time for a program's change
        (a pause holds it), the controller's clock for a turn's countdown; None: none."""
        up = self._upcoming
        if up is None:
            return None
        if up.get("at_s") is not None:
            now_s = self.session_time() if self.session_time is not None else snap.elapsed_s
            left = float(up["at_s"]) - now_s
        elif self.clock is not None:
            left = float(up["t_s"]) + float(up["in_s"]) - self.clock.now()
        else:
            left = float(up["in_s"])
        if left <= 0 or snap.latched:
            self._upcoming = None
            return None
        return left

    def _upcoming_line(self, snap: Snapshot) -> dict[str, Any] | None:
        left = self._upcoming_in_s(snap)
        if left is None or self._upcoming is None:
            return None
        up = self._upcoming
        return {
            "what": up["what"],
            "direction": up["direction"],
            "speed_kmh": up["speed_kmh"],
            "in_s": math.ceil(left - 1e-9),
        }

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        if snap.segment:
            self._last_segment = snap.segment
        upcoming = self._upcoming_line(snap)
        key = (
            snap.state,
            snap.segment,
            snap.phase,
            snap.latched,
            # A countdown: a line for every second of it.
            None if upcoming is None else tuple(upcoming.values()),
            self._prompt,
        )
        changed = key != self._last_key
        self._last_key = key
        if self._live is not None:
            self._live.update(self._render(snap))
            return
        if not changed and snap.elapsed_s - self._last_line_t < (1.0 if self.as_json else 10.0):
            return
        self._last_line_t = snap.elapsed_s
        if self.as_json:
            line = {
                "ts": _now_iso(),
                "elapsed_s": snap.elapsed_s,
                "state": snap.state.value,
                "segment": snap.segment,
                "segment_label": snap.segment_label,
                "direction": snap.direction.value,
                "target_speed_kmh": snap.target_speed_kmh,
                "speed_kmh": snap.speed_kmh,
                "incline_pct": snap.incline_pct,
                "distance_m": round(snap.distance_m, 1),
                "hr_bpm": snap.hr_bpm,
                "hr_source": snap.hr_source,
                "hr_quality": snap.hr_quality,
                "hr_zone_bpm": snap.hr_zone_bpm,
                "warnings": snap.warnings,
                "remaining_s": snap.remaining_s,
                "latched": snap.latched,
                "reason": snap.reason,
                "phase": snap.phase,
                "upcoming": upcoming,
                "prompt": self._prompt,
            }
            print(json.dumps(line), flush=True)
        else:
            print(_plain(snap, upcoming), flush=True)

    def _render(self, snap: Snapshot, final: SessionResult | None = None) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold")
        table.add_column()
        segment = snap.segment if final is None else (snap.segment or self._last_segment)
        seg = f"{segment}/{snap.segment_count}" if segment else "-"
        arrow = "◀ reverse" if snap.direction.value == "reverse" else "▶ forward"
        if self.rear_facing:
            arrow += "  (rear-facing: the belt runs forward)"
        table.add_row("program", self.program.name)
        if final is not None:
            state = final.outcome.value + (f" ({final.reason})" if final.reason else "")
        else:
            state = f"{snap.state.value}" + (f" ({snap.phase})" if snap.phase else "")
        table.add_row("state", state)
        table.add_row("segment", f"{seg}  {snap.segment_label or ''}")
        table.add_row("direction", arrow)
        table.add_row("speed", f"{snap.speed_kmh:5.1f} km/h  (target {snap.target_speed_kmh:.1f})")
        table.add_row(
            "incline", f"{snap.incline_pct:5.1f} %   (target {snap.target_incline_pct:.1f})"
        )
        table.add_row("distance", f"{snap.distance_m:7.0f} m")
        table.add_row("heart rate", _hr_text(snap))
        if final is not None:
            # The last frame rounds like the summary line, and both add up to the program.
            total_s = self.program.total_duration_s
            elapsed = _mmss(round(final.elapsed_s))
            left = _mmss(round(max(0.0, total_s - final.elapsed_s)))
            if final.outcome is Outcome.FINISHED:
                left = _mmss(0)
        else:  # live: a stopwatch, and time left rounded up (0:00 only once it is over)
            elapsed, left = _mmss(snap.elapsed_s), _left(snap.remaining_s)
        table.add_row("time", f"{elapsed} elapsed, {left} left")
        upcoming = self._upcoming_line(snap) if final is None else None
        if upcoming is not None:
            text = _upcoming_text(upcoming, upcoming["in_s"])
            table.add_row("[bold yellow]next", f"[bold yellow]{text}")
        if self._prompt is not None and final is None:
            table.add_row("[bold magenta]TURN AROUND", f"[bold magenta]{self._prompt}")
        for note in self._notes[-3:]:
            table.add_row("[yellow]note", f"[yellow]{note}")
        if snap.latched:
            table.add_row("[red]LATCHED", f"[red]{snap.reason}")
        return Panel(table, title="treadctl", border_style="red" if snap.latched else "cyan")

    def close(self, result: SessionResult | None) -> None:
        """End the live view; its last frame shows how the session ended."""
        if self._live is not None:
            if result is not None:
                # Progress notes say what is under way; the last frame says how it ended.
                self._notes = [n for n in self._notes if n != STOPPING_NOTE]
            if self.last is not None:
                self._live.update(self._render(self.last, result), refresh=True)
            self._live.stop()
            self._live = None
        _restore_tty(self._tty_attrs)
        self._tty_attrs = None

    def summary(self, result: SessionResult) -> None:
        """The one line summing up the session (one duration: the session's own)."""
        stats = dict(result.summary) if result.summary else None
        if stats is not None:
            # The store's copy ends at its last record; the session's clock is the truth.
            stats["duration_s"] = result.elapsed_s
            stats["segments_completed"] = result.segments_completed
        line = {
            "summary": True,
            "ts": _now_iso(),
            "outcome": result.outcome.value,
            "reason": result.reason,
            "session_id": result.session_id,
            "elapsed_s": result.elapsed_s,
            "distance_m": result.distance_m,
            "segments_completed": result.segments_completed,
            "segment_count": len(self.program.segments),
            "belt_stopped": result.belt_stopped,
            "stats": stats,
        }
        if self.as_json:
            print(json.dumps(line), flush=True)
            return
        from treadctl.store.summary import format_duration

        why = f" ({result.reason})" if result.reason else ""
        parts = [
            f"session {result.session_id}: {result.outcome.value}{why}",
            format_duration(result.elapsed_s),
        ]
        if stats is not None:
            dist = _distance(float(stats.get("distance_m") or 0.0))
            rev_m = float(stats.get("reverse_distance_m") or 0.0)
            rev_s = float(stats.get("reverse_time_s") or 0.0)
            if rev_m > 0 or rev_s > 0:
                dist += f" (reverse {_distance(rev_m)} in {format_duration(rev_s)})"
            parts.append(dist)
            speed = f"max {float(stats.get('max_speed_kmh') or 0.0):.1f} km/h"
            if float(stats.get("max_reverse_speed_kmh") or 0.0) > 0:
                speed += f", reverse {float(stats['max_reverse_speed_kmh']):.1f} km/h"
            parts.append(speed)
            if stats.get("avg_hr_bpm") is not None:
                parts.append(
                    f"HR avg {float(stats['avg_hr_bpm']):.0f} / max {stats.get('max_hr_bpm')} bpm"
                )
        else:
            parts.append(_distance(result.distance_m))
        parts.append(f"{result.segments_completed}/{len(self.program.segments)} segments")
        parts.append("belt stopped" if result.belt_stopped else "belt NOT confirmed stopped")
        print(" · ".join(parts), flush=True)


def _hide_control_echo(*, no_echo: bool = False) -> list[Any] | None:
    """The terminal would echo Ctrl-C as '^C' into the live view and shift it: turn that
    echo off while the view runs (restored on close)."""
    try:
        import termios

        fd = sys.stdin.fileno()
        attrs = termios.tcgetattr(fd)
        quiet = list(attrs)
        quiet[3] &= ~termios.ECHOCTL
        if no_echo:
            quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        return attrs
    except (ImportError, OSError, ValueError, AttributeError):
        return None  # not a terminal on stdin, or no termios: nothing to hide


def _restore_tty(attrs: list[Any] | None) -> None:
    if attrs is None:
        return
    try:
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, attrs)
    except (ImportError, OSError, ValueError):
        pass


def _upcoming_text(up: dict[str, Any], in_s: float) -> str:
    """'direction change: reverse 3.0 km/h in 5 s' (the live view's countdown)."""
    what = {"direction-change": "direction change", "speed-increase": "speed up",
            "start": "belt starts"}.get(str(up["what"]), str(up["what"]))
    return f"{what}: {up['direction']} {float(up['speed_kmh']):.1f} km/h in {in_s:.0f} s"


def _plain(snap: Snapshot, upcoming: dict[str, Any] | None = None) -> str:
    seg = f"{snap.segment}/{snap.segment_count}" if snap.segment else "-"
    phase = f" ({snap.phase})" if snap.phase else ""
    nxt = f" next: {_upcoming_text(upcoming, upcoming['in_s'])}" if upcoming else ""
    return (
        f"[{_mmss(snap.elapsed_s)}] {snap.state.value}{phase} seg {seg} {snap.direction.value} "
        f"{snap.speed_kmh:.1f}/{snap.target_speed_kmh:.1f} km/h incline {snap.incline_pct:.1f}% "
        f"left {_left(snap.remaining_s)} HR {_hr_text(snap)}{nxt}"
        + (f" LATCHED: {snap.reason}" if snap.latched else "")
    )


#: Heart-rate events the view says in words (docs/heart-rate.md).
HR_NOTES = {
    "hr-unreliable": "heart rate unreliable: not used for the ceiling",
    "hr-recovered": "heart rate good again",
    "hr-loss-walk": "heart rate lost: slowing to walking speed",
    "hr-loss-stop": "heart rate not back in time: controlled stop",
}


def _hr_text(snap: Snapshot) -> str:
    """'104 bpm (strap, good) zone 100-110', or '- (treadmill, unreliable)'."""
    if snap.hr_quality is None and snap.hr_bpm is None:
        return "-"
    text = f"{snap.hr_bpm} bpm" if snap.hr_bpm is not None else "-"
    if snap.hr_quality is not None:
        text += f" ({snap.hr_source or '?'}, {snap.hr_quality})"
    if snap.hr_zone_bpm:
        low, high = snap.hr_zone_bpm
        text += f" zone {low:g}-{high:g}"
    return text


def _mmss(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _distance(metres: float) -> str:
    return f"{metres:.0f} m" if metres < 1000 else f"{metres / 1000:.2f} km"


def _left(seconds: float | None) -> str:
    """Time left, rounded up: 00:00 only once nothing is left (the belt stands)."""
    if seconds is None:
        return "--:--"
    return _mmss(math.ceil(max(0.0, seconds) - 1e-9))


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
