"""Recording a session without ever blocking the control loop.

``SessionRecorder.record_sample`` / ``record_event`` only append to a bounded in-memory
queue (a list swap under a lock held for microseconds). ONE writer thread per
:class:`~treadctl.store.db.SessionStore` drains the queues of every recorder on that store
(the daemon runs many treadmills on one store), turns them into rows and inserts them in
one transaction per batch. It wakes at least every ``COMMIT_INTERVAL_S`` (0.25 s), so a
SIGKILL loses at most the last ~0.5 s of samples and the WAL keeps the file intact.

When the queue is full (the disk stalls for minutes) new samples are dropped and counted
rather than blocking or growing memory without bound; events have their own, separate
bound so a late e-stop event is not crowded out by samples.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from treadctl.store.db import EventRow, SampleRow, SessionStore, StoreError
from treadctl.store.model import Event, Outcome, Sample, SessionMeta, as_utc
from treadctl.store.summary import summarize
from treadctl.types import Direction

__all__ = [
    "COMMIT_INTERVAL_S",
    "Event",
    "Sample",
    "SessionRecorder",
    "StoreWriter",
    "WriterStats",
    "summarize",
]

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.25
MAX_PENDING_SAMPLES = 100_000  # 50 treadmills x 4 Hz = 200/s: ~8 min of backlog
MAX_PENDING_EVENTS = 10_000


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a recorder's rows go: the session's key and its start (to derive ``ts``)."""

    ref: int
    started_naive_utc: datetime


@dataclass(frozen=True, slots=True)
class WriterStats:
    samples_written: int
    events_written: int
    samples_dropped: int
    events_dropped: int
    rows_rejected: int
    commits: int
    cpu_s: float


class StoreWriter:
    """The single writer thread of one store. Get it with :meth:`for_store`."""

    def __init__(
        self,
        store: SessionStore,
        *,
        commit_interval_s: float = COMMIT_INTERVAL_S,
        max_pending_samples: int = MAX_PENDING_SAMPLES,
        max_pending_events: int = MAX_PENDING_EVENTS,
    ) -> None:
        self._store = store
        self._interval = commit_interval_s
        self._max_samples = max_pending_samples
        self._max_events = max_pending_events
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._samples: list[tuple[_Target, Sample]] = []
        self._events: list[tuple[_Target, Event]] = []
        self._waiters: list[threading.Event] = []
        self._stopping = False
        self._samples_written = 0
        self._events_written = 0
        self._samples_dropped = 0
        self._events_dropped = 0
        self._rejected = 0
        self._commits = 0
        self._cpu_s = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"treadctl-store-writer:{store.path.name}", daemon=True
        )
        self._thread.start()

    @classmethod
    def for_store(cls, store: SessionStore) -> StoreWriter:
        """The store's writer, started on first use (one per store)."""
        with store._lock:
            writer = store._writer
            if isinstance(writer, StoreWriter) and writer.alive:
                return writer
            store._check_open()
            writer = cls(store)
            store._writer = writer
            return writer

    # --- producer side (control loop): never blocks ---------------------------------------

    def put_sample(self, target: _Target, sample: Sample) -> bool:
        with self._lock:
            if self._stopping or len(self._samples) >= self._max_samples:
                self._samples_dropped += 1
                return False
            self._samples.append((target, sample))
            return True

    def put_event(self, target: _Target, event: Event) -> bool:
        with self._lock:
            if self._stopping or len(self._events) >= self._max_events:
                self._events_dropped += 1
                return False
            self._events.append((target, event))
        return True

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._samples) + len(self._events)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                samples_written=self._samples_written,
                events_written=self._events_written,
                samples_dropped=self._samples_dropped,
                events_dropped=self._events_dropped,
                rows_rejected=self._rejected,
                commits=self._commits,
                cpu_s=self._cpu_s,
            )

    # --- blocking helpers (end of session, shutdown) -----------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is committed. False on timeout/dead thread."""
        done = threading.Event()
        with self._lock:
            if not self._thread.is_alive():
                return False
            self._waiters.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued and stop the thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            with self._lock:
                samples, self._samples = self._samples, []
                events, self._events = self._events, []
                waiters, self._waiters = self._waiters, []
                stopping = self._stopping
            if samples or events:
                self._write(samples, events)
            for waiter in waiters:
                waiter.set()
            self._cpu_s = time.thread_time()
            if stopping:
                with self._lock:
                    if not self._samples and not self._events:
                        for waiter in self._waiters:
                            waiter.set()
                        return

    def _write(
        self, samples: list[tuple[_Target, Sample]], events: list[tuple[_Target, Event]]
    ) -> None:
        sample_rows = [_sample_row(t, s) for t, s in samples]
        event_rows = [_event_row(t, e) for t, e in events]
        try:
            self._store._write_rows(sample_rows, event_rows)
        except sqlite3.IntegrityError:
            # One bad row (NULL speed, unknown session) must not cost the whole batch.
            ok_s, ok_e = self._write_one_by_one(sample_rows, event_rows)
            with self._lock:
                self._rejected += len(sample_rows) + len(event_rows) - ok_s - ok_e
                self._samples_written += ok_s
                self._events_written += ok_e
                self._commits += 1
            return
        except (sqlite3.Error, StoreError) as exc:
            log.error(
                "session store write failed, %d rows lost: %s",
                len(sample_rows) + len(event_rows),
                exc,
            )
            with self._lock:
                self._rejected += len(sample_rows) + len(event_rows)
            return
        with self._lock:
            self._samples_written += len(sample_rows)
            self._events_written += len(event_rows)
            self._commits += 1

    def _write_one_by_one(
        self, sample_rows: list[SampleRow], event_rows: list[EventRow]
    ) -> tuple[int, int]:
        ok_s = ok_e = 0
        for row in sample_rows:
            try:
                self._store._write_rows([row], [])
                ok_s += 1
            except (sqlite3.Error, StoreError) as exc:
                log.warning("session store rejected a sample %r: %s", row, exc)
        for row in event_rows:
            try:
                self._store._write_rows([], [row])
                ok_e += 1
            except (sqlite3.Error, StoreError) as exc:
                log.warning("session store rejected an event %r: %s", row, exc)
        return ok_s, ok_e


