"""One treadmill's lane (:class:`Lane`): its device link, supervised (reconnect with
backoff, a link silent for ``LINK_SILENCE_S`` rebuilt, a latch carried over), its broker
connection (its Last Will is its ``status``; the broker-outage policy), and the
supervision of its tasks. The layers below it: :mod:`treadctl.daemon.lane_state`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from treadctl.control.controller import SHUTDOWN_REASON, Controller
from treadctl.daemon import info, mqtt
from treadctl.daemon.commands import LaneCommands
from treadctl.daemon.config import TreadmillConfig
from treadctl.daemon.lane_state import log, merge_limits
from treadctl.profiles import FirmwareProfile
from treadctl.transport import Transport, open_transport

if TYPE_CHECKING:
    from treadctl.daemon.lifecycle import Daemon

TransportFactory = Callable[[TreadmillConfig, FirmwareProfile], Transport]
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


def _check_granted(who: str, filters: list[str], granted: Any) -> None:
    """A subscription the broker refused (ACL) means commands - or e-stops - that never
    arrive: say so loudly."""
    for topic, code in zip(filters, granted or (), strict=False):
        value = getattr(code, "value", code)
        if isinstance(value, int) and value >= 0x80:
            log.error("%s: the broker refused the subscription to %s (%s): check the ACL",
                      who, topic, code)


class Lane(LaneCommands):
    """One treadmill: its controller (re-created per link), its MQTT client, its commands."""

    def __init__(self, daemon: Daemon, tm: TreadmillConfig) -> None:
        super().__init__(daemon, tm)
        self.recorder = self._record if self._record_factory is not None else None
        self.strap = self._bind_strap(tm.hr)

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
                        self.show_disconnected()
                        await asyncio.sleep(backoff.next())
                        continue
                up_since = self.now()
                reason = await self._wait_link_lost()
                log.warning("%s: link lost (%s); reconnecting", self.cfg.id, reason)
                await self.close_link(f"link lost ({reason or 'link closed'})")
                self._link_reason = reason or "link lost"
                self.show_disconnected()
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

    # ------------------------------------------------------------------ broker
    def _make_client(self) -> mqtt.Client:
        m = self.config.mqtt
        client = mqtt.client(self.config, f"{m.client_id}-{self.cfg.id}",
                             mqtt.will(self.topics.status, "offline"))
        # E-stops bypass the client's message queue entirely: paho calls these for matching
        # topics (instead of the client's on_message) right where it decoded the PUBLISH.
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
                    subs = [self.topics.commands, self.daemon.gym_filter]
                    if self.config.homeassistant.enabled:
                        subs.append(f"{self.config.homeassistant.prefix}/status")
                    granted = await mqtt.subscribe(client, subs, qos=1)
                    _check_granted(f"{self.cfg.id}", subs, granted)
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
            except mqtt.MqttError as exc:
                log.warning("%s: broker: %s", self.cfg.id, exc)
            finally:
                self.client = None
                self.broker_up.clear()
                if connected:
                    self._broker_lost()
            await asyncio.sleep(backoff.next())

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
        if ctrl is None:
            return
        # The safety machine decides: broker-lost trips only while a session drives the belt.
        grace = self.config.daemon.broker_grace_s
        if ctrl.broker_unreachable(f"MQTT broker unreachable for {grace:g} s"):
            log.error("%s: broker unreachable for %g s during a session: stopping", self.cfg.id,
                      grace)

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
