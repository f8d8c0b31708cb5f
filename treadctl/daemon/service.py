"""The gym daemon: many treadmills, one MQTT connection each, supervised and isolated.

Owns the run-time wiring of ``treadctl daemon``:

* one :class:`Lane` per configured treadmill, each with its own supervisor tasks (device
  link with reconnect backoff, MQTT connection with reconnect backoff, command worker). A
  lane's failure is caught, its belt is e-stopped, and the task restarts after a backoff;
  no other lane notices. Each lane has its own MQTT client so that its Last Will *is* its
  ``status`` topic (docs/mqtt.md) and a command flood on one lane cannot slow another.
* e-stop topics are intercepted in paho's own per-topic callback
  (``message_callback_add``), i.e. synchronously in the socket read callback, *before*
  aiomqtt builds its message object and before any payload parsing, size check, rate limit
  or queue: ``controller.estop()`` puts the stop on the wire in that same call. Other
  commands are parsed (:mod:`treadctl.daemon.bridge`), rate limited by a token bucket and
  queued (bounded) for the lane's command worker - except ``cmd/stop``, which is never
  rate limited or queued and drops the motion commands still queued before it.
* the gym-wide ``<base>/all/cmd/estop`` is subscribed by every lane's connection as one
  MQTT *shared* subscription (``$share/<client_id>/...``): the broker hands each message to
  exactly one connection of this daemon (any that is up: built-in failover), and
  :meth:`Daemon.gym_estop` stops every lane in one synchronous loop - all Stop frames
  first, then the latches, then (deferred) one ack per lane.
* every lane's controller records its sessions into one shared
  :class:`~treadctl.store.db.SessionStore` (``<data_dir>/sessions.db``); the ``finished``
  event carries the store's summary. Every ending gets its ``finished`` and a closed
  record: the lane holds each session's recorder (:class:`_SessionRecord`) and closes and
  announces a session whose own ending was cut short (docs/mqtt.md "Endings").
* the retained ``state`` follows the measured belt between changes (``STATE_REFRESH_S``,
  at once at standstill) and names no session when idle; the operator's e-stop reason
  (read right after the Stop went out) goes into the latch.
* the retained ``state`` carries the link counters (``"link"``: frames, CRC/length/COBS
  errors, dropped); telemetry carries them every ``LINK_TELEMETRY_S``; a growing ``dropped``
  count is logged as a warning.
* broker outage policy: ``stop`` (default) e-stops a lane whose session is still running
  ``broker_grace_s`` after the broker went away (``Interlock.BROKER_LOST``, latched: the
  remote e-stop must not silently disappear); ``continue`` only logs.
* start-up (Stop to every treadmill, crashed sessions marked aborted, then READY=1),
  watchdog pings, and shutdown (controlled stop of every belt, ``offline``, exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from treadctl.clock import Clock, LoopClock
from treadctl.control.controller import (
    SHUTDOWN_REASON,
    ControlError,
    Controller,
    Outcome,
    SessionResult,
    Snapshot,
    State,
)
from treadctl.control.machine import SafetyMachine
from treadctl.control.safety import Interlock
from treadctl.daemon import audit, bridge, info, mqtt
from treadctl.daemon.bridge import Command, CommandInvalid, EstopDetails, RequestId, Topics
from treadctl.daemon.config import DaemonConfig, TreadmillConfig
from treadctl.hr.registry import STRAPS, strap_key
from treadctl.hr.strap import HRURLError, open_hr_source, parse_hr_url
from treadctl.limits import FIELD_BOUNDS, Limits
from treadctl.profiles import FirmwareProfile, load_profile
from treadctl.programs import ProgramError, builtin_names, load_builtin, program_from_dict
from treadctl.programs.model import Program
from treadctl.store.db import SessionStore, StoreError, default_db_path
from treadctl.store.integration import (
    ControllerRecorder,
    RecorderFactory,
    controller_recorder_factory,
)
from treadctl.transport import Transport, open_transport

log = logging.getLogger(__name__)

TransportFactory = Callable[[TreadmillConfig, FirmwareProfile], Transport]
Notify = Callable[[str], bool]

#: States in which a session drives (or may drive) the belt.
_ACTIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.STOPPING})
COMMAND_QUEUE_SIZE = 32
#: Commands still queued when a ``cmd/stop`` arrives are dropped, not run after it.
SUPERSEDED_BY_STOP = frozenset(k.value for k, s in bridge.SPECS.items() if s.superseded_by_stop)
FIRST_OPEN_TIMEOUT_S = 5.0
SHUTDOWN_STOP_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 30.0
#: A link that stayed up this long resets its reconnect backoff.
STABLE_LINK_S = 30.0
#: Nothing received for this long on an open link: rebuild it.
LINK_SILENCE_S = 5.0
#: Telemetry carries the link counters this often (they change slowly; keep payloads small).
LINK_TELEMETRY_S = 10.0
#: How often the link counters are checked for new drops (logged as a warning).
LINK_CHECK_S = 1.0
#: The retained ``state`` follows the measured belt (speed, incline, direction) at most
#: this often between state changes; reaching standstill is published at once.
STATE_REFRESH_S = 1.0
#: How long the daemon waits for a session that ended without its own ending to be closed
#: in the store (and announced) before it moves on.
SESSION_CLOSE_TIMEOUT_S = 10.0


class Backoff:
    """Exponential backoff with a cap: 1, 2, 4, ... ``max_s`` seconds."""

    def __init__(self, first_s: float = 1.0, max_s: float = MAX_BACKOFF_S) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next(self) -> float:
        delay, self._next = self._next, min(self.max_s, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def _default_transport(tm: TreadmillConfig, profile: FirmwareProfile) -> Transport:
    return open_transport(tm.device, profile=profile)


def _noop_notify(state: str) -> bool:
    return False


def _sd_notify() -> Notify:
    try:
        from treadctl.daemon import sdnotify
    except ImportError:  # pragma: no cover - the module ships with the daemon
        return _noop_notify
    return sdnotify.notify


def _link_counters(transport: Transport) -> dict[str, int]:
    try:
        return dict(transport.counters)
    except Exception:  # counters are diagnostics: never let them take a lane down
        return {}


@dataclass
class _Queued:
    command: Command
    properties: Properties | None


class _SessionRecord:
    """The lane's handle on one session's recording. The controller records through it
    (samples, events, its own ending), and the lane can still close the session in the
    store and announce its end when the controller's own ending never ran or was cut short
    (a session task cancelled while stopping, a link torn down while the session was being
    finished): no session is left ``running`` and every ending gets its ``finished``."""

    def __init__(self, inner: ControllerRecorder,
                 tag: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.inner = inner
        self._tag = tag
        self.session_id = inner.session_id
        #: The controller's result, when it got as far as finishing the session.
        self.result: SessionResult | None = None
        self._finishing: asyncio.Future[dict[str, Any]] | None = None

    def sample(self, ctl: Controller, now: float) -> None:
        self.inner.sample(ctl, now)

    def event(self, ctl: Controller, event: dict[str, Any]) -> None:
        if self._tag is not None:
            self._tag(event)
        self.inner.event(ctl, event)

    @property
    def open(self) -> bool:
        """Still recording: the session's ending has not begun."""
        return self._finishing is None

    def finish(self, ctl: Controller, result: SessionResult) -> asyncio.Future[dict[str, Any]]:
        """The controller's own ending. A future (not a coroutine): it runs to the end even
        when the session task awaiting it is cancelled, and the lane can await it too."""
        self.result = result
        if self._finishing is None:
            self._finishing = asyncio.ensure_future(self.inner.finish(ctl, result))
        return self._finishing

    async def close(self, outcome: str, reason: str) -> dict[str, Any]:
        """The summary of the closed session: the controller's ending if it started one,
        else the session is finished here with ``outcome``."""
        if self._finishing is None:
            self._finishing = asyncio.ensure_future(
                self.inner.recorder.afinish(outcome, reason))
        return await asyncio.shield(self._finishing)


