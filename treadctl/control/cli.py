"""``treadctl run PROGRAM``: one session, live progress, exit code per docs/cli.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    State,
)
from treadctl.control.view import STOPPING_NOTE, _View
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
    p.add_argument(
        "--hr",
        metavar="URL",
        help="heart-rate strap: ble://AA:BB:CC:DD:EE:FF, ble://name=PREFIX, or the simulated "
        "strap sim-hr://?faults=SPEC&seed=N&age=YEARS&rest=BPM on this run's simulated belt "
        "(docs/heart-rate.md); without it the treadmill's own HR field is used, if it sends one",
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
    hr_url: str | None = None  # the strap (--hr), parsed and valid


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
    hr_url = _check_hr(args.hr)
    if hr_url is None and any(seg.governed for seg in program.segments):
        print(f"treadctl: note: {program.name!r} is governed by heart rate and no --hr strap"
              " was given: the treadmill's own HR field is used; without a heart rate a"
              " governed segment slows to walking speed, then stops (docs/cli.md)",
              file=sys.stderr)
    return _Plan(
        program, url, profile, speedup, virtual=url.scheme == "sim",
        rear_facing=args.rear_facing, hr_url=hr_url,
    )


def _check_hr(url: str | None) -> str | None:
    """``--hr URL``: a valid strap URL (a bad one is a usage error: nothing moved)."""
    if url is None:
        return None
    from treadctl.hr.strap import HRURLError, parse_hr_url

    try:
        parse_hr_url(url)
    except HRURLError as exc:
        raise UsageError(f"--hr: {exc}; nothing moved") from None
    return url


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
    from treadctl.hr.strap import HRURLError

    transport = open_transport(plan.url, profile=plan.profile)
    try:
        controller = Controller(
            transport,
            plan.profile,
            tick_hz=args.tick_hz,
            recorder_factory=recorder_factory,
            rear_facing=plan.rear_facing,
            hr_url=plan.hr_url,
        )
    except HRURLError as exc:  # StrapInUse: the strap is bound to another lane
        raise _RunError(f"--hr: {exc}; nothing moved", EXIT_USAGE) from None
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
        # The link is closed: a Ctrl-C from here on (a late second tap after a quick
        # controlled stop) has nothing left to stop and must not turn a clean exit into a
        # KeyboardInterrupt. treadctl.cli.main puts the caller's handler back.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


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


__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_SAFETY", "EXIT_USAGE", "register"]
