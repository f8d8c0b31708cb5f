"""The session database: one SQLite file (WAL) holding sessions, their samples and events.

Owns the schema and its migrations (``PRAGMA user_version`` + the ordered ``MIGRATIONS``
list), session life-cycle (create, finish, abort after a crash), reads for the CLI and the
exporters, and retention. The connection is shared by the caller's thread and the
recorder's writer thread, so every use goes through one lock; writes from the control loop
never come here directly — they go through :mod:`treadctl.store.recorder`.

WAL + ``synchronous=NORMAL``: a committed transaction survives a crash of the process
(SIGKILL, exception) and the file stays consistent; only a power loss may drop the last
commits. Readers (``treadctl sessions`` in another process) never block the writer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from treadctl.store.model import (
    Event,
    Outcome,
    Sample,
    SessionInfo,
    SessionMeta,
    as_utc,
    iso_utc,
    parse_iso,
    utc_now,
)
from treadctl.store.summary import summarize
from treadctl.types import Direction

DB_FILENAME = "sessions.db"
#: Why a session left ``running`` by a dead process was closed (``treadctl run`` and
#: ``treadctl sessions`` close them when they open the store; the daemon at its start).
STALE_SESSION_REASON = "its process ended without closing it (killed or crashed)"


class StoreError(Exception):
    """The session store cannot do what was asked (bad file, newer schema, ...)."""


class SessionNotFound(StoreError, KeyError):
    """No session with this id (or id prefix)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class AmbiguousSessionId(SessionNotFound):
    """An id prefix that matches more than one session."""


def default_data_dir() -> Path:
    """``$XDG_STATE_HOME/treadctl``, falling back to ``~/.local/state/treadctl``."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "treadctl"


def default_db_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()) / DB_FILENAME


# --- schema -----------------------------------------------------------------------------

_V1 = """
CREATE TABLE sessions (
    ref          INTEGER PRIMARY KEY,       -- compact key the sample rows point at
    id           TEXT NOT NULL UNIQUE,      -- 20261126-103000-lane-1-ab12
    treadmill_id TEXT NOT NULL,
    device       TEXT NOT NULL DEFAULT '',
    profile      TEXT NOT NULL DEFAULT '',
    program_name TEXT NOT NULL DEFAULT '',
    program_json TEXT,
    started_at   TEXT NOT NULL,             -- ISO-8601 UTC
    ended_at     TEXT,
    outcome      TEXT NOT NULL DEFAULT 'running' CHECK (outcome IN
                 ('running', 'finished', 'stopped', 'estopped', 'aborted', 'error')),
    reason       TEXT NOT NULL DEFAULT '',
    summary_json TEXT,
    owner_host   TEXT NOT NULL DEFAULT '',  -- who records it: lets a restarted daemon tell
    owner_pid    INTEGER                    -- a crashed recorder from a live one
);
CREATE INDEX sessions_by_start ON sessions (started_at);
CREATE INDEX sessions_by_treadmill ON sessions (treadmill_id, started_at);

CREATE TABLE samples (
    session_ref        INTEGER NOT NULL REFERENCES sessions (ref) ON DELETE CASCADE,
    t_s                REAL NOT NULL,       -- elapsed session time
    ts                 TEXT NOT NULL,       -- ISO-8601 UTC
    target_speed_kmh   REAL,
    speed_kmh          REAL NOT NULL,       -- magnitude; direction says which way
    direction          TEXT NOT NULL CHECK (direction IN ('forward', 'reverse')),
    incline_pct        REAL,
    target_incline_pct REAL,
    distance_m         REAL,
    hr_bpm             INTEGER,
    state              TEXT,
    segment            INTEGER
);
CREATE INDEX samples_by_session ON samples (session_ref, t_s);

