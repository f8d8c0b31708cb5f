"""The gym daemon: many treadmills, one MQTT connection each, supervised and isolated.

This module is the daemon's front door (``from treadctl.daemon.service import Daemon``);
the code lives in:

* :mod:`treadctl.daemon.lifecycle` - :class:`Daemon`: start-up, the gym-wide e-stop, the
  dedicated e-stop connection (:class:`EstopLink`), the watchdog, shutdown;
* :mod:`treadctl.daemon.lane` - :class:`Lane`: link supervision and the broker connection,
  on the layers :mod:`~treadctl.daemon.lane_state` (the lane's attributes),
  :mod:`~treadctl.daemon.outbound` (controller -> MQTT), :mod:`~treadctl.daemon.sessions`,
  :mod:`~treadctl.daemon.straps` (heart-rate straps) and :mod:`~treadctl.daemon.commands`
  (MQTT -> controller: the e-stop fast path, intake, the command kind -> handler table);
* :mod:`treadctl.daemon.mqtt` - the adapter (with its asyncio client over paho,
  :mod:`~treadctl.daemon.mqtt_client`): the only module importing paho.

What it does, as a whole:

* one :class:`Lane` per configured treadmill, each with its own supervisor tasks (device
  link with reconnect backoff, MQTT connection with reconnect backoff, command worker). A
  lane's failure is caught, its belt is e-stopped, and the task restarts after a backoff;
  no other lane notices. Each lane has its own MQTT client so that its Last Will *is* its
  ``status`` topic (docs/mqtt.md) and a command flood on one lane cannot slow another.
* e-stop topics are intercepted in paho's own per-topic callback
  (``message_callback_add``), i.e. synchronously in the socket read callback, *before*
  the adapter builds its message object and before any payload parsing, size check, rate limit
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

from treadctl.daemon.commands import HANDLERS, SUPERSEDED_BY_STOP, LaneCommands
from treadctl.daemon.lane import (
    LINK_SILENCE_S,
    MAX_BACKOFF_S,
    SHUTDOWN_STOP_TIMEOUT_S,
    STABLE_LINK_S,
    Backoff,
    Lane,
    TransportFactory,
)
from treadctl.daemon.lane_state import (
    COMMAND_QUEUE_SIZE,
    ESTOP_DEDUP_S,
    EstopCopies,
    Queued,
    merge_limits,
)
from treadctl.daemon.lifecycle import FIRST_OPEN_TIMEOUT_S, Daemon, EstopLink, Notify
from treadctl.daemon.outbound import LINK_CHECK_S, LINK_TELEMETRY_S, STATE_REFRESH_S
from treadctl.daemon.sessions import SESSION_CLOSE_TIMEOUT_S, SessionRecord

__all__ = [
    "COMMAND_QUEUE_SIZE",
    "ESTOP_DEDUP_S",
    "FIRST_OPEN_TIMEOUT_S",
    "HANDLERS",
    "LINK_CHECK_S",
    "LINK_SILENCE_S",
    "LINK_TELEMETRY_S",
    "MAX_BACKOFF_S",
    "SESSION_CLOSE_TIMEOUT_S",
    "SHUTDOWN_STOP_TIMEOUT_S",
    "STABLE_LINK_S",
    "STATE_REFRESH_S",
    "SUPERSEDED_BY_STOP",
    "Backoff",
    "Daemon",
    "EstopCopies",
    "EstopLink",
    "Lane",
    "LaneCommands",
    "Notify",
    "Queued",
    "SessionRecord",
    "TransportFactory",
    "merge_limits",
]
