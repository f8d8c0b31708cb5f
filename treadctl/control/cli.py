"""``treadctl run PROGRAM``: one session, live progress, exit code per docs/cli.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treadctl import clock as clockmod
from treadctl.cli import EXIT_OK, EXIT_RUNTIME, EXIT_SAFETY, EXIT_USAGE, UsageError
from treadctl.control.controller import (
    ControlError,
    Controller,
    Outcome,
    SessionResult,
    Snapshot,
    State,
)
from treadctl.limits import effective_limits, rear_facing_refusal
from treadctl.profiles import DEFAULT_PROFILE, FirmwareProfile, ProfileError, load_profile
from treadctl.programs.model import Program, ProgramError, load_program
from treadctl.programs.validate import validate_program
from treadctl.transport import DeviceURLError, open_transport, parse_device_url
from treadctl.transport.base import TransportError
from treadctl.transport.framing import SIMULATOR_CLOCK_UUID
from treadctl.transport.url import DeviceURL


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
        help="simulator only: virtual seconds per real second, or 'max' (sim:// only); "
        "default 1 (real time). Against `treadctl sim` over tcp:// or serial://, give the "
        "same value as the simulator's --speedup",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of the live view")
    p.add_argument("--data-dir", type=Path, help="where sessions are recorded")
    p.add_argument("--no-record", action="store_true", help="do not record the session")
    p.add_argument("--tick-hz", type=float, default=10.0, help="control loop rate, 1..50 Hz")
    p.add_argument(
        "--rear-facing",
        action="store_true",
        help="forward-only treadmills: run reverse segments with the belt forward while you "
        "face the rear; every turn waits for Enter (docs/safety.md, 'Rear-facing mode')",
    )
    p.set_defaults(func=_run)


#: A simulator in another process shares no clock with us: its link watchdog runs on its own
#: scaled real time. Below this much real time per link timeout, scheduling jitter on a
#: loaded host alone can starve it (seen: e-stops at 30x), so such speed-ups are refused.
MIN_REAL_LINK_TIMEOUT_S = 0.1


class _RunError(Exception):
    """A run that cannot go ahead: one line on stderr, ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _Plan:
    program: Program
    url: DeviceURL
    profile: FirmwareProfile
    speedup: float | None  # None: as fast as the CPU allows (sim:// only)
    virtual: bool  # the in-process simulator: one virtual clock drives both sides
    rear_facing: bool = False  # reverse segments facing the rear, the belt forward


