"""The dashboard's MQTT side: one client of the public contract (docs/mqtt.md).

It subscribes to every lane's ``status``, ``state``, ``telemetry`` and ``event`` (per site,
under the site's prefix when the lanes are seen through a central broker), keeps one
:class:`Lane` per treadmill, and pushes changed lanes to the browsers: state, status and
event changes at once, telemetry batched to at most one push per ``TELEMETRY_BATCH_S``.
Commands go out as QoS 1, never retained; the reply (the daemon's ``ack``/``error``
event with the same ``request_id``) is awaited for the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from treadctl.daemon import mqtt
from treadctl.dashboard.config import DashboardConfig, Site

log = logging.getLogger("treadctl.dashboard")

#: Telemetry pushes at most this often. 0.25 s was measured too: fewer, bigger pushes made
#: the page's frames longer and the fleet's click -> Stop tail worse (docs/fleet.md).
TELEMETRY_BATCH_S = 0.1
#: A running lane with no telemetry for this long is shown as "no telemetry".
STALE_S = 3.0
HISTORY_PER_LANE = 20
URGENT_STATE_FIELDS = ("state", "latched", "reason", "program", "segment", "direction",
                       "session_id")
COMMANDS = ("start", "stop", "pause", "resume", "set", "estop", "reset")


@dataclass
class Lane:
    site: Site
    id: str
    status: str = "unknown"
    state: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    telemetry_at: float = 0.0
    link: dict[str, Any] = field(default_factory=dict)
    last_event: dict[str, Any] | None = None
    notes: deque[str] = field(default_factory=lambda: deque(maxlen=5))
    finished: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_PER_LANE))
    program_total_s: float | None = None
    program_name: str | None = None
    segment_count: int | None = None
    dropped_seen: int = 0
    #: The daemon's retained ``info`` (profile, protocol, can_reverse, rear_facing, limits).
    info: dict[str, Any] | None = None
    #: A rear-facing turn waiting for its confirmation (``turn-around`` event): what the
    #: user is asked; cleared by ``turn-confirmed`` and by the session's end.
    turn: str | None = None

    @property
    def key(self) -> str:
        return f"{self.site.name}/{self.id}"

    def view(self, now: float, bridge_up: bool | None, capabilities: dict[str, Any]
             ) -> dict[str, Any]:
        st = self.state
        tel = self.telemetry
        running = st.get("state") in ("running", "paused", "starting", "stopping")
        fresh = now - self.telemetry_at < STALE_S
        speed = tel.get("speed_kmh") if fresh and tel else st.get("speed_kmh")
        direction = (tel.get("direction") if fresh and tel else None) or st.get("direction")
        elapsed = tel.get("elapsed_s") if tel else None
        time_left = None
        if (running and self.program_total_s is not None and elapsed is not None
                and st.get("program") == self.program_name):
            time_left = max(0.0, self.program_total_s - float(elapsed))
        warnings: list[str] = []
        if self.status == "offline":
            warnings.append("daemon offline")
        if bridge_up is False:
            warnings.append("site link down: values may be old")
        if st.get("latched"):
            warnings.append(f"latched: {st.get('reason') or 'e-stop'}")
        elif st.get("state") == "fault":
            warnings.append(f"fault: {st.get('reason')}")
        elif st.get("state") == "disconnected":
            warnings.append(f"treadmill link down: {st.get('reason') or ''}".strip(": "))
        if running and not fresh and self.status == "online":
            warnings.append("no telemetry")
        quality = tel.get("hr_quality") or st.get("hr_quality")
        if quality in ("unreliable", "lost"):
            warnings.append(f"heart rate {quality}")
        dropped = int(self.link.get("dropped", 0) or 0)
        if dropped:
            warnings.append(f"{dropped} corrupted frames dropped")
        if self.turn and st.get("state") == "paused":
            warnings.append(f"turn-around: {self.turn} (Resume confirms)")
        warnings.extend(self.notes)
        return {
            "key": self.key, "site": self.site.name, "id": self.id, "status": self.status,
            "state": st.get("state", "unknown"), "latched": bool(st.get("latched")),
            "reason": st.get("reason"), "program": st.get("program"),
            "segment": st.get("segment"), "segments": self.segment_count,
            "direction": direction or "forward", "speed_kmh": speed,
            "target_speed_kmh": st.get("target_speed_kmh"),
            "incline_pct": (tel.get("incline_pct") if fresh and tel else st.get("incline_pct")),
            "hr_bpm": tel.get("hr_bpm") if fresh and tel else st.get("hr_bpm"),
            "hr_source": tel.get("hr_source") or st.get("hr_source"),
            "distance_m": tel.get("distance_m"), "elapsed_s": elapsed,
            "time_left_s": time_left, "session_id": st.get("session_id"),
            "link": self.link, "warnings": warnings,
            "last_event": self.last_event, **capabilities,
        }


class Hub:
    """Lanes, browsers (listeners) and the one MQTT connection."""

    def __init__(self, config: DashboardConfig,
                 capabilities: Callable[[Site, str], dict[str, Any]] | None = None) -> None:
        self.config = config
        self.lanes: dict[str, Lane] = {}
        self.bridges: dict[str, bool | None] = {s.name: None for s in config.sites}
        self.client: mqtt.Client | None = None
        self.connected = asyncio.Event()
        self.listeners: set[asyncio.Queue[bytes]] = set()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._dirty: set[str] = set()
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._capabilities = capabilities or (lambda site, lane: {})
        self.stats = {"messages": 0, "pushes": 0}
        self.on_finished: Callable[[Lane, dict[str, Any]], None] | None = None
        self._prefixes = sorted(((s.prefix + config.base_topic + "/", s) for s in config.sites),
                                key=lambda p: -len(p[0]))

    # ------------------------------------------------------------------ browsers
    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "sites": [{"name": s.name, "bridge_up": self.bridges.get(s.name)}
                      for s in self.config.sites],
            "broker": self.connected.is_set(),
            "lanes": [self._view(lane, now) for lane in self._sorted()],
        }

    def _sorted(self) -> list[Lane]:
        order = {s.name: i for i, s in enumerate(self.config.sites)}
        return sorted(self.lanes.values(), key=lambda ln: (order.get(ln.site.name, 0),
                                                           _natural(ln.id)))

    def _view(self, lane: Lane, now: float) -> dict[str, Any]:
        return lane.view(now, self.bridges.get(lane.site.name),
                         self._capabilities(lane.site, lane.id))

    def listen(self) -> asyncio.Queue[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue(maxsize=256)
        self.listeners.add(q)
        return q

    def unlisten(self, q: asyncio.Queue[bytes]) -> None:
        self.listeners.discard(q)

    def push(self, kind: str, data: Any) -> None:
        frame = f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        self.stats["pushes"] += 1
        for q in list(self.listeners):
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:
                # A browser that does not read: drop it; its EventSource reconnects and
                # starts again from a full snapshot.
                self.listeners.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(b"")

    def _mark(self, key: str, urgent: bool) -> None:
        self._dirty.add(key)
        loop = asyncio.get_running_loop()
        if urgent:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_handle = loop.call_soon(self._flush)
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(TELEMETRY_BATCH_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._dirty:
            return
        now = time.monotonic()
        lanes = [self._view(self.lanes[k], now) for k in sorted(self._dirty) if k in self.lanes]
        self._dirty.clear()
        if self.listeners:
            self.push("lanes", lanes)

    # ------------------------------------------------------------------ MQTT in
    def _split(self, topic: str) -> tuple[Site, str, str] | None:
        for prefix, site in self._prefixes:
            if topic.startswith(prefix):
                rest = topic[len(prefix):].split("/")
                if len(rest) == 2 and rest[0] != "all":
                    return site, rest[0], rest[1]
                return None
        return None

    def handle(self, topic: str, payload: bytes) -> None:
        self.stats["messages"] += 1
        for site in self.config.sites:
            if site.bridge_topic and topic == site.bridge_topic:
                self.bridges[site.name] = payload.strip() == b"1"
                self.push("sites", [{"name": s.name, "bridge_up": self.bridges.get(s.name)}
                                    for s in self.config.sites])
                for lane in self.lanes.values():
                    if lane.site is site:
                        self._mark(lane.key, True)
                return
        parts = self._split(topic)
        if parts is None:
            return
        site, lane_id, kind = parts
        key = f"{site.name}/{lane_id}"
        found = self.lanes.get(key)
        if found is None:
            if not payload:
                return  # a cleared retained message for a lane we never saw
            found = self.lanes[key] = Lane(site, lane_id)
        lane = found
        if kind == "status":
            lane.status = payload.decode(errors="replace").strip() or "unknown"
            self._mark(key, True)
            return
        if kind == "info":
            lane.info = _info(payload)
            self._mark(key, True)
            return
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if kind == "state":
            old = lane.state
            lane.state = data
            if isinstance(data.get("link"), dict):
                lane.link = data["link"]
            changed = any(old.get(k) != data.get(k) for k in URGENT_STATE_FIELDS)
            if changed and data.get("state") in ("idle", "estopped"):
                lane.telemetry = {}
            self._learn_program(lane, data.get("program"))
            # A new state, latch, program or segment goes out at once; a refresh of the
            # measured values (the daemon follows the belt) rides with the telemetry batch.
            self._mark(key, changed)
        elif kind == "telemetry":
            lane.telemetry = data
            lane.telemetry_at = time.monotonic()
            if isinstance(data.get("link"), dict):
                lane.link = data["link"]
            self._mark(key, False)
        elif kind == "event":
            self._on_event(lane, data)

    def _learn_program(self, lane: Lane, name: Any) -> None:
        if not isinstance(name, str) or name == lane.program_name:
            return
        from treadctl.programs.model import ProgramError, builtin_names, load_builtin

        lane.program_name = name
        lane.program_total_s = lane.segment_count = None
        if name in builtin_names():
            with contextlib.suppress(ProgramError):
                program = load_builtin(name)
                lane.program_total_s = program.total_duration_s
                lane.segment_count = len(program.segments)

    def remember_program(self, site: Site, lane_id: str, program: Any) -> None:
        """An inline program started from here: its length, for the time-left column."""
        lane = self.lanes.get(f"{site.name}/{lane_id}")
        if lane is not None:
            lane.program_name = program.name
            lane.program_total_s = program.total_duration_s
            lane.segment_count = len(program.segments)

    def _on_event(self, lane: Lane, data: dict[str, Any]) -> None:
        rid = data.get("request_id")
        if isinstance(rid, str) and data.get("type") in ("ack", "error"):
            fut = self._pending.pop(f"{lane.key}|{rid}", None)
            if fut is not None and not fut.done():
                fut.set_result(data)
        kind = data.get("type")
        if kind in ("ack", "command", "segment"):
            # Frequent and shown elsewhere: acks answer the browser's request directly.
            lane.last_event = data
            self._mark(lane.key, False)
            return
        lane.last_event = data
        if kind == "turn-around":
            lane.turn = str(data.get("message") or f"face {data.get('face')}")
        elif kind in ("turn-confirmed", "finished", "estop", "reset"):
            lane.turn = None
        if kind == "ftms-deviation":
            lane.notes.append(f"machine deviates from FTMS: {data.get('deviation')}")
        elif kind == "fault":
            lane.notes.append(f"fault: {data.get('reason') or data.get('fault')}")
        elif kind == "finished":
            lane.finished.appendleft(data)
            if self.on_finished is not None:
                self.on_finished(lane, data)
        elif kind == "reset":
            lane.notes.clear()
        self.push("event", {"lane": lane.key, "event": data})
        self._mark(lane.key, True)

    # ------------------------------------------------------------------ MQTT out
    def topic(self, site: Site, lane_id: str, command: str) -> str:
        return f"{site.prefix}{self.config.base_topic}/{lane_id}/cmd/{command}"

    def publish_now(self, topic: str, payload: bytes) -> bool:
        """QoS 1, not retained, handed to paho at once (no await: the e-stop path)."""
        client = self.client
        if client is None or not self.connected.is_set():
            return False
        return mqtt.publish_nowait(client, topic, payload, 1, False, None) == 0

    async def command(self, site: Site, lane_id: str, command: str, body: dict[str, Any],
                      wait: bool = True) -> dict[str, Any]:
        """Publish ``command`` to one lane; its ack/error event (or a local error)."""
        rid = body.setdefault("request_id", f"dash-{secrets.token_hex(6)}")
        key = f"{site.name}/{lane_id}|{rid}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if wait:
            self._pending[key] = fut
        payload = json.dumps(body).encode()
        if not self.publish_now(self.topic(site, lane_id, command), payload):
            self._pending.pop(key, None)
            return {"type": "error", "command": command, "request_id": rid,
                    "error": "the dashboard is not connected to the broker; command not sent"}
        if not wait:
            return {"type": "sent", "command": command, "request_id": rid}
        try:
            return await asyncio.wait_for(fut, self.config.reply_timeout_s)
        except TimeoutError:
            return {"type": "error", "command": command, "request_id": rid,
                    "error": f"no reply from the daemon within {self.config.reply_timeout_s:g} s "
                             "(sent; is the daemon online?)"}
        finally:
            self._pending.pop(key, None)

    # ------------------------------------------------------------------ connection
    def _make_client(self) -> mqtt.Client:
        m = self.config.mqtt
        ctx = None
        if m.ca_file or m.cert_file:
            ctx = ssl.create_default_context(cafile=m.ca_file)
            if m.cert_file:
                ctx.load_cert_chain(m.cert_file, m.key_file)
        # MQTT v5, Nagle off (docs/daemon.md advises back-ends): a click's command must not
        # wait ~40 ms behind a delayed ACK.
        return mqtt.plain_client(m.host, m.port, username=m.username, password=m.password,
                                 identifier=m.client_id, keepalive=m.keepalive_s,
                                 tls_context=ctx)

    async def run(self) -> None:
        """Connect, subscribe, read; reconnect with backoff (1 s doubling to 30 s)."""
        backoff = 1.0
        while True:
            client = self._make_client()
            try:
                async with client:
                    self.client = client
                    for site in self.config.sites:
                        base = f"{site.prefix}{self.config.base_topic}/+/"
                        for kind, qos in (("status", 1), ("info", 1), ("state", 1),
                                          ("event", 1), ("telemetry", 0)):
                            await client.subscribe(base + kind, qos=qos)
                        if site.bridge_topic:
                            await client.subscribe(site.bridge_topic, qos=1)
                    self.connected.set()
                    self.push("broker", {"up": True})
                    log.info("connected to %s:%s", self.config.mqtt.host, self.config.mqtt.port)
                    backoff = 1.0
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes):
                            payload = str(payload or "").encode()
                        self.handle(message.topic.value, payload)
            except mqtt.MqttError as exc:
                log.warning("broker %s:%s: %s; retrying in %.0f s", self.config.mqtt.host,
                            self.config.mqtt.port, exc, backoff)
            finally:
                self.client = None
                if self.connected.is_set():
                    self.connected.clear()
                    self.push("broker", {"up": False})
            await asyncio.sleep(backoff)
            backoff = min(30.0, backoff * 2)


def _info(payload: bytes) -> dict[str, Any] | None:
    """A lane's ``info`` (docs/daemon.md, "Lane capabilities"); None when cleared or not
    understood (the dashboard then falls back to its own config)."""
    try:
        data = json.loads(payload) if payload else None
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
        return None
    if not isinstance(data.get("limits"), dict):
        data["limits"] = {}
    return data


def _natural(text: str) -> tuple[Any, ...]:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))