class Lane:
    """One treadmill: its controller (re-created per link), its MQTT client, its commands."""

    def __init__(self, daemon: Daemon, tm: TreadmillConfig) -> None:
        self.daemon = daemon
        self.cfg = tm
        self.config = daemon.config
        self.profile = load_profile(tm.profile)
        self.topics = Topics(daemon.config.mqtt.base_topic, tm.id)
        #: What the lane can do: the retained ``info`` message (treadctl/daemon/info.py).
        self.info = info.lane_info(tm, self.profile, merge_limits(daemon.config.site_limits,
                                                                  tm.limits))
        self.controller: Controller | None = None
        self.client: aiomqtt.Client | None = None
        #: The lane's safety machine (states, latch, interlocks), handed to every controller
        #: built for this lane: a latch set while the link is down, or when it went away,
        #: is the same latch on the next link. Only a reset clears it.
        self.machine = SafetyMachine(daemon.config.safety)
        self.link_up = asyncio.Event()
        self.broker_up = asyncio.Event()
        self.link_lost = asyncio.Event()
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue(COMMAND_QUEUE_SIZE)
        # cmd/stop runs at once, not queued: the stops waiting for their one run, and the run.
        self._stop_waiters: list[_Queued] = []
        self.stop_task: asyncio.Task[None] | None = None
        self.bucket = bridge.TokenBucket(self.config.daemon.command_rate_per_s)
        self.telemetry_period_s = 1.0 / self.config.daemon.telemetry_hz
        self._last_telemetry = -math.inf
        self._last_state: bytes = bridge.disconnected_state("connecting")
        self._grace_timer: asyncio.TimerHandle | None = None
        self._link_reason: str | None = "connecting"
        self.stats = {"estops": 0, "commands": 0, "errors": 0, "rate_limited": 0}
        self._record_factory: RecorderFactory | None = daemon.recorder_for(tm)
        #: What the controller records through (None: the store is unusable).
        self.recorder = self._record if self._record_factory is not None else None
        self._records: dict[str, _SessionRecord] = {}
        #: Sessions started on this lane and not yet ended: id -> (controller, task).
        self._sessions: dict[str, tuple[Controller, asyncio.Task[SessionResult]]] = {}
        #: Sessions whose ``finished`` event went out (the controller's own ending ran).
        self._finished_ids: set[str] = set()
        #: Sessions being closed by the lane (their own ending did not run).
        self._closing: dict[str, asyncio.Task[None]] = {}
        #: Why sessions end when the lane tears the controller down (shutdown, link lost).
        self._ending_reason: str | None = None
        #: Does the retained state show the current session (program, segment, session_id)?
        self._session_shown = False
        #: The measured fields in the last encoded state, and when (loop time) it was.
        self._state_measured: tuple[Any, ...] | None = None
        self._state_at = -math.inf
        self.link: dict[str, int] = {}
        self._link_checked = -math.inf
        self._link_in_telemetry = -math.inf
        self._dropped = 0
        #: When (the daemon's clock) the last gym-wide e-stop was applied to this lane.
        self.gym_estop_at = -math.inf
        self._estop_copies = EstopCopies()
        #: ``by``/``reason``/``request_id`` of the ``set`` being carried out: they tag the
        #: controller's own ``command`` event (treadctl/daemon/audit.py).
        self._operator: dict[str, Any] | None = None
        #: ``command`` events that go out right after the reply being prepared (audit.py).
        self._after_reply: list[dict[str, Any]] = []
        #: The lane's own heart-rate strap (``hr`` in its config), bound to this lane in
        #: the strap registry for the lane's whole life (a reconnect never lets it go), or
        #: None. A strap never moves the belt: it only feeds the controller's supervisor.
        self.strap: str | None = self._bind_strap(tm.hr)
        #: A ``cmd/start`` ``hr_device`` other than the lane's strap: bound to this lane
        #: for that session, released at its end (then the lane's strap is used again).
        self.session_strap: str | None = None
        self._strap_restore: asyncio.Task[None] | None = None
        #: Heart-rate fields in the last encoded state (source, quality, zone).
        self._state_hr: tuple[Any, ...] | None = None

    def now(self) -> float:
        """The lane's clock: the daemon's (injected; the event loop's by default), which
        every controller of the lane runs on too (the time base of ``Controller.last_rx``)."""
        return self.daemon.clock.now()

    # ------------------------------------------------------------------ device link
    @property
    def session_active(self) -> bool:
        c = self.controller
        return c is not None and c.snapshot.state in _ACTIVE

    async def open_link(self) -> None:
        """Connect a fresh transport + controller; ``Controller.open`` sends Stop first."""
        transport = self.daemon.transport_factory(self.cfg, self.profile)
        site = merge_limits(self.config.site_limits, self.cfg.limits)
        ctrl = Controller(
            transport,
            self.profile,
            site_limits=site,
            safety=self.config.safety,
            tick_hz=self.config.daemon.tick_hz,
            treadmill_id=self.cfg.id,
            heartbeat_s=self.config.daemon.heartbeat_s,
            clock=self.daemon.clock,
            recorder_factory=self.recorder,
            machine=self.machine,
            # [[treadmill]] rear_facing (config refuses it on profiles that can reverse).
            rear_facing=self.cfg.rear_facing,
            **self._strap_kwargs(self.strap),
        )
        ctrl.state_listeners.append(self._on_state)
        ctrl.telemetry_listeners.append(self._on_telemetry)
        ctrl.event_listeners.append(self._on_event)
        self.link_lost.clear()
        self.controller = ctrl
        self._dropped = 0
        self.link = {}
        try:
            await ctrl.open()
        except BaseException:
            self.controller = None
            with contextlib.suppress(BaseException):
                await ctrl.close()
            raise
        # A latch survives reconnects (the machine is the lane's): ctrl.open() stopped again.
        self._link_reason = None
        self.link_up.set()
        self._publish_state(ctrl.snapshot)

    async def close_link(self, reason: str = "link closed") -> None:
        ctrl, self.controller = self.controller, None
        self.link_up.clear()
        if ctrl is not None:
            self._ending_reason = self._ending_reason or reason
            with contextlib.suppress(Exception):
                await ctrl.close()  # commands Stop (if the link still carries anything)
            self.machine.link_dropped()
        self._release_session_strap()  # the controller closed it; the session is over
        # A session cut short by the close is closed in the store and announced.
        await self.settle()
        self._ending_reason = None

    async def run_link(self) -> None:
        """Keep the device link up: reconnect with backoff; a reconnected belt is idle."""
        backoff = Backoff()
        try:
            while True:
                if self.controller is None:
                    try:
                        await self.open_link()
                    except Exception as exc:
                        self._link_reason = f"link: {exc}"
                        log.warning("%s: cannot open %s: %s", self.cfg.id, self.cfg.device, exc)
                        self._last_state = bridge.disconnected_state(self._link_reason)
                        self._publish_raw_state()
                        await asyncio.sleep(backoff.next())
                        continue
                up_since = self.now()
                reason = await self._wait_link_lost()
                log.warning("%s: link lost (%s); reconnecting", self.cfg.id, reason)
                await self.close_link(f"link lost ({reason or 'link closed'})")
                self._link_reason = reason or "link lost"
                self._last_state = bridge.disconnected_state(self._link_reason)
                self._publish_raw_state()
                if self.now() - up_since >= STABLE_LINK_S:
                    backoff.reset()
                await asyncio.sleep(backoff.next())
        finally:
            await self.close_link()

    async def _wait_link_lost(self) -> str | None:
        """Until the transport reports the link lost, or nothing arrived from the treadmill
        for ``LINK_SILENCE_S`` (a link cut by the controller's own escalation, a dead TCP
        peer): either way the link is rebuilt, and a latch carries over."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.link_lost.wait(), 1.0)
            ctrl = self.controller
            if ctrl is None:
                return "link closed"
            if self.link_lost.is_set():
                return ctrl.snapshot.reason
            if self.now() - ctrl.last_rx > LINK_SILENCE_S:
                return f"no data from the treadmill for {LINK_SILENCE_S:g} s"

    # ------------------------------------------------------------------ heart-rate strap
    def _bind_strap(self, url: str | None) -> str | None:
        """Bind the lane's configured strap (the config has refused two lanes sharing one).
        A refusal here leaves the lane without its strap, never without its belt."""
        if url is None:
            return None
        try:
            STRAPS.bind(url, self.cfg.id)
        except HRURLError as exc:
            log.error("%s: heart-rate strap not used: %s", self.cfg.id, exc)
            return None
        return url

    def _strap_kwargs(self, url: str | None) -> dict[str, Any]:
        """How a controller gets ``url``: a ``sim-hr://`` strap the controller builds on
        the belt it drives (simulated straps are never registered); a ``ble://`` strap is
        built here and handed over, so the controller never binds or releases it: the
        lane holds its binding (for its life, or for the session)."""
        if url is None:
            return {}
        try:
            if parse_hr_url(url).scheme == "sim-hr":
                return {"hr_url": url}
            return {"hr_source": open_hr_source(url, clock=self.daemon.clock)}
        except HRURLError as exc:  # validated already; a strap never keeps a lane down
            log.error("%s: heart-rate strap %s not used: %s", self.cfg.id, url, exc)
            return {}

    async def _attach_strap(self, ctrl: Controller, url: str | None) -> None:
        kwargs = self._strap_kwargs(url)
        if "hr_url" in kwargs:
            await ctrl.attach_strap(kwargs["hr_url"])
        elif "hr_source" in kwargs:
            await ctrl.attach_strap(source=kwargs["hr_source"])
        else:
            await ctrl.detach_strap()

    def _same_strap(self, a: str, b: str | None) -> bool:
        if b is None:
            return False
        ka, kb = strap_key(parse_hr_url(a)), strap_key(parse_hr_url(b))
        return ka == kb if ka is not None or kb is not None else a == b

    async def _use_session_strap(self, ctrl: Controller, url: str | None) -> None:
        """``cmd/start``'s ``hr_device``: bound to this lane (``StrapInUse`` when another
        lane holds it: the start is refused, nothing changed) and used for the session."""
        if url is None or self._same_strap(url, self.strap):
            return
        try:
            STRAPS.bind(url, self.cfg.id)
        except HRURLError as exc:
            raise ControlError(f"hr_device: {exc}; nothing moved") from None
        self.session_strap = url
        try:
            await self._attach_strap(ctrl, url)
        except BaseException:
            self._release_session_strap()
            raise

    async def _end_session_strap(self, ctrl: Controller) -> None:
        """The session is over: its ``hr_device`` is closed and released, the lane's own
        strap is used again. Moves nothing."""
        if self.session_strap is None:
            return
        try:
            if ctrl is self.controller:
                await self._attach_strap(ctrl, self.strap)
        except Exception as exc:  # a strap never takes a lane down
            log.error("%s: heart-rate strap after the session: %s", self.cfg.id, exc)
        finally:
            self._release_session_strap()

    def _release_session_strap(self) -> None:
        url, self.session_strap = self.session_strap, None
        if url is not None:
            STRAPS.release(url, self.cfg.id)

    def release_straps(self) -> None:
        """The lane's end: every strap it holds goes back to the registry."""
        self._release_session_strap()
        if self.strap is not None:
            STRAPS.release(self.strap, self.cfg.id)

    def _check_hr_source(self, ctrl: Controller, program: Program, url: str | None) -> None:
        """A heart-rate-governed program needs a heart rate: a strap (the lane's or the
        session's) or a treadmill that has sent one. Refused before anything moves."""
        if not any(seg.governed for seg in program.segments):
            return
        if url is not None or ctrl.hr_supervisor.status.source is not None:
            return
        raise ControlError(
            f"program {program.name!r} has heart-rate-governed segments (hr_zone_bpm) and "
            f"lane {self.cfg.id!r} has no heart-rate source: no strap (give hr_device, or "
            "hr in the lane's config) and the treadmill sends no heart rate; nothing moved")

    # ------------------------------------------------------------------ controller -> MQTT
    def _on_state(self, snap: Snapshot) -> None:
        if snap.state is State.DISCONNECTED:
            self.link_lost.set()
        self._publish_state(snap)

    def _publish_state(self, snap: Snapshot) -> None:
        # Encoded in the deferred callback, not here: a state change happens inside an
        # e-stop, and the JSON can wait until the Stop frame has been handled.
        if self.client is None:
            self._last_state = self._encode_state(snap)
            return
        asyncio.get_running_loop().call_soon(self._publish_state_now, snap)

    def _publish_state_now(self, snap: Snapshot) -> None:
        self._last_state = self._encode_state(snap)
        self._publish_now(self.topics.state, self._last_state, 1, True, None)

    def _encode_state(self, snap: Snapshot) -> bytes:
        ctrl = self.controller
        if ctrl is not None:
            self.link = _link_counters(ctrl.transport)
        fields = bridge.snapshot_fields(snap, bridge.STATE_FIELDS)
        # program / segment / session_id name the session the state is about: the running
        # one, or the one an e-stop ended (kept while latched). Idle (after the end, after a
        # reset) and disconnected treadmills have none; the controller keeps the last ones.
        if snap.state in _ACTIVE:
            self._session_shown = True
        elif snap.state in (State.IDLE, State.DISCONNECTED):
            self._session_shown = False
        if not self._session_shown:
            fields["program"] = fields["segment"] = fields["session_id"] = None
        if snap.state is State.DISCONNECTED:
            fields["speed_kmh"] = None  # the link is gone: the speed is not known
        self._state_measured = _measured(snap)
        self._state_hr = _hr_picture(snap)
        self._state_at = self.now()
        return bridge.state_payload(fields, link=self.link)

    def _follow_belt(self, snap: Snapshot) -> None:
        """Keep the retained state's measured fields true between state changes: after an
        e-stop the belt still runs down, and a state taken at the latch would go on saying
        so. Republished at most every ``STATE_REFRESH_S``, and at once at standstill; the
        heart rate likewise, and at once when its source, quality or zone changes."""
        last = self._state_measured
        if last is None:
            return
        hr = _hr_picture(snap)
        if _measured(snap) == last and hr == self._state_hr:
            return
        at_once = (snap.speed_kmh == 0.0 and last[0] != 0.0) or hr != self._state_hr
        if not at_once and self.now() - self._state_at < STATE_REFRESH_S:
            return
        self._state_measured = None  # one refresh in flight at a time (set when encoded)
        self._publish_state(snap)

    def _publish_raw_state(self) -> None:
        self.publish(self.topics.state, self._last_state, qos=1, retain=True)

    def _on_telemetry(self, snap: Snapshot) -> None:
        now = self.now()
        if now - self._link_checked >= LINK_CHECK_S:
            self._link_checked = now
            self._check_link()
        self._follow_belt(snap)
        # 0.8: frames arrive with jitter; a strict period would halve the rate.
        if now - self._last_telemetry < self.telemetry_period_s * 0.8 or self.client is None:
            return
        self._last_telemetry = now
        fields = bridge.snapshot_fields(snap, bridge.TELEMETRY_FIELDS)
        extra: dict[str, Any] = {}
        if now - self._link_in_telemetry >= LINK_TELEMETRY_S:
            self._link_in_telemetry = now
            extra["link"] = self.link
        # Straight into paho: telemetry never runs inside an e-stop, no need to defer.
        self._publish_now(self.topics.telemetry, bridge.telemetry_payload(fields, **extra), 0,
                          False, None)

    def _check_link(self) -> None:
        ctrl = self.controller
        if ctrl is None:
            return
        self.link = _link_counters(ctrl.transport)
        dropped = self.link.get("dropped", 0)
        if dropped > self._dropped:
            log.warning("%s: link dropped %d corrupted frame(s) (%d in total; crc %d, length "
                        "%d, cobs %d)", self.cfg.id, dropped - self._dropped, dropped,
                        self.link.get("crc_errors", 0), self.link.get("length_errors", 0),
                        self.link.get("cobs_errors", 0))
        self._dropped = dropped

    def _on_event(self, event: dict[str, Any]) -> None:
        self._tag_command(event)
        if event.get("type") == "finished" and event.get("session_id"):
            self._finished_ids.add(event["session_id"])
        if self.client is None:
            return
        asyncio.get_running_loop().call_soon(self._publish_event_now, event)

    publish_event = _on_event

    def _tag_command(self, event: dict[str, Any]) -> None:
        if self._operator is not None and event.get("type") == "command":
            event.update(self._operator)

    @property
    def session_shown(self) -> bool:
        """Does the retained state name a session (running, or the one a latch ended)?"""
        return self._session_shown

    def open_record(self, session_id: str) -> _SessionRecord | None:
        record = self._records.get(session_id)
        return record if record is not None and record.open else None

    def _publish_event_now(self, event: dict[str, Any]) -> None:
        self._publish_now(self.topics.event, bridge.event_payload(event), 1, False, None)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Fire and forget, straight into paho (no task, no wait for PUBACK): nothing in the
        control path ever awaits the broker, and at 50 treadmills x 4 Hz a task per message
        costs more CPU than the message. paho keeps QoS 1 in flight and in order. Dropped
        while the broker is away (state is republished on reconnect)."""
        if self.client is None:
            return
        # Deferred to the loop's ready queue: a publish never runs ahead of what the current
        # callback already put in motion (the simulator/serial write of a Stop, for one).
        asyncio.get_running_loop().call_soon(self._publish_now, topic, payload, qos, retain,
                                             properties)

    def _publish_now(self, topic: str, payload: bytes | str, qos: int, retain: bool,
                     properties: Properties | None) -> None:
        client = self.client
        if client is None:
            return
        try:
            # aiomqtt's paho client: its publish is synchronous and loop-safe here (the
            # socket callbacks run in this loop).
            rc = mqtt.publish_nowait(client, topic, payload, qos, retain, properties)
        except Exception as exc:
            log.debug("%s: publish failed: %s", self.cfg.id, exc)
            return
        if rc != 0:
            log.debug("%s: publish to %s not sent (rc %s)", self.cfg.id, topic, rc)

    def reply(self, event: dict[str, Any], properties: Properties | None) -> None:
        """The one ack/error of a command: on ``event`` and, with MQTT v5 request/response,
        also on the response topic with the request's correlation data."""
        if event["type"] == "error":
            self.stats["errors"] += 1
            log.info("%s: %s rejected: %s", self.cfg.id, event.get("command"), event["error"])
        payload = bridge.event_payload(event)
        self.publish(self.topics.event, payload, qos=1)
        response_topic = getattr(properties, "ResponseTopic", None) if properties else None
        if response_topic:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            correlation = getattr(properties, "CorrelationData", None)
            if correlation is not None:
                props.CorrelationData = correlation
            self.publish(response_topic, payload, qos=1, properties=props)
        while self._after_reply:
            self.publish_event(self._after_reply.pop(0))

    def after_reply(self, event: dict[str, Any]) -> None:
        self._after_reply.append(event)

    # ------------------------------------------------------------------ MQTT -> controller
    def _on_paho_estop(self, client: Any, userdata: Any, message: MQTTMessage) -> None:
        """paho's callback for ``<prefix>/cmd/estop``: runs in the socket read callback."""
        try:
            self.estop_now(message.payload, message.properties, source="lane")
        except Exception:
            log.exception("%s: e-stop handling failed", self.cfg.id)
            self.emergency("e-stop handling failed")

    def _on_paho_gym_estop(self, client: Any, userdata: Any, message: MQTTMessage) -> None:
        """paho's callback for the gym-wide e-stop (shared subscription: one copy/daemon)."""
        try:
            self.daemon.gym_estop(message.payload, message.properties, source="lane")
        except Exception:
            log.exception("gym-wide e-stop handling failed")
            for lane in self.daemon.lanes.values():
                lane.emergency("gym-wide e-stop handling failed")

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
        self.stats["estops"] += 1

    def estop_now(self, payload: Any = b"", properties: Properties | None = None, *,
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

    def estop_ack(self, details: EstopDetails, properties: Properties | None, *,
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

    def on_message(self, message: aiomqtt.Message) -> None:
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
            self.submit_stop(_Queued(cmd, props))
            return
        if not self.bucket.take(self.now()):
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited"), props)
            return
        try:
            self.queue.put_nowait(_Queued(cmd, props))
        except asyncio.QueueFull:
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited (queue full)"), props)

    def submit_stop(self, item: _Queued) -> None:
        """Take a ``cmd/stop`` (this writes no frame itself: the stop runs in a task of its
        own, through ``Controller.stop``). It leaves first: no rate limit, no queue (a flood
        of other commands cannot hold up or refuse a stop). Motion commands still queued
        were sent before this stop, so they must not run after it: each is answered
        "superseded by stop"."""
        kept: list[_Queued] = []
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
            return bridge.ack("reset", rid, reason=cmd.reason)
        if ctrl is None or not self.link_up.is_set():
            raise ControlError(f"treadmill is disconnected ({self._link_reason or 'link down'})")
        handler = _HANDLERS.get(cmd.kind)
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

    def _session_strap_done(self, ctrl: Controller) -> None:
        self._strap_restore = asyncio.get_running_loop().create_task(
            self._end_session_strap(ctrl), name=f"{self.cfg.id}-strap-restore")

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

    # ------------------------------------------------------------------ sessions
    def _record(self, ctl: Controller, program: Program, session_id: str) -> _SessionRecord:
        """The controller's recorder factory: the store's recorder, kept by the lane."""
        assert self._record_factory is not None
        record = _SessionRecord(self._record_factory(ctl, program, session_id),
                                self._tag_command)
        self._records[record.session_id] = record
        return record

    def _watch_session(self, ctrl: Controller, session_id: str | None,
                       task: asyncio.Task[SessionResult]) -> None:
        if session_id is None:
            return
        self._sessions[session_id] = (ctrl, task)
        task.add_done_callback(lambda _task: self._session_done(session_id))

    def _session_done(self, session_id: str) -> None:
        """A session task ended. Its own ending ran (``finished`` published, store record
        closed), or the lane closes and announces the session now."""
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return
        if session_id in self._finished_ids:
            self._finished_ids.discard(session_id)
            self._records.pop(session_id, None)
            return
        ctrl, _task = entry
        self._closing[session_id] = asyncio.get_running_loop().create_task(
            self._close_session(ctrl, session_id), name=f"close-session-{session_id}")

    async def _close_session(self, ctrl: Controller, session_id: str) -> None:
        """The ending the controller did not get to: a session task cancelled while
        stopping (a trip during the stop), or the link torn down while the session was
        being finished. The session is closed in the store and ``finished`` goes out, with
        the outcome and summary, as for any other ending."""
        try:
            record = self._records.pop(session_id, None)
            result = record.result if record is not None else None
            snap = ctrl.snapshot
            trip = ctrl.latch.trip
            if result is not None:
                outcome, reason = result.outcome.value, result.reason
                elapsed, distance = result.elapsed_s, result.distance_m
                completed = result.segments_completed
            else:
                if trip is not None:
                    outcome, reason = Outcome.ESTOPPED.value, trip.reason
                else:
                    outcome = Outcome.STOPPED.value
                    reason = self._ending_reason or "session ended without a result"
                elapsed, distance = round(snap.elapsed_s, 2), round(snap.distance_m, 1)
                completed = max(0, (snap.segment or 1) - 1)
            summary: dict[str, Any] | None = None
            if record is not None:
                try:
                    summary = await record.close(outcome, reason or "")
                except Exception as exc:
                    log.error("%s: session %s could not be closed in the store: %s",
                              self.cfg.id, session_id, exc)
            if summary:
                completed = summary.get("segments_completed", completed)
            log.warning("%s: session %s ended without its own ending; closed as %s (%s)",
                        self.cfg.id, session_id, outcome, reason)
            self._on_event({
                "type": "finished", "outcome": outcome, "reason": reason,
                "session_id": session_id, "elapsed_s": elapsed, "distance_m": distance,
                "segments_completed": completed, "summary": summary,
            })
        finally:
            self._finished_ids.discard(session_id)
            self._closing.pop(session_id, None)

    async def settle(self, timeout_s: float = SESSION_CLOSE_TIMEOUT_S) -> None:
        """Until every ended session of this lane is closed and announced (bounded)."""
        for session_id, (_ctrl, task) in list(self._sessions.items()):
            if task.done():
                self._session_done(session_id)  # its done-callback has not run yet
        pending = list(self._closing.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    # ------------------------------------------------------------------ broker
    def _make_client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        client = mqtt_client(self.config, f"{m.client_id}-{self.cfg.id}",
                             aiomqtt.Will(self.topics.status, "offline", qos=1, retain=True))
        # E-stops bypass aiomqtt's queue entirely: paho calls these for matching topics
        # (instead of aiomqtt's on_message) right where it decoded the PUBLISH.
        mqtt.on_topic(client, self.topics.estop, self._on_paho_estop)
        mqtt.on_topic(client, self.topics.gym_estop, self._on_paho_gym_estop)
        return client

    async def run_mqtt(self) -> None:
        backoff = Backoff()
        while True:
            client = self._make_client()
            connected = False
            try:
                async with client:
                    connected = True
                    backoff.reset()
                    self.client = client
                    self._broker_back()
                    opts = SubscribeOptions(qos=1)
                    subs = [(self.topics.commands, opts), (self.daemon.gym_filter, opts)]
                    if self.config.homeassistant.enabled:
                        subs.append((f"{self.config.homeassistant.prefix}/status", opts))
                    granted = await client.subscribe(subs)
                    _check_granted(f"{self.cfg.id}", [t for t, _ in subs], granted)
                    self.publish(self.topics.status, "online", qos=1, retain=True)
                    self.publish(self.topics.info, info.info_payload(self.info),
                                 qos=1, retain=True)
                    self._publish_raw_state()
                    self._publish_discovery()
                    self.broker_up.set()
                    log.info("%s: connected to mqtt://%s:%d", self.cfg.id,
                             self.config.mqtt.host, self.config.mqtt.port)
                    async for message in client.messages:
                        self.on_message(message)
            except aiomqtt.MqttError as exc:
                log.warning("%s: broker: %s", self.cfg.id, exc)
            finally:
                self.client = None
                self.broker_up.clear()
                if connected:
                    self._broker_lost()
            await asyncio.sleep(backoff.next())

    def _publish_discovery(self) -> None:
        ha = self.config.homeassistant
        if not ha.enabled:
            return
        from treadctl.daemon.discovery import discovery_messages

        try:
            messages = discovery_messages(
                self.cfg.id,
                base_topic=self.config.mqtt.base_topic,
                node_id=ha.node_id,
                programs=builtin_names(),
                prefix=ha.prefix,
                model=info.hass_model(self.profile),
            )
        except ValueError as exc:
            # Discovery is a convenience: it never takes a lane (and its e-stop) down.
            log.error("%s: Home Assistant discovery not published: %s", self.cfg.id, exc)
            return
        for topic, payload in messages:
            self.publish(topic, payload, qos=1, retain=True)

    def _broker_lost(self) -> None:
        d = self.config.daemon
        if d.broker_lost_policy == "continue":
            if self.session_active:
                log.warning("%s: broker lost during a session; policy 'continue': the remote "
                            "e-stop is unavailable until it is back", self.cfg.id)
            return
        if self._grace_timer is None:
            loop = asyncio.get_running_loop()
            self._grace_timer = loop.call_later(d.broker_grace_s, self._grace_expired)

    def _broker_back(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _grace_expired(self) -> None:
        self._grace_timer = None
        ctrl = self.controller
        if ctrl is not None and self.session_active:
            grace = self.config.daemon.broker_grace_s
            log.error("%s: broker unreachable for %g s during a session: stopping", self.cfg.id,
                      grace)
            ctrl.estop(f"MQTT broker unreachable for {grace:g} s", Interlock.BROKER_LOST)

    # ------------------------------------------------------------------ failures
    def emergency(self, detail: str) -> None:
        """An unhandled error in this lane: latch and stop its belt, tell the world."""
        ctrl = self.controller
        if ctrl is not None:
            with contextlib.suppress(Exception):
                ctrl.estop(f"daemon: {detail}", Interlock.INTERNAL_ERROR)
        else:
            self.machine.error(f"daemon: {detail}")
        with contextlib.suppress(Exception):
            self.publish(self.topics.event,
                         bridge.event_payload({"type": "fault", "reason": detail}), qos=1)

    async def supervise(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` forever: an exception stops this lane's belt and restarts ``fn``."""
        backoff = Backoff()
        while True:
            try:
                await fn()
                return
            except Exception as exc:
                log.exception("%s: %s crashed", self.cfg.id, name)
                self.emergency(f"{name} crashed: {exc!r}")
                await asyncio.sleep(backoff.next())

    async def controlled_stop(self) -> None:
        """Shutdown: a controlled stop of this belt; the session ends (``stopped``), is
        closed in the store and announced before the daemon goes offline."""
        ctrl = self.controller
        if ctrl is None:
            await self.settle()
            return
        self._ending_reason = SHUTDOWN_REASON
        with contextlib.suppress(Exception):
            await ctrl.stop(SHUTDOWN_REASON)
        task = ctrl.session_task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=SHUTDOWN_STOP_TIMEOUT_S)
            if not task.done():
                log.error("%s: the session did not end within %g s of the stop: cancelled",
                          self.cfg.id, SHUTDOWN_STOP_TIMEOUT_S)
                ctrl.client.stop_now()
                task.cancel()
                await asyncio.wait([task], timeout=2.0)
        await self.settle()

    async def publish_offline(self) -> None:
        client = self.client
        if client is None:
            return
        with contextlib.suppress(Exception):
            await client.publish(self.topics.status, "offline", qos=1, retain=True, timeout=2.0)


_Handler = Callable[[Lane, Controller, Command], Awaitable[dict[str, Any]]]
#: Command kind -> the lane's handler (bridge.CommandKind is the registry).
_HANDLERS: dict[str, _Handler] = {
    bridge.CommandKind.START: Lane._start,
    bridge.CommandKind.STOP: Lane._stop,
    bridge.CommandKind.PAUSE: Lane._pause,
    bridge.CommandKind.RESUME: Lane._resume,
    bridge.CommandKind.SET: Lane._set,
    bridge.CommandKind.RESET: Lane._reset,
    bridge.CommandKind.HEARTBEAT: Lane._heartbeat,
}


#: The daemon's MQTT clients come from its adapter (treadctl/daemon/mqtt.py).
mqtt_client = mqtt.client


class EstopLink:
    """One extra MQTT connection per daemon that carries nothing but e-stops.

    It subscribes ``<base>/+/cmd/estop`` (every lane's e-stop and the gym-wide one), so a
    flood of other commands to a lane - which fills that lane connection's queue at the
    broker, and a full queue makes the broker *drop* QoS 1 messages, e-stops included -
    never delays or loses an e-stop. The lane connections keep their own e-stop
    subscriptions as the backup path; the second copy of the same message stops again
    (cheap: a latched controller only re-sends Stop) but is not acked twice."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config
        base = self.config.mqtt.base_topic
        self.filter = f"{base}/+/cmd/estop"
        self._head = f"{base}/"
        self._tail = "/cmd/estop"
        self.up = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.handled = 0  # e-stop messages that arrived on this connection

    def _on_estop(self, client: Any, userdata: Any, message: MQTTMessage) -> None:
        topic = message.topic
        tid = topic[len(self._head):-len(self._tail)]
        self.handled += 1
        try:
            if tid == bridge.ALL:
                self.daemon.gym_estop(message.payload, message.properties, source="estop")
                return
            lane = self.daemon.lanes.get(tid)
            if lane is not None:
                lane.estop_now(message.payload, message.properties, source="estop")
        except Exception:
            log.exception("e-stop handling failed for %s", topic)
            for lane in self.daemon.lanes.values():
                if tid in (bridge.ALL, lane.cfg.id):
                    lane.emergency(f"e-stop handling failed for {topic}")

    async def run(self) -> None:
        backoff = Backoff()
        m = self.config.mqtt
        while True:
            client = mqtt_client(self.config, f"{m.client_id}-estop", None)
            mqtt.on_topic(client, self.filter, self._on_estop)
            try:
                async with client:
                    backoff.reset()
                    self.client = client
                    granted = await client.subscribe(self.filter, qos=1)
                    _check_granted("e-stop connection", [self.filter], granted)
                    self.up.set()
                    async for _message in client.messages:
                        pass  # every e-stop is handled in the callback above
            except aiomqtt.MqttError as exc:
                log.warning("e-stop connection: %s", exc)
            finally:
                self.client = None
                self.up.clear()
            await asyncio.sleep(backoff.next())


def merge_limits(site: Limits | None, lane: Limits | None) -> Limits | None:
    """Site limits with a treadmill's own limits on top, field by field: tightest wins."""
    if site is None or lane is None:
        return lane if site is None else site
    merged = site.to_dict()
    for name, value in lane.items():
        if name in merged:
            pick = min if FIELD_BOUNDS[name] == "max" else max
            merged[name] = pick(merged[name], value)
        else:
            merged[name] = value
    return Limits(**merged)


def _check_granted(who: str, filters: list[str], granted: Any) -> None:
    """A subscription the broker refused (ACL) means commands - or e-stops - that never
    arrive: say so loudly."""
    for topic, code in zip(filters, granted or (), strict=False):
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            log.error("%s: the broker refused the subscription to %s (%s): check the ACL",
                      who, topic, code)


#: The two copies of one e-stop message (e-stop connection + lane connection) arrive
#: within this window; the second stops again but is not acked again (``EstopCopies``).
ESTOP_DEDUP_S = 1.0


class EstopCopies:
    """Pairs the two copies of one e-stop message: they arrive on two different connections
    (the e-stop connection and a lane connection). A copy is the second copy when an
    unpaired copy with the same payload arrived on the *other* connection within
    ``ESTOP_DEDUP_S``; two e-stops with the same payload sent one after the other are both
    acked. (Both copies stop the belt; only the ack of the second is left out.)"""

    def __init__(self) -> None:
        self._unpaired: list[tuple[Any, float, str]] = []

    def is_second_copy(self, payload: Any, source: str, now: float) -> bool:
        self._unpaired = [e for e in self._unpaired if now - e[1] < ESTOP_DEDUP_S]
        for i, (other, _t, other_source) in enumerate(self._unpaired):
            if other_source != source and other == payload:
                del self._unpaired[i]
                return True
        self._unpaired.append((payload, now, source))
        return False


def _measured(snap: Snapshot) -> tuple[Any, ...]:
    """What the retained state follows between changes: the belt and the heart rate."""
    return (snap.speed_kmh, snap.incline_pct, str(snap.direction), snap.hr_bpm)


def _hr_picture(snap: Snapshot) -> tuple[Any, ...]:
    """Heart-rate fields the retained state shows at once when they change."""
    return (snap.hr_source, snap.hr_quality, snap.hr_zone_bpm)


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


class Daemon:
    """Run every lane until :meth:`request_stop`; see the module docstring for the order."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        transport_factory: TransportFactory | None = None,
        notify: Notify | None = None,
        watchdog_interval_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.transport_factory = transport_factory or _default_transport
        self.notify = notify or _sd_notify()
        self._watchdog_s = watchdog_interval_s
        self.lanes: dict[str, Lane] = {}
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.aborted_sessions: list[str] = []
        self.store: SessionStore | None = None
        self._gym_estop_copies = EstopCopies()
        self.estop_link = EstopLink(self)
        # One shared subscription per daemon: the broker delivers each gym-wide e-stop to
        # exactly one of our connections. The group name must be a single topic level.
        group = "".join(c if c.isalnum() or c in "-_" else "_" for c in config.mqtt.client_id)
        self.gym_filter = f"$share/{group or 'treadctl'}/{config.mqtt.base_topic}/all/cmd/estop"

    @property
    def clock(self) -> Clock:
        """The one clock of the daemon: its lanes, their controllers and straps run on it
        (injected, else the running loop's, made on first use inside the loop)."""
        if self._clock is None:
            self._clock = LoopClock()
        return self._clock

    def request_stop(self) -> None:
        self._stop.set()

    def recorder_for(self, tm: TreadmillConfig) -> RecorderFactory | None:
        """The recorder factory of one lane: every lane writes into the one shared store."""
        if self.store is None:
            return None
        return controller_recorder_factory(data_dir=self.config.daemon.data_dir,
                                           treadmill_id=tm.id, device=tm.device,
                                           profile=tm.profile, store=self.store)

    def gym_estop(self, payload: Any = b"", properties: Properties | None = None,
                  source: str = "lane") -> None:
        """Gym-wide e-stop: every lane's Stop on the wire first (one tight loop), then every
        latch, then one ack per lane (deferred). Runs synchronously in paho's read callback.

        Repeated arrivals are cheap (one Stop per lane per arrival) and every
        arrival stops again: a gym-wide e-stop is never dropped as a "duplicate"."""
        lanes = list(self.lanes.values())
        sent = [lane.stop_first() for lane in lanes]
        # Every Stop is on the wire: now the payload, for the reason in every latch.
        details = bridge.parse_estop(_payload_bytes(payload), self.config.mqtt.max_payload_bytes)
        now = self.clock.now()
        for lane, stop_sent in zip(lanes, sent, strict=True):
            lane.gym_estop_at = now
            lane.latch(gym=True, stop_sent=stop_sent, note=details.note)
        loop = asyncio.get_running_loop()
        if self._gym_estop_copies.is_second_copy(payload, source, now):
            return  # the same message via the backup path: stopped again, acked once
        log.warning("gym-wide e-stop: %d treadmill(s) stopped", len(lanes))
        for lane in lanes:
            loop.call_soon(functools.partial(lane.estop_ack, details, properties, gym=True))

    def _open_store(self) -> SessionStore | None:
        path = default_db_path(self.config.daemon.data_dir)
        try:
            return SessionStore(path)
        except (StoreError, OSError) as exc:
            # Safety first: the belts still stop and the e-stop still works without a store.
            log.error("session store %s unusable, sessions are NOT recorded: %s", path, exc)
            return None

    async def run(self) -> int:
        self.store = await asyncio.to_thread(self._open_store)
        for tm in self.config.treadmills:
            self.lanes[tm.id] = Lane(self, tm)
        lanes = list(self.lanes.values())
        try:
            # 1. Stop to every treadmill before anything else (Controller.open sends it).
            await asyncio.gather(*(self._first_open(lane) for lane in lanes))
            # 2. Sessions a crash left "running" are closed as aborted (their data kept),
            #    before any lane can start (and record) a new one: no command is read yet.
            self.aborted_sessions = await asyncio.to_thread(self._mark_aborted)
            async with asyncio.TaskGroup() as tg:
                for lane in lanes:
                    tg.create_task(lane.supervise("link", lane.run_link))
                    tg.create_task(lane.supervise("mqtt", lane.run_mqtt))
                    tg.create_task(lane.supervise("commands", lane.run_commands))
                tg.create_task(self._supervise_estop_link())
                watchdog = tg.create_task(self._watchdog())
                # Long-lived start-up objects leave the GC's view: shorter collections, so
                # fewer and shorter pauses in the middle of an e-stop.
                gc.collect()
                gc.freeze()
                self.ready.set()
                self.notify("READY=1")
                self.notify(f"STATUS={self.status_text()}")
                log.info("ready: %d treadmill(s)", len(lanes))
                await self._stop.wait()
                log.info("shutting down: controlled stop of every belt")
                self.notify("STOPPING=1")
                await asyncio.gather(*(lane.controlled_stop() for lane in lanes))
                await asyncio.gather(*(lane.publish_offline() for lane in lanes))
                watchdog.cancel()
                raise _Shutdown()
        except* _Shutdown:
            pass
        finally:
            # Whatever ended us (shutdown, error, cancellation): every belt is told to stop.
            for lane in lanes:
                if lane.controller is not None:
                    lane.controller.client.stop_now()
            await asyncio.gather(*(lane.close_link() for lane in lanes), return_exceptions=True)
            for lane in lanes:
                lane.release_straps()
            store, self.store = self.store, None
            if store is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(store.close)
        return 0

    async def _first_open(self, lane: Lane) -> None:
        try:
            await asyncio.wait_for(lane.open_link(), FIRST_OPEN_TIMEOUT_S)
        except Exception as exc:
            # The lane's supervisor keeps trying with backoff; others are not held up.
            log.warning("%s: not reachable at start (%s); will retry", lane.cfg.id,
                        exc or type(exc).__name__)

    def _mark_aborted(self) -> list[str]:
        if self.store is None:
            return []
        try:
            ids = self.store.mark_running_as_aborted("daemon restarted")
        except Exception as exc:
            log.error("session store: %s", exc)
            return []
        for sid in ids:
            log.warning("session %s was left running by a crash: marked aborted", sid)
        return ids

    async def _supervise_estop_link(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.estop_link.run()
                return
            except Exception:
                log.exception("e-stop connection crashed; the lane connections still carry "
                              "e-stops")
                await asyncio.sleep(backoff.next())

    def status_text(self) -> str:
        lanes = self.lanes.values()
        links = sum(1 for lane in lanes if lane.link_up.is_set())
        brokers = sum(1 for lane in lanes if lane.broker_up.is_set())
        return f"{links}/{len(self.lanes)} treadmills linked, {brokers} broker connections up"

    async def _watchdog(self) -> None:
        interval = self._watchdog_s
        if interval is None:
            try:
                from treadctl.daemon.sdnotify import watchdog_interval_s
            except ImportError:
                return
            interval = watchdog_interval_s()
        period = interval / 2 if interval else 10.0
        last_status = ""
        while True:
            # Reaching this line means the loop is turning: that is what the watchdog checks.
            if interval:
                self.notify("WATCHDOG=1")
            status = self.status_text()
            if status != last_status:
                self.notify(f"STATUS={status}")
                last_status = status
            await asyncio.sleep(period)


class _Shutdown(Exception):
    """Leaves the task group (cancelling every lane task) after an orderly stop."""
