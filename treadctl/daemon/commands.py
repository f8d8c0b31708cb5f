"""MQTT -> controller for one lane: the e-stop fast path (in paho's socket read callback,
before any parsing), the intake of other commands (parse, retained refused, rate limit,
bounded queue), ``cmd/stop`` that leaves first, the command worker, and the table from
command kind (:class:`treadctl.daemon.bridge.CommandKind`, the registry) to handler."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any

from treadctl.control.controller import ControlError, Controller
from treadctl.control.safety import Interlock
from treadctl.daemon import audit, bridge, mqtt
from treadctl.daemon.bridge import Command, CommandInvalid, EstopDetails, RequestId
from treadctl.daemon.lane_state import Queued, log
from treadctl.daemon.straps import LaneStraps
from treadctl.programs import ProgramError, load_builtin, program_from_dict

#: Commands still queued when a ``cmd/stop`` arrives are dropped, not run after it.
SUPERSEDED_BY_STOP = frozenset(k.value for k, s in bridge.SPECS.items() if s.superseded_by_stop)


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _resolve_program(spec: str | dict[str, Any] | None) -> Any:
    """Built-in name or inline object. Names never reach the file system (no paths over MQTT)."""
    if isinstance(spec, dict):
        return program_from_dict(spec, "program")
    assert isinstance(spec, str)
    return load_builtin(spec)


class LaneCommands(LaneStraps):
    """MQTT -> controller (see the module docstring)."""

    # ------------------------------------------------------------------ MQTT -> controller
    def _on_paho_estop(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's callback for ``<prefix>/cmd/estop``: runs in the socket read callback."""
        try:
            self.estop_now(message.payload, message.properties, source="lane")
        except Exception:
            log.exception("%s: e-stop handling failed", self.cfg.id)
            self.emergency("e-stop handling failed")

    def _on_paho_gym_estop(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's callback for the gym-wide e-stop (shared subscription: one copy/daemon)."""
        try:
            self.daemon.gym_estop(message.payload, message.properties, source="lane")
        except Exception:
            log.exception("gym-wide e-stop handling failed")
            for lane in self.daemon.lanes.values():
                lane.emergency("gym-wide e-stop handling failed")

    def show_disconnected(self) -> None:
        """Publish the retained state of a lane whose link is down: the link's reason, or
        the machine's latch when there is one (the link loss's own, kept across the loss, or
        set by an e-stop while down), as the controller's last state showed it, so the
        front desk and Home Assistant see an e-stop made while disconnected at once."""
        trip = self.machine.trip
        self._last_state = bridge.disconnected_state(
            self._link_reason, latch_reason=trip.reason if trip is not None else None)
        self._publish_raw_state()

    def stop_first(self) -> bool:
        """Put a Stop on the wire now (no latch yet); False when the link is down."""
        ctrl = self.controller
        if ctrl is None or not self.link_up.is_set():
            return False
        ctrl.client.stop_now()
        return True

    def latch(self, *, gym: bool, stop_sent: bool = False, note: str | None = None) -> None:
        """Latch this lane's controller (remote or gym-wide e-stop). ``note`` is the
        operator's reason from the payload: it goes into the trip, hence into
        ``state.reason``, the ``estop`` event and the session record."""
        interlock = Interlock.GYM_ESTOP if gym else Interlock.REMOTE_ESTOP
        detail = "gym-wide e-stop (MQTT)" if gym else "e-stop (MQTT)"
        if note:
            detail = f"{detail}: {note}"
        ctrl = self.controller
        if ctrl is not None and self.link_up.is_set():
            # The stop frame is on the wire when this returns (sent here unless stop_first()
            # already sent it in this same synchronous step).
            ctrl.estop(detail, interlock, stop_sent=stop_sent)
        else:
            self.machine.estop(interlock, detail + " while the link was down")
            self.show_disconnected()  # the retained state shows the latch at once
        self.stats["estops"] += 1

    def estop_now(self, payload: Any = b"", properties: mqtt.Properties | None = None, *,
                  source: str = "lane") -> None:
        """This lane's e-stop (``<prefix>/cmd/estop``, from either connection)."""
        # The Stop goes on the wire on the topic alone; only then is the payload looked at
        # (bounded, never raises), for the operator's reason in the latch - all in this one
        # synchronous step, so nothing can move the belt in between.
        stop_sent = self.stop_first()
        details = bridge.parse_estop(_payload_bytes(payload), self.config.mqtt.max_payload_bytes)
        self.latch(gym=False, stop_sent=stop_sent, note=details.note)
        if self._estop_copies.is_second_copy(payload, source, self.now()):
            return  # the same message via the other connection: stopped again, acked once
        # The ack is deferred: it must not hold up whatever the loop does next.
        asyncio.get_running_loop().call_soon(
            functools.partial(self.estop_ack, details, properties, gym=False))

    def estop_ack(self, details: EstopDetails, properties: mqtt.Properties | None, *,
                  gym: bool) -> None:
        extra: dict[str, Any] = {}
        if details.warnings:
            extra["warnings"] = list(details.warnings)
            log.warning("%s: e-stop payload: %s (it stopped anyway)", self.cfg.id,
                        "; ".join(details.warnings))
        scope = "all" if gym else self.cfg.id
        self.reply(bridge.ack("estop", details.request_id, reason=details.reason, scope=scope,
                              **extra), properties)
        audit.record(self, "estop", by=details.by, reason=details.reason,
                     request_id=details.request_id, session_id=audit.shown_session(self),
                     scope=scope)

    def on_message(self, message: mqtt.Message) -> None:
        topic = message.topic.value
        kind = self.topics.command_of(topic)
        if kind is None:
            ha = self.config.homeassistant
            if ha.enabled and topic == f"{ha.prefix}/status" and (
                    _payload_bytes(message.payload).strip() == b"online"):
                # Home Assistant (re)started: it forgot non-retained state; resend discovery.
                self._publish_discovery()
                self._publish_raw_state()
            return
        props = message.properties
        if message.retain:
            # A replayed retained command is not a new command (never start a belt from it).
            self.reply(bridge.error(kind, None, "retained command ignored; publish commands "
                                    "without retain"), props)
            return
        payload = _payload_bytes(message.payload)
        try:
            cmd = bridge.parse_command(kind, payload, self.config.mqtt.max_payload_bytes)
        except CommandInvalid as exc:
            self.reply(bridge.error(exc.kind, exc.request_id, exc.message), props)
            return
        if cmd.kind == "stop":
            self.submit_stop(Queued(cmd, props))
            return
        if not self.bucket.take(self.now()):
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited"), props)
            return
        try:
            self.queue.put_nowait(Queued(cmd, props))
        except asyncio.QueueFull:
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited (queue full)"), props)

    def submit_stop(self, item: Queued) -> None:
        """Take a ``cmd/stop`` (this writes no frame itself: the stop runs in a task of its
        own, through ``Controller.stop``). It leaves first: no rate limit, no queue (a flood
        of other commands cannot hold up or refuse a stop). Motion commands still queued
        were sent before this stop, so they must not run after it: each is answered
        "superseded by stop"."""
        kept: list[Queued] = []
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            if queued.command.kind in SUPERSEDED_BY_STOP:
                self.reply(bridge.error(queued.command.kind, queued.command.request_id,
                                        "superseded by stop"), queued.properties)
            else:
                kept.append(queued)
        for queued in kept:
            self.queue.put_nowait(queued)
        # Stops that arrive together (one socket read of a flood) are carried out once and
        # each answered with that one outcome: a flood of cmd/stop is not a flood of Stop
        # frames on a slow serial link.
        self._stop_waiters.append(item)
        if self.stop_task is None or self.stop_task.done():
            self.stop_task = asyncio.get_running_loop().create_task(self._run_stops())

    async def _run_stops(self) -> None:
        while self._stop_waiters:
            items, self._stop_waiters = self._stop_waiters, []
            self.stats["commands"] += len(items)
            first = items[0].command
            event = await self._outcome(first)
            for item in items:
                cmd = item.command
                if cmd is not first and event["type"] == "ack":  # each stop's own who/why
                    audit.record(self, "stop", by=cmd.by, reason=cmd.reason,
                                 request_id=cmd.request_id,
                                 session_id=audit.shown_session(self), after_reply=True)
                self.reply({**event, "request_id": cmd.request_id}, item.properties)

    async def run_commands(self) -> None:
        while True:
            item = await self.queue.get()
            self.stats["commands"] += 1
            self.reply(await self._outcome(item.command), item.properties)

    async def _outcome(self, cmd: Command) -> dict[str, Any]:
        """Carry out ``cmd``; the ack or error event to answer it with. A command carried
        out is recorded with who gave it and why (treadctl/daemon/audit.py)."""
        try:
            session_id = audit.shown_session(self)
            reply = await self.execute(cmd)
            if cmd.kind in audit.AUDITED:
                audit.record(self, cmd.kind, by=cmd.by, reason=cmd.reason,
                             request_id=cmd.request_id,
                             session_id=reply.get("session_id") or session_id,
                             after_reply=True)
            return reply
        except (ControlError, ProgramError) as exc:
            return bridge.error(cmd.kind, cmd.request_id, str(exc))
        except Exception as exc:
            log.exception("%s: command %s failed", self.cfg.id, cmd.kind)
            return bridge.error(cmd.kind, cmd.request_id, f"internal error: {exc!r}")

    async def execute(self, cmd: Command) -> dict[str, Any]:
        """Carry out a validated command; ControlError/ProgramError become error events."""
        ctrl = self.controller
        rid: RequestId = cmd.request_id
        if cmd.kind == "reset" and ctrl is None:
            if not self.machine.latched:
                raise ControlError("treadmill is disconnected")
            # The same rule as on a link (the belt's speed is unknown: nothing to check).
            self.machine.reset(session_ending=bool(self._closing), speed_kmh=None,
                               telemetry_age_s=math.inf)
            self.show_disconnected()
            return bridge.ack("reset", rid, reason=cmd.reason)
        if ctrl is None or not self.link_up.is_set():
            raise ControlError(f"treadmill is disconnected ({self._link_reason or 'link down'})")
        handler = HANDLERS.get(cmd.kind)
        if handler is None:
            raise ControlError(f"unknown command {cmd.kind!r}")
        return await handler(self, ctrl, cmd)

    # One handler per command kind (bridge.CommandKind); cmd/estop never gets here (it is
    # handled in the socket read callback, before parsing, rate limit or queue).
    async def _start(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        program = _resolve_program(cmd.program)
        if self._strap_restore is not None:
            await self._strap_restore  # the last session's strap is put back first
        task = ctrl.session_task
        # The strap of a running session is never touched: the start is refused first.
        ctrl.machine.check_start(session_active=task is not None and not task.done(),
                                 speed_kmh=ctrl.measured_kmh)
        self._check_hr_source(ctrl, program, cmd.hr_device or self.strap)
        await self._use_session_strap(ctrl, cmd.hr_device)
        try:
            task = ctrl.start(program)
        except BaseException:
            await self._end_session_strap(ctrl)
            raise
        session_id = ctrl.snapshot.session_id
        self._watch_session(ctrl, session_id, task)
        if self.session_strap is not None:
            task.add_done_callback(lambda _task: self._session_strap_done(ctrl))
        return bridge.ack("start", cmd.request_id, program=program.name, session_id=session_id)

    async def _stop(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        await ctrl.stop()
        return bridge.ack("stop", cmd.request_id)

    async def _pause(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        ctrl.pause()
        return bridge.ack("pause", cmd.request_id)

    async def _resume(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        ctrl.resume()
        return bridge.ack("resume", cmd.request_id)

    async def _set(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        self._operator = audit.operator_fields(cmd.by, cmd.reason, cmd.request_id)
        try:  # the controller's own ``command`` event carries who and why
            ctrl.set_manual(speed_kmh=cmd.speed_kmh, incline_pct=cmd.incline_pct)
        finally:
            self._operator = None
        return bridge.ack("set", cmd.request_id, speed_kmh=cmd.speed_kmh,
                          incline_pct=cmd.incline_pct)

    async def _reset(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        ctrl.reset(cmd.reason or "reset")
        return bridge.ack("reset", cmd.request_id, reason=cmd.reason)

    async def _heartbeat(self, ctrl: Controller, cmd: Command) -> dict[str, Any]:
        ctrl.heartbeat()
        return bridge.ack("heartbeat", cmd.request_id)


_Handler = Callable[[LaneCommands, Controller, Command], Awaitable[dict[str, Any]]]
#: Command kind -> the lane's handler (bridge.CommandKind is the registry).
HANDLERS: dict[str, _Handler] = {
    bridge.CommandKind.START: LaneCommands._start,
    bridge.CommandKind.STOP: LaneCommands._stop,
    bridge.CommandKind.PAUSE: LaneCommands._pause,
    bridge.CommandKind.RESUME: LaneCommands._resume,
    bridge.CommandKind.SET: LaneCommands._set,
    bridge.CommandKind.RESET: LaneCommands._reset,
    bridge.CommandKind.HEARTBEAT: LaneCommands._heartbeat,
}
