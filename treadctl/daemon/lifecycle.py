"""The daemon's lifecycle (:class:`Daemon`): start-up (Stop to every treadmill, crashed
sessions marked aborted, then READY=1), the lanes and the e-stop connection under
supervision, the gym-wide e-stop, the systemd watchdog, and shutdown (a controlled stop of
every belt, ``offline``, exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import Callable
from typing import Any

from treadctl.clock import Clock, LoopClock
from treadctl.daemon import bridge, mqtt
from treadctl.daemon.commands import _payload_bytes
from treadctl.daemon.config import DaemonConfig, TreadmillConfig
from treadctl.daemon.lane import Backoff, Lane, TransportFactory, _check_granted, _default_transport
from treadctl.daemon.lane_state import EstopCopies, log
from treadctl.store.db import SessionStore, StoreError, default_db_path
from treadctl.store.integration import RecorderFactory, controller_recorder_factory

Notify = Callable[[str], bool]
FIRST_OPEN_TIMEOUT_S = 5.0


def _noop_notify(state: str) -> bool:
    return False


def _sd_notify() -> Notify:
    try:
        from treadctl.daemon import sdnotify
    except ImportError:  # pragma: no cover - the module ships with the daemon
        return _noop_notify
    return sdnotify.notify


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
        self.client: mqtt.Client | None = None
        self.handled = 0  # e-stop messages that arrived on this connection

    def _on_estop(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
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
            client = mqtt.client(self.config, f"{m.client_id}-estop", None)
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
            except mqtt.MqttError as exc:
                log.warning("e-stop connection: %s", exc)
            finally:
                self.client = None
                self.up.clear()
            await asyncio.sleep(backoff.next())


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

    def gym_estop(self, payload: Any = b"", properties: mqtt.Properties | None = None,
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