CREATE TABLE events (
    session_ref INTEGER NOT NULL REFERENCES sessions (ref) ON DELETE CASCADE,
    t_s         REAL NOT NULL,
    ts          TEXT NOT NULL,
    type        TEXT NOT NULL,
    data_json   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_session ON events (session_ref, t_s);

-- For people poking at the file with the sqlite3 shell: rows with the text session id.
CREATE VIEW sample_rows AS
    SELECT s.id AS session_id, x.* FROM samples x JOIN sessions s ON s.ref = x.session_ref;
CREATE VIEW event_rows AS
    SELECT s.id AS session_id, e.* FROM events e JOIN sessions s ON s.ref = e.session_ref;
"""

Migration = Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Migration:
    def apply(conn: sqlite3.Connection) -> None:
        for statement in _split_sql(sql):
            conn.execute(statement)

    return apply


def _split_sql(sql: str) -> list[str]:
    # executescript() would COMMIT our migration transaction; split on complete statements.
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


# v2: where each sample's heart rate came from and how far it can be trusted
# (docs/heart-rate.md): hr_source 'strap' | 'treadmill' | NULL, hr_quality 'good' |
# 'unreliable' | 'lost' | NULL. NULL on every v1 row (recorded before the supervisor):
# readers take those as "unknown", as before.
_V2 = """
ALTER TABLE samples ADD COLUMN hr_source TEXT;
ALTER TABLE samples ADD COLUMN hr_quality TEXT;
"""

#: Ordered migrations: index i takes ``user_version`` i to i+1. Append only, never edit.
MIGRATIONS: list[Migration] = [_script(_V1), _script(_V2)]


class _Closable(Protocol):
    def close(self) -> None: ...


_SAMPLE_COLUMNS = (
    "t_s, ts, target_speed_kmh, speed_kmh, direction, incline_pct, target_incline_pct, "
    "distance_m, hr_bpm, state, segment, hr_source, hr_quality"
)
#: The order of a sample row (:data:`SampleRow`) as the writer inserts it: the columns that
#: are often NULL (no heart rate; no source or quality for it) come last, and a row may end
#: early: the columns it leaves out are written as NULL literals. sqlite3 binds a None
#: parameter through its adapter lookup (about 0.75 us per None here, more than a number or
#: a string costs); a NULL in the statement costs nothing and stores the same NULL.
_SAMPLE_ROW_COLUMNS = (
    "t_s",
    "ts",
    "target_speed_kmh",
    "speed_kmh",
    "direction",
    "incline_pct",
    "target_incline_pct",
    "distance_m",
    "state",
    "segment",
    "hr_bpm",
    "hr_source",
    "hr_quality",
)
#: Shortest sample row: session_ref and every column up to the segment.
_SAMPLE_ROW_MIN = 1 + _SAMPLE_ROW_COLUMNS.index("segment") + 1
_SAMPLE_ROW_MAX = 1 + len(_SAMPLE_ROW_COLUMNS)
_SAMPLE_INSERTS: dict[int, str] = {
    n: f"INSERT INTO samples (session_ref, {', '.join(_SAMPLE_ROW_COLUMNS)}) VALUES ("
    + ",".join(["?"] * n + ["NULL"] * (_SAMPLE_ROW_MAX - n))
    + ")"
    for n in range(_SAMPLE_ROW_MIN, _SAMPLE_ROW_MAX + 1)
}
_EVENT_INSERT = "INSERT INTO events (session_ref, t_s, ts, type, data_json) VALUES (?,?,?,?,?)"
_SESSION_COLUMNS = (
    "id, treadmill_id, device, profile, program_name, program_json, started_at, ended_at, "
    "outcome, reason, summary_json"
)

#: (session_ref, t_s, ts, target_speed_kmh, speed_kmh, direction, incline_pct,
#: target_incline_pct, distance_m, state, segment[, hr_bpm[, hr_source[, hr_quality]]]):
#: the order of _SAMPLE_ROW_COLUMNS; columns left off the end are NULL.
SampleRow = tuple[Any, ...]
EventRow = tuple[Any, ...]


class SessionStore:
    """Sessions in one SQLite file. Thread-safe; one instance per process and file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        migrations: Sequence[Migration] | None = None,
    ) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._migrations = list(MIGRATIONS if migrations is None else migrations)
        self._writer: _Closable | None = None  # set by the recorder (one writer per store)
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, batch by batch.
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open session store {self.path}: {exc}") from exc
        try:
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"cannot use session store {self.path}: {exc}") from exc

    # --- setup ---------------------------------------------------------------------------

    def _configure(self) -> None:
        c = self._conn
        c.execute("PRAGMA busy_timeout = 10000")
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = NORMAL")
        c.execute("PRAGMA foreign_keys = ON")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")  # one process migrates, others wait
            try:
                version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
                if version > len(self._migrations):
                    raise StoreError(
                        f"{self.path} has schema version {version}, this treadctl knows "
                        f"{len(self._migrations)}: upgrade treadctl"
                    )
                for index in range(version, len(self._migrations)):
                    self._migrations[index](self._conn)
                    self._conn.execute(f"PRAGMA user_version = {index + 1}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # --- life-cycle ----------------------------------------------------------------------

    def create_session(self, meta: SessionMeta | Mapping[str, Any]) -> str:
        """Insert a ``running`` session and return its id (sortable: time, treadmill, hex)."""
        if not isinstance(meta, SessionMeta):
            meta = SessionMeta(**dict(meta))
        started = meta.started_at or utc_now()
        program_json = json.dumps(meta.program, default=str) if meta.program is not None else None
        with self._lock:
            self._check_open()
            for _ in range(20):
                session_id = _new_id(started, meta.treadmill_id)
                try:
                    self._conn.execute(
                        "INSERT INTO sessions (id, treadmill_id, device, profile, program_name,"
                        " program_json, started_at, owner_host, owner_pid)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (
                            session_id,
                            meta.treadmill_id,
                            meta.device,
                            meta.profile,
                            meta.program_name,
                            program_json,
                            iso_utc(started),
                            socket.gethostname(),
                            os.getpid(),
                        ),
                    )
                    return session_id
                except sqlite3.IntegrityError:
                    continue  # same second, same treadmill, same 16 random bits: retry
            raise StoreError("could not allocate a unique session id")

    def finish_session(
        self,
        session_id: str,
        outcome: Outcome | str,
        reason: str = "",
        summary: Mapping[str, Any] | None = None,
        *,
        ended_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Close a session. Without ``summary`` it is computed from the stored data."""
        outcome = Outcome(outcome)
        if outcome is Outcome.RUNNING:
            raise ValueError("finish_session needs a final outcome, not 'running'")
        with self._lock:
            ref, started_at = self.session_ref(session_id)
            if summary is None:
                summary = summarize(
                    self.samples(session_id),
                    self.events(session_id),
                    outcome=str(outcome),
                    reason=reason,
                )
            else:
                summary = {**summary, "outcome": str(outcome), "reason": reason}
            self._conn.execute(
                "UPDATE sessions SET outcome=?, reason=?, summary_json=?, ended_at=? WHERE ref=?",
                (
                    str(outcome),
                    reason,
                    json.dumps(summary, default=str),
                    iso_utc(ended_at or _end_time(started_at, summary)),
                    ref,
                ),
            )
            return dict(summary)

    def mark_running_as_aborted(
        self, reason: str, *, only_dead_owners: bool = True, only_this_host: bool = False
    ) -> list[str]:
        """Close every session still marked ``running`` as ``aborted``; return their ids.

        The daemon calls this at start: such sessions belong to a process that crashed.
        Their samples and events are kept; the summary is computed from them and
        ``ended_at`` is the last recorded sample. Sessions whose recording process is
        still alive on this host (a ``treadctl run`` next to the daemon) are left alone
        unless ``only_dead_owners`` is false. With ``only_this_host``, sessions recorded
        by another host (whose processes cannot be checked from here) are left alone too:
        what ``treadctl run`` uses when it opens the store.
        """
        aborted: list[str] = []
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT id, ref, started_at, owner_host, owner_pid FROM sessions"
                " WHERE outcome='running' ORDER BY started_at"
            ).fetchall()
            here = socket.gethostname()
            for session_id, ref, started_at, host, pid in rows:
                if only_this_host and host != here:
                    continue
                if only_dead_owners and _owner_alive(host, pid):
                    continue
                last = self._conn.execute(
                    "SELECT max(ts) FROM samples WHERE session_ref=?", (ref,)
                ).fetchone()[0]
                ended = parse_iso(last) if last else parse_iso(started_at)
                self.finish_session(session_id, Outcome.ABORTED, reason, ended_at=ended)
                aborted.append(session_id)
        return aborted

    # --- writes from the recorder's writer thread -----------------------------------------

    def session_ref(self, session_id: str) -> tuple[int, datetime]:
        """The internal key (``sessions.ref``, what samples and events point at) and the
        start time of a session (exact id). Raises SessionNotFound."""
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                "SELECT ref, started_at FROM sessions WHERE id=?", (session_id,)
            ).fetchone()
        if row is None:
            raise SessionNotFound(f"no session {session_id!r}")
        return int(row[0]), parse_iso(row[1])

    def _write_rows(self, sample_rows: Sequence[SampleRow], event_rows: Sequence[EventRow]) -> None:
        """Insert prepared rows in one transaction (used by the recorder's writer)."""
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN")
            try:
                # One executemany per run of rows of one length, in order (rowids as given).
                for n, rows in itertools.groupby(sample_rows, len):
                    self._conn.executemany(_SAMPLE_INSERTS[n], rows)
                if event_rows:
                    self._conn.executemany(_EVENT_INSERT, event_rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # --- reads ---------------------------------------------------------------------------

    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id for an exact id or a unique prefix of one."""
        if not id_or_prefix:
            raise SessionNotFound("empty session id")
        with self._lock:
            self._check_open()
            exact = self._conn.execute(
                "SELECT id FROM sessions WHERE id=?", (id_or_prefix,)
            ).fetchone()
            if exact:
                return str(exact[0])
            escaped = re.sub(r"([\\%_])", r"\\\1", id_or_prefix)
            rows = self._conn.execute(
                "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 3",
                (escaped + "%",),
            ).fetchall()
        if not rows:
            raise SessionNotFound(f"no session {id_or_prefix!r}")
        if len(rows) > 1:
            names = ", ".join(r[0] for r in rows[:2])
            raise AmbiguousSessionId(f"session id {id_or_prefix!r} is ambiguous ({names}, ...)")
        return str(rows[0][0])

    def list_sessions(self, limit: int = 20, treadmill_id: str | None = None) -> list[SessionInfo]:
        """Newest first."""
        where, params = ("WHERE treadmill_id=?", [treadmill_id]) if treadmill_id else ("", [])
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                f"SELECT {_SESSION_COLUMNS},"
                " (SELECT count(*) FROM samples x WHERE x.session_ref = s.ref)"
                f" FROM sessions s {where} ORDER BY started_at DESC, id DESC LIMIT ?",
                (*params, max(int(limit), 0)),
            ).fetchall()
        return [_session_info(r) for r in rows]

    def get_session(self, session_id: str) -> SessionInfo:
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                f"SELECT {_SESSION_COLUMNS},"
                " (SELECT count(*) FROM samples x WHERE x.session_ref = s.ref)"
                " FROM sessions s WHERE id=?",
                (session_id,),
            ).fetchone()
        if row is None:
            raise SessionNotFound(f"no session {session_id!r}")
        return _session_info(row)

    def samples(self, session_id: str) -> list[Sample]:
        ref, _ = self.session_ref(session_id)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE session_ref=? ORDER BY t_s, rowid",
                (ref,),
            ).fetchall()
        directions = {"forward": Direction.FORWARD, "reverse": Direction.REVERSE}
        fromiso = datetime.fromisoformat  # stored text is always ...Z: already aware UTC
        return [
            Sample(
                t_s=t_s,
                ts=fromiso(ts),
                target_speed_kmh=tgt if tgt is not None else 0.0,
                speed_kmh=speed,
                direction=directions[direction],
                incline_pct=incl if incl is not None else 0.0,
                target_incline_pct=tincl if tincl is not None else 0.0,
                distance_m=dist,
                hr_bpm=hr,
                state=state or "",
                segment=seg,
                hr_source=hr_src,
                hr_quality=hr_q,
            )
            for (t_s, ts, tgt, speed, direction, incl, tincl, dist, hr, state, seg, hr_src,
                 hr_q) in rows
        ]

    def events(self, session_id: str) -> list[Event]:
        ref, _ = self.session_ref(session_id)
        with self._lock:
            rows = self._conn.execute(
                "SELECT t_s, ts, type, data_json FROM events WHERE session_ref=?"
                " ORDER BY t_s, rowid",
                (ref,),
            ).fetchall()
        return [
            Event(t_s=t_s, ts=parse_iso(ts), type=etype, data=json.loads(data or "{}"))
            for (t_s, ts, etype, data) in rows
        ]

    # --- maintenance ---------------------------------------------------------------------

    def apply_retention(
        self,
        *,
        max_age_days: float | None = None,
        max_sessions: int | None = None,
        now: datetime | None = None,
    ) -> list[str]:
        """Delete finished sessions older than ``max_age_days`` and/or beyond the newest
        ``max_sessions``. Running sessions are never deleted. Returns the deleted ids."""
        doomed: set[str] = set()
        with self._lock:
            self._check_open()
            if max_age_days is not None:
                cutoff = iso_utc((now or utc_now()) - timedelta(days=max_age_days))
                doomed.update(
                    r[0]
                    for r in self._conn.execute(
                        "SELECT id FROM sessions WHERE outcome != 'running' AND started_at < ?",
                        (cutoff,),
                    )
                )
            if max_sessions is not None:
                doomed.update(
                    r[0]
                    for r in self._conn.execute(
                        "SELECT id FROM sessions WHERE outcome != 'running'"
                        " AND id NOT IN (SELECT id FROM sessions"
                        "   ORDER BY started_at DESC, id DESC LIMIT ?)",
                        (max(int(max_sessions), 0),),
                    )
                )
            if doomed:
                self._conn.execute("BEGIN")
                try:
                    self._conn.executemany(
                        "DELETE FROM sessions WHERE id=?", [(i,) for i in sorted(doomed)]
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
        return sorted(doomed)

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The store's SQLite connection, held under its lock for the ``with`` block (no
        writer commits meanwhile): for checks, tools and oracles that count or inspect rows
        in SQL. Writes through it bypass the store's rules; the recorder's writer blocks
        until the block ends."""
        with self._lock:
            self._check_open()
            yield self._conn

    def integrity_check(self) -> str:
        with self._lock:
            self._check_open()
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (for size measurements and backups)."""
        with self._lock:
            self._check_open()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Flush and stop the writer thread (if any), then close the file. Idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("session store is closed")


def open_store(data_dir: str | os.PathLike[str] | None = None) -> SessionStore:
    """The store in ``data_dir`` (default: :func:`default_data_dir`)."""
    return SessionStore(default_db_path(data_dir))


def _new_id(started: datetime, treadmill_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", treadmill_id.lower()).strip("-")[:24] or "local"
    return f"{as_utc(started):%Y%m%d-%H%M%S}-{slug}-{secrets.token_hex(2)}"


def _end_time(started_at: datetime, summary: Mapping[str, Any]) -> datetime:
    # In the session's own time base (a warped clock's wall time in simulations), so
    # ended_at - started_at is the recorded duration; wall-clock "now" when nothing was recorded.
    duration_s = float(summary.get("duration_s") or 0.0)
    return started_at + timedelta(seconds=duration_s) if duration_s > 0 else utc_now()


def _owner_alive(host: str, pid: int | None) -> bool:
    if pid is None or host != socket.gethostname() or pid == os.getpid():
        # Another host cannot be checked; our own pid has no other live recorder at the
        # point the daemon calls this (its sessions start afterwards).
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (killed, not yet reaped) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _session_info(row: Iterable[Any]) -> SessionInfo:
    (
        sid,
        treadmill_id,
        device,
        profile,
        program_name,
        program_json,
        started_at,
        ended_at,
        outcome,
        reason,
        summary_json,
        count,
    ) = row
    return SessionInfo(
        id=sid,
        treadmill_id=treadmill_id,
        device=device,
        profile=profile,
        program_name=program_name,
        program=json.loads(program_json) if program_json else None,
        started_at=parse_iso(started_at),
        ended_at=parse_iso(ended_at) if ended_at else None,
        outcome=Outcome(outcome),
        reason=reason,
        summary=json.loads(summary_json) if summary_json else None,
        sample_count=int(count or 0),
    )
