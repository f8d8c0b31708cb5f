"""Who pressed what: the ``command`` event of every operator command (docs/daemon.md).

Every command a lane carried out (``start``, ``stop``, ``pause``, ``resume``, ``reset``,
``estop``; ``set`` through the controller's own ``command`` event, which the lane tags) is
recorded as one event::

    {"type": "command", "command": "stop", "by": "sam", "reason": "runner unwell",
     "request_id": "dash-sam-1f2e", "t_s": 12.5}

``by`` and ``reason`` are what the command said (``null`` when it said nothing). The event
goes

* into the session it concerns, in the session store: the running session (a ``start``
  into the session it started), or - a ``reset`` or a late e-stop - the session the latch
  ended, which is already closed: the event is appended to that record (its summary is
  not recomputed; ``t_s`` is the session's last elapsed time and ``at`` the wall clock);
* on the lane's ``event`` topic, like every controller event (``ts``, no ``t_s``), right
  *after* the command's ``ack`` (it carries the same ``request_id``: a client that takes
  the first event with its request id still gets the reply);
* into the daemon's log (one line).

With no session to record into (a reset while disconnected, a stop while idle, the store
unusable) it still goes to MQTT and the log. Refused commands are not recorded here: their
``error`` reply says what happened and nothing changed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from treadctl.daemon.bridge import SPECS, RequestId, iso_utc
from treadctl.store.model import Event
from treadctl.store.recorder import SessionRecorder

if TYPE_CHECKING:
    from treadctl.daemon.sessions import LaneSessions as Lane

log = logging.getLogger("treadctl.daemon.audit")

#: Commands recorded by the lane itself (``set`` is recorded by the controller, tagged):
#: the registry's ``audited`` commands (:data:`treadctl.daemon.bridge.SPECS`).
AUDITED = frozenset(kind.value for kind, spec in SPECS.items() if spec.audited)


def command_event(command: str, *, by: str | None, reason: str | None,
                  request_id: RequestId, t_s: float, **extra: Any) -> dict[str, Any]:
    return {"type": "command", "command": command, "by": by, "reason": reason,
            "request_id": request_id, "t_s": round(t_s, 3), **extra}


def operator_fields(by: str | None, reason: str | None,
                    request_id: RequestId) -> dict[str, Any]:
    """What the lane adds to the controller's own ``command`` event (``set``)."""
    return {"by": by, "reason": reason, "request_id": request_id}


def shown_session(lane: Lane) -> str | None:
    """The session the lane's retained state names now: the running one, or the one a
    latch ended (``None`` when idle or disconnected, or after an e-stop while idle)."""
    ctrl = lane.controller
    if ctrl is None or not lane.session_shown:
        return None
    return ctrl.snapshot.session_id


def record(lane: Lane, command: str, *, by: str | None, reason: str | None,
           request_id: RequestId, session_id: str | None, after_reply: bool = False,
           **extra: Any) -> dict[str, Any]:
    """Record one carried-out command (see the module docstring); never raises.
    ``after_reply``: the command's reply is still to be sent; the event goes out after it."""
    ctrl = lane.controller
    t_s = ctrl.clock.now() if ctrl is not None else 0.0
    event = command_event(command, by=by, reason=reason, request_id=request_id, t_s=t_s,
                          **extra)
    where = "no session"
    try:
        if session_id is not None:
            where = _into_session(lane, session_id, event)
    except Exception as exc:  # the audit trail must never take a lane (or its stop) down
        log.error("%s: command %s not recorded in session %s: %s", lane.cfg.id, command,
                  session_id, exc)
    log.info("%s: %s by %s%s (request %s; %s)", lane.cfg.id, command, by or "-",
             f", reason: {reason}" if reason else "", request_id, where)
    if after_reply:
        lane.after_reply(event)
    else:
        lane.publish_event(event)
    return event


def _into_session(lane: Lane, session_id: str, event: dict[str, Any]) -> str:
    ctrl = lane.controller
    open_record = lane.open_record(session_id)
    if open_record is not None and ctrl is not None:
        open_record.event(ctrl, event)
        return f"session {session_id}"
    store = lane.daemon.store
    if store is None:
        return "no store"
    # The session has ended (a reset after the e-stop that ended it): append to its record.
    elapsed = ctrl.snapshot.elapsed_s if ctrl is not None else 0.0
    data = {k: v for k, v in event.items() if k not in ("type", "t_s")}
    data["at"] = iso_utc()
    recorder = SessionRecorder(store, session_id)
    recorder.record_event(Event(t_s=elapsed, type="command", data=data))
    return f"ended session {session_id}"