def _ts_text(target: _Target, t_s: float, ts: datetime | None) -> str:
    """``ts`` (else the session's start + ``t_s``) as ISO 8601 UTC to the millisecond
    (truncated, as ``isoformat(timespec="milliseconds")``), with a ``Z``."""
    if ts is not None:
        return as_utc(ts).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    # start + t_s, to the microsecond as timedelta rounds it; the text of the whole second
    # is cached (a lane's 4 Hz samples share one), the milliseconds are formatted here.
    start = target.started_naive_utc
    offset = timedelta(0, t_s)  # (days, seconds): positional is cheaper than seconds=
    us = start.microsecond + offset.microseconds
    second = offset.days * 86_400 + offset.seconds + us // 1_000_000
    return f"{_second_text(start, second)}.{us % 1_000_000 // 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second_text(started: datetime, second: int) -> str:
    """``started`` without its microseconds, plus ``second`` seconds, to the second."""
    whole = started.replace(microsecond=0) + timedelta(seconds=second)
    return whole.isoformat(timespec="seconds")


def _sample_row(target: _Target, s: Sample) -> SampleRow:
    """The row in the writer's column order (:data:`~treadctl.store.db.SampleRow`), ending
    before the heart-rate columns that are None (the store writes those as NULL)."""
    row = (
        target.ref,
        s.t_s,
        _ts_text(target, s.t_s, s.ts),
        s.target_speed_kmh,
        s.speed_kmh,
        "reverse" if s.direction == Direction.REVERSE else "forward",
        s.incline_pct,
        s.target_incline_pct,
        s.distance_m,
        s.state,
        s.segment,
    )
    hr, source, quality = s.hr_bpm, s.hr_source, s.hr_quality
    if quality is not None:
        return (*row, hr, source, quality)
    if source is not None:
        return (*row, hr, source)
    if hr is not None:
        return (*row, hr)
    return row


def _event_row(target: _Target, e: Event) -> EventRow:
    return (
        target.ref,
        e.t_s,
        _ts_text(target, e.t_s, e.ts),
        str(e.type),
        json.dumps(dict(e.data), default=str),
    )


class SessionRecorder:
    """Records one session. Create with :meth:`start` (new session) or from an id."""

    def __init__(
        self, store: SessionStore, session_id: str, *, writer: StoreWriter | None = None
    ) -> None:
        """``writer``: the thread that commits the rows; by default the store's one shared
        writer (:meth:`StoreWriter.for_store`). A caller that passes its own closes it."""
        self.store = store
        self.session_id = session_id
        ref, started_at = store.session_ref(session_id)
        self.started_at = started_at
        self._target = _Target(ref, as_utc(started_at).replace(tzinfo=None))
        self._writer = writer if writer is not None else StoreWriter.for_store(store)
        self._finished = False
        self.summary: dict[str, Any] | None = None

    @classmethod
    def start(
        cls,
        store: SessionStore,
        meta: SessionMeta | Mapping[str, Any],
        *,
        writer: StoreWriter | None = None,
    ) -> SessionRecorder:
        return cls(store, store.create_session(meta), writer=writer)

    @property
    def writer(self) -> StoreWriter:
        """The writer this recorder queues its rows on (its stats: written, dropped)."""
        return self._writer

    # --- hot path: called from the control loop ---------------------------------------------

    def record_sample(self, sample: Sample) -> None:
        """Queue a sample; never blocks, never raises for a full queue (it counts a drop)."""
        if not self._finished:
            self._writer.put_sample(self._target, sample)

    def record_event(self, event: Event) -> None:
        if not self._finished:
            self._writer.put_event(self._target, event)

    # --- end of session -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    def flush(self, timeout: float = 30.0) -> bool:
        return self._writer.flush(timeout)

    def finish(
        self,
        outcome: Outcome | str,
        reason: str = "",
        summary: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Flush queued data, then close the session (summary computed when not given).

        Blocks for one commit (milliseconds); from async code prefer :meth:`afinish`.
        Calling it again returns the first summary.
        """
        if self._finished and self.summary is not None:
            return self.summary
        self._finished = True
        if not self._writer.flush():
            log.error(
                "session %s: writer did not flush, recent samples may be lost", self.session_id
            )
        self.summary = self.store.finish_session(self.session_id, outcome, reason, summary)
        return self.summary

    async def afinish(
        self,
        outcome: Outcome | str,
        reason: str = "",
        summary: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.finish, outcome, reason, summary)

    async def aclose(self) -> None:
        """Finish as ``aborted`` if nobody finished the session, else just flush."""
        if not self._finished:
            await self.afinish(Outcome.ABORTED, "recorder closed before the session ended")
        else:
            await asyncio.to_thread(self._writer.flush)

    async def __aenter__(self) -> SessionRecorder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished and exc is not None:
            # Cancellation (Ctrl-C) is a stop; anything else is an error. Data is kept.
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                outcome, reason = Outcome.STOPPED, "cancelled"
            else:
                outcome, reason = Outcome.ERROR, f"{type(exc).__name__}: {exc}"
            # Shielded: a cancelled task must still close its session row.
            await asyncio.shield(self.afinish(outcome, reason))
            return
        await self.aclose()