def _parse_speedup(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--speedup must be a number or 'max', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--speedup must be > 0, got {text}")
    return value


def max_cross_process_speedup(profile: FirmwareProfile) -> float:
    """The highest speed-up a simulator in another process can run ``profile`` at here."""
    return profile.control.link_timeout_ms / 1000 / MIN_REAL_LINK_TIMEOUT_S


def _choose_speedup(
    args: argparse.Namespace, url: DeviceURL, profile: FirmwareProfile
) -> float | None:
    """Real time unless asked; ``max`` and other speed-ups only where a clock can follow."""
    asked = None if args.speedup is None else _parse_speedup(args.speedup)
    if url.scheme == "sim":
        if args.speedup is not None and url.speedup is not None and asked != url.speedup:
            raise UsageError(
                f"--speedup {args.speedup} and the device URL's speedup={url.speedup:g} differ"
            )
        if args.speedup is None:
            return url.speedup if url.speedup is not None else 1.0
        return asked
    if args.speedup is None:
        return 1.0
    if url.scheme == "ble" or asked is None:
        raise UsageError(
            "--speedup only applies to a simulator: sim:// (any value, or 'max'), or "
            "`treadctl sim --speedup X` over tcp:// or serial:// (the same X on both sides)"
        )
    if asked == 1.0:
        return asked
    if profile.protocol != "ftms":
        raise UsageError(
            f"--speedup {args.speedup} needs the simulator clock query, which the"
            f" {profile.protocol} protocol does not carry: a native link runs in real time"
            " (use sim:// for a faster simulated run)"
        )
    limit = max_cross_process_speedup(profile)
    if asked > limit + 1e-9:
        real_ms = profile.control.link_timeout_ms / asked
        raise UsageError(
            f"--speedup {asked:g} is too fast for a simulator in another process: profile "
            f"{profile.name}'s {profile.control.link_timeout_ms} ms link timeout would be "
            f"{real_ms:.0f} ms of real time, less than this host can promise between two "
            f"keepalives; use at most {limit:g}, or sim:// (one clock, any speed-up)"
        )
    return asked


def _prepare(args: argparse.Namespace) -> _Plan:
    try:
        url = parse_device_url(args.device)
    except DeviceURLError as exc:
        raise UsageError(str(exc)) from None
    profile_name = args.profile or (url.profile if url.scheme == "sim" else None) or DEFAULT_PROFILE
    try:
        profile = load_profile(profile_name)
        if url.scheme == "sim" and url.profile is not None:
            load_profile(url.profile)  # the simulated firmware, when the URL names another
        if profile.protocol != "ftms" and url.scheme == "ble":
            raise UsageError(
                f"profile {profile.name} speaks the {profile.protocol} protocol over"
                " serial:// or tcp:// (sim:// for its simulator), not Bluetooth"
            )
    except (ProfileError, TransportError) as exc:
        raise UsageError(str(exc)) from None
    speedup = _choose_speedup(args, url, profile)
    if not 1 <= args.tick_hz <= 50:
        raise UsageError(f"--tick-hz must be within 1..50, got {args.tick_hz}")
    try:
        program = load_program(args.program)
    except ProgramError as exc:
        raise UsageError(str(exc)) from None
    refusal = rear_facing_refusal(profile) if args.rear_facing else None
    if refusal is not None:
        raise UsageError(f"--rear-facing: {refusal}; nothing moved")
    limits = effective_limits(profile, None, program.limits, rear_facing=args.rear_facing)
    violations = validate_program(program, limits)
    if violations:
        for v in violations:
            print(f"{args.program}: {v}", file=sys.stderr)
        raise UsageError(
            f"program {program.name!r} is not valid for profile {profile.name!r} "
            f"({len(violations)} problem(s)); nothing moved"
        )
    if program.heartbeat_s is not None:
        # Nothing here could send the heartbeat: the session would always trip
        # heartbeat-missed. The daemon takes it over MQTT (cmd/heartbeat).
        raise UsageError(
            f"program {program.name!r} needs a dead-man heartbeat every "
            f"{program.heartbeat_s:g} s, which `treadctl run` cannot give; run it with "
            "`treadctl daemon` (cmd/heartbeat over MQTT); nothing moved"
        )
    return _Plan(
        program, url, profile, speedup, virtual=url.scheme == "sim", rear_facing=args.rear_facing
    )


def _run(args: argparse.Namespace) -> int:
    plan = _prepare(args)
    _quiet_logging()
    recorder_factory = _recorder_factory(args, plan.profile)
    view = _View(args.json, plan.program, rear_facing=plan.rear_facing)
    try:
        result = clockmod.run(
            _session(args, plan, view, recorder_factory),
            speedup=plan.speedup,
            virtual=plan.virtual,
        )
    except (TransportError, _RunError) as exc:
        view.close(None)
        print(f"treadctl: error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, _RunError) else EXIT_RUNTIME
    except Exception as exc:  # a bug: the belt was commanded to stop on the way out
        view.close(None)
        logging.getLogger(__name__).debug("run failed", exc_info=True)
        print(f"treadctl: internal error: {exc!r} (the belt was commanded to stop)",
              file=sys.stderr)
        return EXIT_RUNTIME
    finally:
        if recorder_factory is not None:
            recorder_factory.close()
    if result is None:  # interrupted before anything was started
        view.close(None)
        print("treadctl: interrupted before the session started; nothing moved", file=sys.stderr)
        return EXIT_OK
    view.close(result)
    view.summary(result)
    if result.outcome is Outcome.FINISHED or result.outcome is Outcome.STOPPED:
        return EXIT_OK
    if result.outcome is Outcome.ESTOPPED:
        return EXIT_SAFETY
    return EXIT_RUNTIME


def _quiet_logging() -> None:
    """Errors as one prefixed line each; warnings hidden: what a user must know (an
    interlock, an escalation) is shown by the view from the controller's events."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("treadctl: %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.ERROR)


#: Progress note shown while a Ctrl-C's controlled stop runs; gone from the final frame.
STOPPING_NOTE = "stopping (controlled stop)..."


def _recorder_factory(args: argparse.Namespace, profile: FirmwareProfile) -> Any:
    if args.no_record:
        return None
    from treadctl.store.db import STALE_SESSION_REASON, SessionStore, StoreError, default_db_path
    from treadctl.store.integration import controller_recorder_factory

    try:
        path = default_db_path(args.data_dir)
        store = SessionStore(path)
    except (OSError, StoreError) as exc:
        raise UsageError(f"cannot open the session store: {exc}") from None
    try:
        # A session whose process was killed (SIGKILL, power, crash) stays 'running' for
        # ever otherwise: close it as aborted, with its data (live processes are spared).
        stale_ids = store.mark_running_as_aborted(STALE_SESSION_REASON, only_this_host=True)
        for stale in stale_ids:
            print(f"treadctl: session {stale} was left running; closed as aborted",
                  file=sys.stderr)
        return controller_recorder_factory(
            data_dir=args.data_dir,
            treadmill_id="local",
            device=str(args.device),
            profile=profile.name,
            store=store,
        )
    except (OSError, StoreError) as exc:
        store.close()
        raise UsageError(f"cannot open the session store: {exc}") from None


async def _peer_clock(transport: Any, speedup: float) -> float | None:
    """The speed-up of a ``treadctl sim`` at the other end, or None for anything else."""
    try:
        # One real second, whatever our own time scale.
        value = await transport.read(SIMULATOR_CLOCK_UUID, timeout_s=1.0 * speedup)
    except TransportError:
        return None  # not supported (a real machine or bridge) or no answer
    try:
        return float(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


async def _check_peer_clock(plan: _Plan, transport: Any) -> None:
    if plan.url.scheme not in ("tcp", "serial") or plan.profile.protocol != "ftms":
        return  # a native link runs in real time (_choose_speedup)
    ours = 1.0 if plan.speedup is None else plan.speedup
    theirs = await _peer_clock(transport, ours)
    where = plan.url.endpoint
    if theirs is None:
        if ours != 1.0:
            raise _RunError(
                f"--speedup {ours:g} is for a simulator, and {where} is not one (it does not "
                "answer the simulator clock query); nothing moved",
                EXIT_USAGE,
            )
        return
    if abs(theirs - ours) > 1e-9 * max(theirs, ours):
        raise _RunError(
            f"the simulator at {where} runs at {theirs:g}x and this run at {ours:g}x: "
            f"pass --speedup {theirs:g} (both sides must agree); nothing moved",
            EXIT_USAGE,
        )


async def _session(
    args: argparse.Namespace, plan: _Plan, view: _View, recorder_factory: Any
) -> SessionResult | None:
    transport = open_transport(plan.url, profile=plan.profile)
    controller = Controller(
        transport,
        plan.profile,
        tick_hz=args.tick_hz,
        recorder_factory=recorder_factory,
        rear_facing=plan.rear_facing,
    )
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = 0
    started = False
    stop_tasks: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        # First signal: controlled stop. Any further one: e-stop (docs/safety.md).
        nonlocal signals
        signals += 1
        if not started:
            if main_task is not None:
                main_task.cancel()  # nothing moves yet: just do not start
            return
        if signals == 1:
            view.note(STOPPING_NOTE)
            stop_tasks.append(loop.create_task(controller.stop()))
        else:
            controller.estop("second interrupt from the terminal")

    # Installed before anything is opened and removed only after the link is closed: an
    # interrupt at any moment is ours to handle, never a KeyboardInterrupt traceback.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    view.clock, view.session_time = controller.clock, controller.session_elapsed_s
    enter = _EnterReader(loop, lambda: _confirm_turn(controller, view)) if plan.rear_facing \
        else None
    try:
        try:
            await controller.open()
            _check_link(controller, plan)
            await _check_peer_clock(plan, transport)
            _check_link(controller, plan)
            wait_s = max(2.0, 3.0 / plan.profile.control.telemetry_hz)
            if not await controller.wait_telemetry(wait_s):
                _check_link(controller, plan)
                raise _RunError(
                    f"cannot use {plan.url.endpoint}: no treadmill data from it within "
                    f"{wait_s:g} s (is it a {plan.profile.protocol} treadmill?); nothing moved",
                    EXIT_RUNTIME,
                )
            controller.state_listeners.append(view.update)
            controller.telemetry_listeners.append(view.update)
            controller.event_listeners.append(view.event)
            try:
                task = controller.start(plan.program)
            except ControlError as exc:
                _check_link(controller, plan)
                raise _RunError(f"cannot start: {exc}; nothing moved", EXIT_RUNTIME) from None
            started = True
        except asyncio.CancelledError:
            if signals:
                return None
            raise
        result = await asyncio.shield(task)
        esc = controller.escalation_task
        if esc is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(esc, timeout=30)
        if not result.belt_stopped:
            result.belt_stopped = await controller.wait_stopped(timeout_s=10.0)
        for stopping in stop_tasks:
            with contextlib.suppress(BaseException):
                await stopping
        return result
    finally:
        if enter is not None:
            enter.close()
        await controller.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _confirm_turn(controller: Controller, view: _View) -> None:
    """Enter in the terminal: confirms a rear-facing turn-around that waits for it; at any
    other moment it does nothing (an Enter typed early is not a confirmation)."""
    if controller.turn_pending is None:
        return
    with contextlib.suppress(ControlError):
        controller.resume()


class _EnterReader:
    """Calls ``on_enter`` for every line on stdin (Enter), from the event loop. A pipe or a
    terminal is watched by the loop; anything else (a file) by a daemon thread. At end of
    input nothing more can confirm: the session then waits for Ctrl-C."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_enter: Callable[[], None]) -> None:
        self._loop = loop
        self._on_enter = on_enter
        self._fd: int | None = None
        try:
            fd = sys.stdin.fileno()
            loop.add_reader(fd, self._readable, fd)
            self._fd = fd
        except (OSError, ValueError, AttributeError, NotImplementedError):
            threading.Thread(target=self._thread, name="treadctl-enter", daemon=True).start()

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        for _ in range(data.count(b"\n")):
            self._on_enter()

    def _thread(self) -> None:
        with contextlib.suppress(Exception):
            for _ in sys.stdin:
                self._loop.call_soon_threadsafe(self._on_enter)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            self._fd = None


def _check_link(controller: Controller, plan: _Plan) -> None:
    """A link that failed before the session started is a connection error, not an
    interlock: nothing was moving (docs/safety.md)."""
    if controller.snapshot.state is State.DISCONNECTED:
        why = controller.snapshot.reason or "link lost"
        why = why.removeprefix("link-lost: ")
        raise _RunError(
            f"cannot use {plan.url.endpoint}: {why} before the session started; nothing moved",
            EXIT_RUNTIME,
        )


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
        table.add_row("heart rate", f"{snap.hr_bpm} bpm" if snap.hr_bpm else "-")
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
        f"left {_left(snap.remaining_s)}{nxt}"
        + (f" LATCHED: {snap.reason}" if snap.latched else "")
    )


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


__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_SAFETY", "EXIT_USAGE", "register"]
