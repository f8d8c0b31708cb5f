"""``treadctl run PROGRAM``: one session, live progress, exit code per docs/cli.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from pathlib import Path
from typing import Any

from treadctl import clock as clockmod
from treadctl.cli import EXIT_OK, EXIT_RUNTIME, EXIT_SAFETY, EXIT_USAGE, UsageError
from treadctl.control.controller import Controller, Outcome, SessionResult, Snapshot
from treadctl.limits import effective_limits
from treadctl.profiles import DEFAULT_PROFILE, FirmwareProfile, ProfileError, load_profile
from treadctl.programs.model import Program, ProgramError, load_program
from treadctl.programs.validate import validate_program
from treadctl.transport import DeviceURLError, open_transport, parse_device_url
from treadctl.transport.base import TransportError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run one program (default device: the built-in simulator)",
        description="Run PROGRAM (a built-in name or a .toml file) on a treadmill.",
    )
    p.add_argument("program", help="built-in program name or path to a program file")
    p.add_argument("--device", default="sim://", help="device URL (default: sim://)")
    p.add_argument("--profile", help=f"firmware profile (default: {DEFAULT_PROFILE})")
    p.add_argument(
        "--speedup",
        help="simulator only: virtual seconds per real second, or 'max' (default 1)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of the live view")
    p.add_argument("--data-dir", type=Path, help="where sessions are recorded")
    p.add_argument("--no-record", action="store_true", help="do not record the session")
    p.add_argument("--tick-hz", type=float, default=10.0, help="control loop rate, 1..50 Hz")
    p.set_defaults(func=_run)


def _parse_speedup(text: str | None, default: float | None) -> float | None:
    if text is None:
        return default
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--speedup must be a number or 'max', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--speedup must be > 0, got {text}")
    return value


def _prepare(args: argparse.Namespace) -> tuple[Program, Any, FirmwareProfile, float | None]:
    try:
        url = parse_device_url(args.device)
    except DeviceURLError as exc:
        raise UsageError(str(exc)) from None
    profile_name = args.profile or (url.profile if url.scheme == "sim" else None) or DEFAULT_PROFILE
    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    url_speedup = url.speedup if url.scheme == "sim" else 1.0
    speedup = _parse_speedup(args.speedup, url_speedup)
    if url.scheme != "sim" and speedup != 1.0:
        raise UsageError("--speedup only applies to the simulator (sim://)")
    if not 1 <= args.tick_hz <= 50:
        raise UsageError(f"--tick-hz must be within 1..50, got {args.tick_hz}")
    try:
        program = load_program(args.program)
    except ProgramError as exc:
        raise UsageError(str(exc)) from None
    violations = validate_program(program, effective_limits(profile, None, program.limits))
    if violations:
        for v in violations:
            print(f"{args.program}: {v}", file=sys.stderr)
        raise UsageError(
            f"program {program.name!r} is not valid for profile {profile.name!r} "
            f"({len(violations)} problem(s)); nothing moved"
        )
    return program, url, profile, speedup


def _run(args: argparse.Namespace) -> int:
    program, url, profile, speedup = _prepare(args)
    view = _View(args.json, program)
    try:
        result = clockmod.run(_session(args, program, url, profile, view), speedup=speedup)
    except TransportError as exc:
        view.close()
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    view.close()
    view.summary(result)
    if result.outcome is Outcome.FINISHED or result.outcome is Outcome.STOPPED:
        return EXIT_OK
    if result.outcome is Outcome.ESTOPPED:
        return EXIT_SAFETY
    return EXIT_RUNTIME


def _recorder_factory(args: argparse.Namespace, profile: FirmwareProfile) -> Any:
    if args.no_record:
        return None
    from treadctl.store.db import StoreError
    from treadctl.store.integration import controller_recorder_factory

    try:
        return controller_recorder_factory(
            data_dir=args.data_dir,
            treadmill_id="local",
            device=str(args.device),
            profile=profile.name,
        )
    except (OSError, StoreError) as exc:
        raise UsageError(f"cannot open the session store: {exc}") from None


async def _session(
    args: argparse.Namespace, program: Program, url: Any, profile: FirmwareProfile, view: _View
) -> SessionResult:
    transport = open_transport(url, profile=profile)
    recorder_factory = _recorder_factory(args, profile)
    controller = Controller(
        transport,
        profile,
        tick_hz=args.tick_hz,
        recorder_factory=recorder_factory,
    )
    controller.state_listeners.append(view.update)
    controller.telemetry_listeners.append(view.update)
    controller.event_listeners.append(view.event)
    loop = asyncio.get_running_loop()
    stop_signals = 0
    stop_tasks: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        nonlocal stop_signals
        stop_signals += 1
        view.note("stopping (controlled stop)..." if stop_signals == 1 else "e-stop")
        if stop_signals == 1:
            stop_tasks.append(loop.create_task(controller.stop()))
        else:
            controller.estop("second interrupt from the terminal")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await controller.open()
        task = controller.start(program)
        result = await asyncio.shield(task)
        esc = controller.escalation_task
        if esc is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(esc, timeout=30)
        if not result.belt_stopped:
            result.belt_stopped = await controller.wait_stopped(timeout_s=10.0)
        return result
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await controller.close()
        if recorder_factory is not None:
            recorder_factory.close()


class _View:
    """Live progress on a terminal (rich), JSON lines with --json, plain lines otherwise."""

    def __init__(self, as_json: bool, program: Program) -> None:
        self.as_json = as_json
        self.program = program
        self.last: Snapshot | None = None
        self._last_line_t = -math.inf
        self._last_key: tuple[Any, ...] | None = None
        self._live: Any = None
        self._notes: list[str] = []
        if not as_json and sys.stdout.isatty():
            from rich.live import Live

            self._live = Live(self._render(Snapshot()), refresh_per_second=8, transient=False)
            self._live.start()

    def note(self, text: str) -> None:
        self._notes.append(text)
        if self._live is None and not self.as_json:
            print(text, flush=True)

    def event(self, event: dict[str, Any]) -> None:
        if event["type"] in ("estop", "escalate"):
            detail = event.get("reason") or event.get("action")
            self.note(f"{event['type']}: {detail}")

    def update(self, snap: Snapshot) -> None:
        self.last = snap
        key = (snap.state, snap.segment, snap.phase, snap.latched)
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
                "remaining_s": snap.remaining_s,
                "latched": snap.latched,
                "reason": snap.reason,
                "phase": snap.phase,
            }
            print(json.dumps(line), flush=True)
        else:
            print(_plain(snap), flush=True)

    def _render(self, snap: Snapshot) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold")
        table.add_column()
        seg = f"{snap.segment}/{snap.segment_count}" if snap.segment else "-"
        arrow = "◀ reverse" if snap.direction.value == "reverse" else "▶ forward"
        table.add_row("program", self.program.name)
        table.add_row("state", f"{snap.state.value}" + (f" ({snap.phase})" if snap.phase else ""))
        table.add_row("segment", f"{seg}  {snap.segment_label or ''}")
        table.add_row("direction", arrow)
        table.add_row("speed", f"{snap.speed_kmh:5.1f} km/h  (target {snap.target_speed_kmh:.1f})")
        table.add_row(
            "incline", f"{snap.incline_pct:5.1f} %   (target {snap.target_incline_pct:.1f})"
        )
        table.add_row("distance", f"{snap.distance_m:7.0f} m")
        table.add_row("heart rate", f"{snap.hr_bpm} bpm" if snap.hr_bpm else "-")
        table.add_row("time", f"{_mmss(snap.elapsed_s)} elapsed, {_mmss(snap.remaining_s)} left")
        for note in self._notes[-3:]:
            table.add_row("[yellow]note", f"[yellow]{note}")
        if snap.latched:
            table.add_row("[red]LATCHED", f"[red]{snap.reason}")
        return Panel(table, title="treadctl", border_style="red" if snap.latched else "cyan")

    def close(self) -> None:
        if self._live is not None:
            if self.last is not None:
                self._live.update(self._render(self.last))
            self._live.stop()
            self._live = None

    def summary(self, result: SessionResult) -> None:
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
            "stats": result.summary,
        }
        if self.as_json:
            print(json.dumps(line), flush=True)
            return
        why = f" ({result.reason})" if result.reason else ""
        print(
            f"session {result.session_id}: {result.outcome.value}{why}; "
            f"{_mmss(result.elapsed_s)}, {result.distance_m:.0f} m, "
            f"{result.segments_completed}/{len(self.program.segments)} segments; "
            f"belt {'stopped' if result.belt_stopped else 'NOT confirmed stopped'}",
            flush=True,
        )
        if result.summary:
            from treadctl.store.summary import print_summary

            print(print_summary(result.summary), flush=True)


def _plain(snap: Snapshot) -> str:
    seg = f"{snap.segment}/{snap.segment_count}" if snap.segment else "-"
    phase = f" ({snap.phase})" if snap.phase else ""
    return (
        f"[{_mmss(snap.elapsed_s)}] {snap.state.value}{phase} seg {seg} {snap.direction.value} "
        f"{snap.speed_kmh:.1f}/{snap.target_speed_kmh:.1f} km/h incline {snap.incline_pct:.1f}% "
        f"left {_mmss(snap.remaining_s)}" + (f" LATCHED: {snap.reason}" if snap.latched else "")
    )


def _mmss(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_SAFETY", "EXIT_USAGE", "register"]
