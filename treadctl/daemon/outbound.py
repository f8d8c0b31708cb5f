"""Controller -> MQTT for one lane: the retained state (following the belt and the heart
rate), telemetry, events, the one reply per command (MQTT v5 request/response too), Home
Assistant discovery, and the lane's emergency. Nothing here awaits the broker: every
message is handed to paho at once (:func:`treadctl.daemon.mqtt.publish_nowait`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from treadctl.control.controller import Snapshot, State
from treadctl.daemon import bridge, info, mqtt
from treadctl.daemon.lane_state import _ACTIVE, LaneState, log
from treadctl.programs import builtin_names
from treadctl.transport import Transport

#: Telemetry carries the link counters this often (they change slowly; keep payloads small).
LINK_TELEMETRY_S = 10.0
#: How often the link counters are checked for new drops (logged as a warning).
LINK_CHECK_S = 1.0
#: The retained ``state`` follows the measured belt (speed, incline, direction) and the heart
#: rate at most this often between state changes; reaching standstill is published at once.
STATE_REFRESH_S = 1.0
#: ``hr_bpm`` in the retained state follows the heart rate in steps: a refresh for the heart
#: rate alone waits until it has moved this far from the one shown (bpm). The moving number
#: is telemetry's (4 Hz, every value; Home Assistant's "Heart rate" reads it there); the
#: state shows a reading within this of it, and at once whether there is one at all (a
#: change of source, quality or zone, or ``hr_bpm`` becoming null or a number).
STATE_HR_STEP_BPM = 5


def _link_counters(transport: Transport) -> dict[str, int]:
    try:
        return dict(transport.counters)
    except Exception:  # counters are diagnostics: never let them take a lane down
        return {}


def _measured(snap: Snapshot) -> tuple[Any, ...]:
    """What the retained state follows between changes: the measured belt."""
    return (snap.speed_kmh, snap.incline_pct, snap.direction)


def _hr_picture(snap: Snapshot) -> tuple[Any, ...]:
    """Heart-rate fields the retained state shows at once when they change: the source, the
    quality, the zone, and whether there is a trusted reading at all."""
    return (snap.hr_source, snap.hr_quality, snap.hr_zone_bpm, snap.hr_bpm is None)


class LaneOutbound(LaneState):
    """Controller -> MQTT (see the module docstring)."""

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
        # One state in flight at a time: the belt and heart-rate follow (_follow_belt) waits
        # until this one is encoded (a change of state and a telemetry frame in the same
        # step would otherwise publish the same picture twice).
        self._state_measured = None
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
        self._state_bpm = snap.hr_bpm
        self._state_at = self.now()
        return bridge.state_payload(fields, link=self.link)

    def _follow_belt(self, snap: Snapshot) -> None:
        """Keep the retained state's measured fields true between state changes: after an
        e-stop the belt still runs down, and a state taken at the latch would go on saying
        so. Republished at most every ``STATE_REFRESH_S`` when the belt moved, and at once
        at standstill. The heart rate: at once when its source, quality or zone changes or
        the reading comes or goes; its number only once it moved ``STATE_HR_STEP_BPM`` (a
        heart's wobble of a bpm or two is telemetry's, not a reason to rewrite the retained
        state of every lane once a second)."""
        last = self._state_measured
        if last is None:
            return
        hr = _hr_picture(snap)
        if hr != self._state_hr:
            at_once = True
        else:
            shown, bpm = self._state_bpm, snap.hr_bpm
            hr_moved = (bpm is not None and shown is not None
                        and abs(bpm - shown) >= STATE_HR_STEP_BPM)
            if not hr_moved and _measured(snap) == last:
                return
            at_once = snap.speed_kmh == 0.0 and last[0] != 0.0
        if not at_once and self.now() - self._state_at < STATE_REFRESH_S:
            return
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

    def _publish_event_now(self, event: dict[str, Any]) -> None:
        self._publish_now(self.topics.event, bridge.event_payload(event), 1, False, None)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool = False,
        properties: mqtt.Properties | None = None,
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
                     properties: mqtt.Properties | None) -> None:
        client = self.client
        if client is None:
            return
        try:
            # The adapter's paho client: its publish is synchronous and loop-safe here (the
            # socket callbacks run in this loop).
            rc = mqtt.publish_nowait(client, topic, payload, qos, retain, properties)
        except Exception as exc:
            log.debug("%s: publish failed: %s", self.cfg.id, exc)
            return
        if rc != 0:
            log.debug("%s: publish to %s not sent (rc %s)", self.cfg.id, topic, rc)

    def reply(self, event: dict[str, Any], properties: mqtt.Properties | None) -> None:
        """The one ack/error of a command: on ``event`` and, with MQTT v5 request/response,
        also on the response topic with the request's correlation data."""
        if event["type"] == "error":
            self.stats["errors"] += 1
            log.info("%s: %s rejected: %s", self.cfg.id, event.get("command"), event["error"])
        payload = bridge.event_payload(event)
        self.publish(self.topics.event, payload, qos=1)
        response = mqtt.response_to(properties)
        if response is not None:
            response_topic, props = response
            self.publish(response_topic, payload, qos=1, properties=props)
        while self._after_reply:
            self.publish_event(self._after_reply.pop(0))

    def after_reply(self, event: dict[str, Any]) -> None:
        self._after_reply.append(event)

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

    # ------------------------------------------------------------------ failures
    def emergency(self, detail: str) -> None:
        """An unhandled error in this lane: latch and stop its belt, tell the world."""
        ctrl = self.controller
        if ctrl is not None:
            with contextlib.suppress(Exception):
                ctrl.fault(f"daemon: {detail}")
        else:
            self.machine.error(f"daemon: {detail}")
        with contextlib.suppress(Exception):
            self.publish(self.topics.event,
                         bridge.event_payload({"type": "fault", "reason": detail}), qos=1)
