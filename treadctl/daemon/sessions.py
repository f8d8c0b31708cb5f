"""Each session of a lane: its recording (the store's recorder, held by the lane) and its
one ``finished``, also when the controller's own ending was cut short (docs/mqtt.md,
"Endings")."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from treadctl.control.controller import Controller, Outcome, SessionResult
from treadctl.daemon.lane_state import log
from treadctl.daemon.outbound import LaneOutbound
from treadctl.programs.model import Program
from treadctl.store.integration import ControllerRecorder

#: How long the daemon waits for a session that ended without its own ending to be closed
#: in the store (and announced) before it moves on.
SESSION_CLOSE_TIMEOUT_S = 10.0


class SessionRecord:
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


class LaneSessions(LaneOutbound):
    """The lane's sessions (see the module docstring)."""

    def open_record(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        return record if record is not None and record.open else None

    # ------------------------------------------------------------------ sessions
    def _record(self, ctl: Controller, program: Program, session_id: str) -> SessionRecord:
        """The controller's recorder factory: the store's recorder, kept by the lane."""
        assert self._record_factory is not None
        record = SessionRecord(self._record_factory(ctl, program, session_id),
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
