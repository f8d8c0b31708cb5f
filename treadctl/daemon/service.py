"""The gym daemon: many treadmills, one MQTT connection each, supervised and isolated.

Owns the run-time wiring of ``treadctl daemon``:

* one :class:`Lane` per configured treadmill, each with its own supervisor tasks (device
  link with reconnect backoff, MQTT connection with reconnect backoff, command worker). A
  lane's failure is caught, its belt is e-stopped, and the task restarts after a backoff;
  no other lane notices. Each lane has its own MQTT client so that its Last Will *is* its
  ``status`` topic (CONTRACT §4) and a command flood on one lane cannot slow another.
* e-stop topics are intercepted where aiomqtt hands a received message to its queue
  (``queue_type``), i.e. synchronously in the socket read callback, *before* any payload
  parsing, size check, rate limit or queue: ``controller.estop()`` puts the stop on the wire
  in that same call. Other commands are parsed (:mod:`treadctl.daemon.bridge`), rate
  limited by a token bucket and queued (bounded) for the lane's command worker.
* broker outage policy: ``stop`` (default) e-stops a lane whose session is still running
  ``broker_grace_s`` after the broker went away (``Interlock.BROKER_LOST``, latched: the
  remote e-stop must not silently disappear); ``continue`` only logs.
* start-up (Stop to every treadmill, crashed sessions marked aborted, then READY=1),
  watchdog pings, and shutdown (controlled stop of every belt, ``offline``, exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from treadctl.control.controller import ControlError, Controller, Snapshot, State
from treadctl.control.safety import Interlock, Trip
from treadctl.daemon import bridge
from treadctl.daemon.bridge import Command, CommandInvalid, RequestId, Topics
from treadctl.daemon.config import DaemonConfig, TreadmillConfig
from treadctl.limits import FIELD_BOUNDS, Limits
from treadctl.profiles import FirmwareProfile, load_profile
from treadctl.programs import ProgramError, builtin_names, load_builtin, program_from_dict
from treadctl.transport import Transport, open_transport

log = logging.getLogger(__name__)

TransportFactory = Callable[[TreadmillConfig, FirmwareProfile], Transport]
Notify = Callable[[str], bool]

#: States in which a session drives (or may drive) the belt.
_ACTIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.STOPPING})
COMMAND_QUEUE_SIZE = 32
FIRST_OPEN_TIMEOUT_S = 5.0
SHUTDOWN_STOP_TIMEOUT_S = 20.0
MAX_BACKOFF_S = 30.0
#: A link that stayed up this long resets its reconnect backoff.
STABLE_LINK_S = 30.0
#: Nothing received for this long on an open link: rebuild it.
LINK_SILENCE_S = 5.0


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


def _recorder_factory(config: DaemonConfig, tm: TreadmillConfig) -> Any:
    try:
        from treadctl.store.integration import (  # type: ignore[import-not-found,unused-ignore]
            controller_recorder_factory,
        )
    except ImportError:
        # TODO: the store hook is being written; until then sessions are not recorded.
        return None
    return controller_recorder_factory(
        data_dir=config.daemon.data_dir, treadmill_id=tm.id, device=tm.device, profile=tm.profile
    )


@dataclass
class _Queued:
    command: Command
    properties: Properties | None


class Lane:
    """One treadmill: its controller (re-created per link), its MQTT client, its commands."""

    def __init__(self, daemon: Daemon, tm: TreadmillConfig) -> None:
        self.daemon = daemon
        self.cfg = tm
        self.config = daemon.config
        self.profile = load_profile(tm.profile)
        self.topics = Topics(daemon.config.mqtt.base_topic, tm.id)
        self.controller: Controller | None = None
        self.client: aiomqtt.Client | None = None
        #: A latch to re-apply on the next controller (an e-stop that arrived while the link
        #: was down, or a latch that was set when the link went away). Cleared by reset.
        self.pending_trip: Trip | None = None
        self.link_up = asyncio.Event()
        self.broker_up = asyncio.Event()
        self.link_lost = asyncio.Event()
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue(COMMAND_QUEUE_SIZE)
        self.bucket = bridge.TokenBucket(self.config.daemon.command_rate_per_s)
        self.telemetry_period_s = 1.0 / self.config.daemon.telemetry_hz
        self._last_telemetry = -math.inf
        self._last_state: bytes = bridge.disconnected_state("connecting")
        self._grace_timer: asyncio.TimerHandle | None = None
        self._link_reason: str | None = "connecting"
        self.stats = {"estops": 0, "commands": 0, "errors": 0, "rate_limited": 0}

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
            recorder_factory=_recorder_factory(self.config, self.cfg),
        )
        ctrl.state_listeners.append(self._on_state)
        ctrl.telemetry_listeners.append(self._on_telemetry)
        ctrl.event_listeners.append(self._on_event)
        self.link_lost.clear()
        self.controller = ctrl
        try:
            await ctrl.open()
        except BaseException:
            self.controller = None
            with contextlib.suppress(BaseException):
                await ctrl.close()
            raise
        if self.pending_trip is not None:
            # A latch survives reconnects: only an explicit reset clears it.
            trip = self.pending_trip
            ctrl.estop(trip.detail, trip.interlock)
        self._link_reason = None
        self.link_up.set()
        self._publish_state(ctrl.snapshot)

    async def close_link(self) -> None:
        ctrl, self.controller = self.controller, None
        self.link_up.clear()
        if ctrl is None:
            return
        trip = ctrl.latch.trip
        if trip is not None and trip.interlock is not Interlock.LINK_LOST:
            self.pending_trip = trip
        with contextlib.suppress(Exception):
            await ctrl.close()  # commands Stop (if the link still carries anything)

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
                up_since = time.monotonic()
                reason = await self._wait_link_lost()
                log.warning("%s: link lost (%s); reconnecting", self.cfg.id, reason)
                await self.close_link()
                self._link_reason = reason or "link lost"
                self._last_state = bridge.disconnected_state(self._link_reason)
                self._publish_raw_state()
                if time.monotonic() - up_since >= STABLE_LINK_S:
                    backoff.reset()
                await asyncio.sleep(backoff.next())
        finally:
            await self.close_link()

    async def _wait_link_lost(self) -> str | None:
        """Until the transport reports the link lost, or nothing arrived from the treadmill
        for ``LINK_SILENCE_S`` (a link cut by the controller's own escalation, a dead TCP
        peer): either way the link is rebuilt, and a latch carries over."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.link_lost.wait(), 1.0)
            ctrl = self.controller
            if ctrl is None:
                return "link closed"
            if self.link_lost.is_set():
                return ctrl.snapshot.reason
            if loop.time() - ctrl.last_rx > LINK_SILENCE_S:
                return f"no data from the treadmill for {LINK_SILENCE_S:g} s"

    # ------------------------------------------------------------------ controller -> MQTT
    def _on_state(self, snap: Snapshot) -> None:
        if snap.state is State.DISCONNECTED:
            self.link_lost.set()
        self._publish_state(snap)

    def _publish_state(self, snap: Snapshot) -> None:
        self._last_state = bridge.state_payload(snap.as_dict())
        self._publish_raw_state()

    def _publish_raw_state(self) -> None:
        self.publish(self.topics.state, self._last_state, qos=1, retain=True)

    def _on_telemetry(self, snap: Snapshot) -> None:
        now = time.monotonic()
        # 0.8: frames arrive with jitter; a strict period would halve the rate.
        if now - self._last_telemetry < self.telemetry_period_s * 0.8:
            return
        self._last_telemetry = now
        self.publish(self.topics.telemetry, bridge.telemetry_payload(snap.as_dict()), qos=0)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.publish(self.topics.event, bridge.event_payload(event), qos=1)

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
            info = client._client.publish(topic, payload, qos, retain, properties)
        except Exception as exc:
            log.debug("%s: publish failed: %s", self.cfg.id, exc)
            return
        if info.rc != 0:
            log.debug("%s: publish to %s not sent (rc %s)", self.cfg.id, topic, info.rc)

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

    # ------------------------------------------------------------------ MQTT -> controller
    def intercept(self, message: aiomqtt.Message) -> bool:
        """Called for every received message before aiomqtt queues it. E-stops act here."""
        topic = message.topic.value
        if topic == self.topics.estop or topic == self.topics.gym_estop:
            self.estop_now(topic == self.topics.gym_estop, message)
            return True
        return False

    def estop_now(self, gym: bool, message: aiomqtt.Message | None = None) -> None:
        interlock = Interlock.GYM_ESTOP if gym else Interlock.REMOTE_ESTOP
        detail = "gym-wide e-stop (MQTT)" if gym else "e-stop (MQTT)"
        ctrl = self.controller
        if ctrl is not None and self.link_up.is_set():
            ctrl.estop(detail, interlock)  # the stop frame is on the wire when this returns
        elif self.pending_trip is None:
            self.pending_trip = Trip(interlock, detail + " while the link was down")
        self.stats["estops"] += 1
        # Only now look at the payload, for the ack: any payload at all has already stopped.
        payload = _payload_bytes(message.payload) if message is not None else b""
        reason, rid = bridge.estop_details(payload, self.config.mqtt.max_payload_bytes)
        props = message.properties if message is not None else None
        self.reply(
            bridge.ack("estop", rid, reason=reason, scope="all" if gym else self.cfg.id), props
        )

    def on_message(self, message: aiomqtt.Message) -> None:
        kind = self.topics.command_of(message.topic.value)
        if kind is None:
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
        if not self.bucket.take(time.monotonic()):
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited"), props)
            return
        try:
            self.queue.put_nowait(_Queued(cmd, props))
        except asyncio.QueueFull:
            self.stats["rate_limited"] += 1
            self.reply(bridge.error(kind, cmd.request_id, "rate limited (queue full)"), props)

    async def run_commands(self) -> None:
        while True:
            item = await self.queue.get()
            cmd = item.command
            self.stats["commands"] += 1
            try:
                event = await self.execute(cmd)
            except (ControlError, ProgramError) as exc:
                event = bridge.error(cmd.kind, cmd.request_id, str(exc))
            except Exception as exc:
                log.exception("%s: command %s failed", self.cfg.id, cmd.kind)
                event = bridge.error(cmd.kind, cmd.request_id, f"internal error: {exc!r}")
            self.reply(event, item.properties)

    async def execute(self, cmd: Command) -> dict[str, Any]:
        """Carry out a validated command; ControlError/ProgramError become error events."""
        ctrl = self.controller
        rid: RequestId = cmd.request_id
        if cmd.kind == "reset" and ctrl is None:
            if self.pending_trip is None:
                raise ControlError("treadmill is disconnected")
            self.pending_trip = None
            return bridge.ack("reset", rid, reason=cmd.reason)
        if ctrl is None or not self.link_up.is_set():
            raise ControlError(f"treadmill is disconnected ({self._link_reason or 'link down'})")
        if cmd.kind == "start":
            program = _resolve_program(cmd.program)
            ctrl.start(program)
            return bridge.ack("start", rid, program=program.name,
                              session_id=ctrl.snapshot.session_id)
        if cmd.kind == "stop":
            await ctrl.stop()
            return bridge.ack("stop", rid)
        if cmd.kind == "pause":
            ctrl.pause()
            return bridge.ack("pause", rid)
        if cmd.kind == "resume":
            ctrl.resume()
            return bridge.ack("resume", rid)
        if cmd.kind == "set":
            ctrl.set_manual(speed_kmh=cmd.speed_kmh, incline_pct=cmd.incline_pct)
            return bridge.ack("set", rid, speed_kmh=cmd.speed_kmh, incline_pct=cmd.incline_pct)
        if cmd.kind == "reset":
            ctrl.reset(cmd.reason or "reset")
            self.pending_trip = None
            return bridge.ack("reset", rid, reason=cmd.reason)
        if cmd.kind == "heartbeat":
            ctrl.heartbeat()
            return bridge.ack("heartbeat", rid)
        raise ControlError(f"unknown command {cmd.kind!r}")

    # ------------------------------------------------------------------ broker
    def _make_client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        lane = self

        class _EstopFirstQueue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                try:
                    if lane.intercept(item):
                        return
                except Exception:
                    log.exception("%s: e-stop handling failed", lane.cfg.id)
                    lane.emergency(f"e-stop handling failed for {item.topic.value}")
                    return
                super().put_nowait(item)

        tls_context: ssl.SSLContext | None = None
        if m.tls is not None:
            tls_context = ssl.create_default_context(cafile=m.tls.ca_file)
            if m.tls.cert_file is not None:
                tls_context.load_cert_chain(m.tls.cert_file, m.tls.key_file)
            if m.tls.insecure:
                tls_context.check_hostname = False
        return aiomqtt.Client(
            m.host,
            m.port,
            username=m.username,
            password=m.password,
            identifier=f"{m.client_id}-{self.cfg.id}",
            queue_type=_EstopFirstQueue,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self.topics.status, "offline", qos=1, retain=True),
            keepalive=m.keepalive_s,
            timeout=10.0,
            tls_context=tls_context,
            tls_insecure=m.tls.insecure if m.tls is not None else None,
        )

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
                    await client.subscribe(
                        [(self.topics.commands, opts), (self.topics.gym_estop, opts)]
                    )
                    self.publish(self.topics.status, "online", qos=1, retain=True)
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
        try:
            from treadctl.daemon.discovery import discovery_messages
        except ImportError:
            log.warning("Home Assistant discovery module missing; not publishing discovery")
            return
        for topic, payload in discovery_messages(
            self.cfg.id,
            base_topic=self.config.mqtt.base_topic,
            node_id=self.config.mqtt.client_id,
            programs=builtin_names(),
            prefix=ha.prefix,
        ):
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
        elif self.pending_trip is None:
            self.pending_trip = Trip(Interlock.INTERNAL_ERROR, f"daemon: {detail}")
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
        ctrl = self.controller
        if ctrl is None:
            return
        with contextlib.suppress(Exception):
            await ctrl.stop()
        task = ctrl.session_task
        if task is not None and not task.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_STOP_TIMEOUT_S)

    async def publish_offline(self) -> None:
        client = self.client
        if client is None:
            return
        with contextlib.suppress(Exception):
            await client.publish(self.topics.status, "offline", qos=1, retain=True, timeout=2.0)


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
    ) -> None:
        self.config = config
        self.transport_factory = transport_factory or _default_transport
        self.notify = notify or _sd_notify()
        self._watchdog_s = watchdog_interval_s
        self.lanes: dict[str, Lane] = {}
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.aborted_sessions: list[str] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        for tm in self.config.treadmills:
            self.lanes[tm.id] = Lane(self, tm)
        lanes = list(self.lanes.values())
        try:
            # 1. Stop to every treadmill before anything else (Controller.open sends it).
            await asyncio.gather(*(self._first_open(lane) for lane in lanes))
            # 2. Sessions a crash left "running" are closed as aborted (their data kept).
            self.aborted_sessions = await asyncio.to_thread(self._mark_aborted)
            async with asyncio.TaskGroup() as tg:
                for lane in lanes:
                    tg.create_task(lane.supervise("link", lane.run_link))
                    tg.create_task(lane.supervise("mqtt", lane.run_mqtt))
                    tg.create_task(lane.supervise("commands", lane.run_commands))
                watchdog = tg.create_task(self._watchdog())
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
        return 0

    async def _first_open(self, lane: Lane) -> None:
        try:
            await asyncio.wait_for(lane.open_link(), FIRST_OPEN_TIMEOUT_S)
        except Exception as exc:
            # The lane's supervisor keeps trying with backoff; others are not held up.
            log.warning("%s: not reachable at start (%s); will retry", lane.cfg.id,
                        exc or type(exc).__name__)

    def _mark_aborted(self) -> list[str]:
        try:
            from treadctl.store.db import SessionStore, default_db_path

            with SessionStore(default_db_path(self.config.daemon.data_dir)) as store:
                ids = store.mark_running_as_aborted("daemon restarted: session interrupted")
        except Exception as exc:
            log.error("session store: %s", exc)
            return []
        for sid in ids:
            log.warning("session %s was left running by a crash: marked aborted", sid)
        return ids

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
