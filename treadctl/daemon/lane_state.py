"""A lane's state: what one treadmill's lane holds (the base of the lane's layers).

The lane is one class built in layers, each a module that uses only the layers below it:

* :mod:`treadctl.daemon.lane_state` - every attribute (set once in ``__init__``), the
  lane's clock and the small value types (a queued command, the e-stop copy filter);
* :mod:`treadctl.daemon.outbound` - controller -> MQTT: state, telemetry, events, replies,
  Home Assistant discovery, the lane's emergency;
* :mod:`treadctl.daemon.sessions` - each session's recording and its one ``finished``;
* :mod:`treadctl.daemon.straps` - the heart-rate straps (the lane's and a session's);
* :mod:`treadctl.daemon.commands` - MQTT -> controller: the e-stop fast path, intake, the
  stop that leaves first, the worker and the table from command kind to handler;
* :mod:`treadctl.daemon.lane` - :class:`~treadctl.daemon.lane.Lane`: link supervision and
  the broker connection.

Only :mod:`treadctl.daemon.mqtt` (and its client, ``mqtt_client``) touches paho.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from treadctl.control.controller import Controller, SessionResult, State
from treadctl.control.machine import SafetyMachine
from treadctl.daemon import bridge, info, mqtt
from treadctl.daemon.bridge import Command, Topics
from treadctl.daemon.config import TreadmillConfig
from treadctl.daemon.ratelimit import TokenBucket
from treadctl.limits import FIELD_BOUNDS, Limits
from treadctl.profiles import load_profile
from treadctl.programs.model import Program
from treadctl.store.integration import RecorderFactory

if TYPE_CHECKING:
    from treadctl.daemon.lifecycle import Daemon
    from treadctl.daemon.sessions import SessionRecord

log = logging.getLogger("treadctl.daemon.service")


#: States in which a session drives (or may drive) the belt.
_ACTIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.STOPPING})
COMMAND_QUEUE_SIZE = 32


#: The two copies of one e-stop message (e-stop connection + lane connection) arrive
#: within this window; the second stops again but is not acked again (``EstopCopies``).
ESTOP_DEDUP_S = 1.0


@dataclass
class Queued:
    command: Command
    properties: mqtt.Properties | None


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


class LaneState:
    """One treadmill's lane: its attributes (the layers above read and change them)."""

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
        self.client: mqtt.Client | None = None
        #: The lane's safety machine (states, latch, interlocks), handed to every controller
        #: built for this lane: a latch set while the link is down, or when it went away,
        #: is the same latch on the next link. Only a reset clears it.
        self.machine = SafetyMachine(daemon.config.safety)
        self.link_up = asyncio.Event()
        self.broker_up = asyncio.Event()
        self.link_lost = asyncio.Event()
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(COMMAND_QUEUE_SIZE)
        # cmd/stop runs at once, not queued: the stops waiting for their one run, and the run.
        self._stop_waiters: list[Queued] = []
        self.stop_task: asyncio.Task[None] | None = None
        self.bucket = TokenBucket(self.config.daemon.command_rate_per_s)
        self.telemetry_period_s = 1.0 / self.config.daemon.telemetry_hz
        self._last_telemetry = -math.inf
        self._last_state: bytes = bridge.disconnected_state("connecting")
        self._grace_timer: asyncio.TimerHandle | None = None
        self._link_reason: str | None = "connecting"
        self.stats = {"estops": 0, "commands": 0, "errors": 0, "rate_limited": 0}
        self._record_factory: RecorderFactory | None = daemon.recorder_for(tm)
        #: What the controller records through (None: the store is unusable; set by Lane).
        self.recorder: Callable[[Controller, Program, str], SessionRecord] | None = None
        self._records: dict[str, SessionRecord] = {}
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
        self.strap: str | None = None  # bound by Lane
        #: A ``cmd/start`` ``hr_device`` other than the lane's strap: bound to this lane
        #: for that session, released at its end (then the lane's strap is used again).
        self.session_strap: str | None = None
        self._strap_restore: asyncio.Task[None] | None = None
        #: Heart-rate fields in the last encoded state (source, quality, zone, reading or
        #: none) and its ``hr_bpm`` (outbound.STATE_HR_STEP_BPM).
        self._state_hr: tuple[Any, ...] | None = None
        self._state_bpm: int | None = None

    def now(self) -> float:
        """The lane's clock: the daemon's (injected; the event loop's by default), which
        every controller of the lane runs on too (the time base of ``Controller.last_rx``)."""
        return self.daemon.clock.now()

    # ------------------------------------------------------------------ device link
    @property
    def session_active(self) -> bool:
        c = self.controller
        return c is not None and c.snapshot.state in _ACTIVE
