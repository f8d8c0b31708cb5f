"""SessionStore: schema and migrations, round trip, lookups, abort after crash, retention."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from treadctl.store import db as dbmod
from treadctl.store.db import (
    AmbiguousSessionId,
    SessionNotFound,
    SessionStore,
    StoreError,
    default_data_dir,
    default_db_path,
)
from treadctl.store.model import Outcome, SessionMeta
from treadctl.store.recorder import Event, Sample, SessionRecorder
from treadctl.types import Direction

import store_synth as synth  # conftest puts it on sys.path


def test_new_file_is_migrated_wal_and_normal_sync(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "sessions.db"
    with SessionStore(path) as store:
        assert store.schema_version == len(dbmod.MIGRATIONS)
        with store.connection() as c:
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            tables = {
                r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        assert {"sessions", "samples", "events"} <= tables


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with SessionStore(path) as store:
        sid = synth.record(store)
        n = len(store.samples(sid))
    for _ in range(2):
        with SessionStore(path) as store:
            assert store.schema_version == len(dbmod.MIGRATIONS)
            assert len(store.samples(sid)) == n


def test_empty_existing_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"")
    with SessionStore(path) as store:
        assert store.schema_version == len(dbmod.MIGRATIONS)
        assert store.list_sessions() == []


def test_later_migration_applies_in_order_to_old_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with SessionStore(path) as store:
        sid = store.create_session(synth.META)
    applied: list[int] = []

    nxt = len(dbmod.MIGRATIONS) + 1

    def later(conn: sqlite3.Connection) -> None:
        applied.append(nxt)
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    migrations = [*dbmod.MIGRATIONS, later]
    with SessionStore(path, migrations=migrations) as store:
        assert store.schema_version == nxt
        assert store.get_session(sid).id == sid
        with store.connection() as c:
            c.execute("UPDATE sessions SET note='ok'")
    with SessionStore(path, migrations=migrations) as store:
        assert store.schema_version == nxt
    assert applied == [nxt]  # exactly once


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="upgrade treadctl"):
        SessionStore(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SessionStore(path)


def test_round_trip(store: SessionStore) -> None:
    samples, events = synth.synthetic_session()
    sid = synth.record(store)
    info = store.get_session(sid)
    assert info.treadmill_id == "lane-1"
    assert info.profile == "treadctl-reference"
    assert info.program_name == "reverse-walk-intro"
    assert info.program == synth.PROGRAM
    assert info.started_at == synth.STARTED_AT
    assert info.outcome is Outcome.ESTOPPED
    assert info.reason == "remote e-stop (front desk)"
    assert info.sample_count == len(samples)
    assert info.ended_at is not None and info.ended_at > info.started_at
    got = store.samples(sid)
    assert len(got) == len(samples)
    for a, b in zip(got, samples, strict=True):
        assert a.t_s == b.t_s and a.speed_kmh == b.speed_kmh and a.direction == b.direction
        assert a.distance_m == b.distance_m and a.hr_bpm == b.hr_bpm and a.segment == b.segment
        assert a.ts == synth.STARTED_AT + timedelta(seconds=b.t_s)
    assert any(s.direction is Direction.REVERSE for s in got)
    got_events = store.events(sid)
    assert [(e.t_s, e.type, dict(e.data)) for e in got_events] == sorted(
        [(e.t_s, e.type, dict(e.data)) for e in events], key=lambda x: x[0]
    )
    assert info.summary is not None
    assert info.summary["outcome"] == "estopped"
    assert info.summary["reverse_distance_m"] > 50


def test_unknown_id_raises_session_not_found(store: SessionStore) -> None:
    for call in (store.get_session, store.samples, store.events):
        with pytest.raises(SessionNotFound):
            call("nope")
    with pytest.raises(SessionNotFound):
        store.finish_session("nope", "finished")
    with pytest.raises(KeyError):  # SessionNotFound is a KeyError too
        store.resolve_id("nope")


def test_ids_are_sortable_and_prefixes_resolve(store: SessionStore) -> None:
    t0 = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
    a = store.create_session(SessionMeta(treadmill_id="Lane 1", started_at=t0))
    b = store.create_session(SessionMeta(treadmill_id="lane-2", started_at=t0 + timedelta(hours=1)))
    assert a.startswith("20261126-103000-lane-1-") and len(a) == len("20261126-103000-lane-1-ab12")
    assert b > a
    assert store.resolve_id(a) == a
    assert store.resolve_id("20261126-11") == b
    with pytest.raises(AmbiguousSessionId):
        store.resolve_id("20261126")
    with pytest.raises(SessionNotFound):
        store.resolve_id("2025")
    with pytest.raises(SessionNotFound):
        store.resolve_id("%")  # LIKE wildcards are literal


def test_list_sessions_newest_first_limit_and_filter(store: SessionStore) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [
        store.create_session(
            SessionMeta(treadmill_id=f"lane-{i % 2}", started_at=t0 + timedelta(minutes=i))
        )
        for i in range(5)
    ]
    assert [s.id for s in store.list_sessions()] == ids[::-1]
    assert [s.id for s in store.list_sessions(limit=2)] == ids[:2:-1]
    assert [s.id for s in store.list_sessions(treadmill_id="lane-1")] == [ids[3], ids[1]]
    assert all(s.outcome is Outcome.RUNNING for s in store.list_sessions())


def test_finish_session_computes_summary_when_not_given(store: SessionStore) -> None:
    rec = SessionRecorder.start(store, synth.META)
    for i in range(41):
        rec.record_sample(Sample(t_s=i * 0.25, speed_kmh=3.6, distance_m=i * 0.25, segment=0))
    rec.flush()
    summary = store.finish_session(rec.session_id, "finished", "done")
    assert summary["distance_m"] == pytest.approx(10.0)
    assert summary["duration_s"] == 10.0
    assert summary["outcome"] == "finished" and summary["reason"] == "done"
    with pytest.raises(ValueError):
        store.finish_session(rec.session_id, "running")
    with pytest.raises(ValueError):
        store.finish_session(rec.session_id, "exploded")


def test_mark_running_as_aborted_keeps_data(store: SessionStore) -> None:
    done = synth.record(store, estop=False)
    rec = SessionRecorder.start(store, synth.META)
    for i in range(20):
        rec.record_sample(Sample(t_s=i * 0.25, speed_kmh=2.0, direction=Direction.REVERSE))
    rec.record_event(Event(t_s=1.0, type="segment", data={"index": 0}))
    rec.flush()
    aborted = store.mark_running_as_aborted("daemon restarted after a crash")
    assert aborted == [rec.session_id]
    info = store.get_session(rec.session_id)
    assert info.outcome is Outcome.ABORTED
    assert info.reason == "daemon restarted after a crash"
    assert info.sample_count == 20
    assert info.ended_at == info.started_at + timedelta(seconds=19 * 0.25)
    assert info.summary is not None and info.summary["reverse_distance_m"] > 0
    assert len(store.events(rec.session_id)) == 1
    assert store.get_session(done).outcome is Outcome.FINISHED
    assert store.mark_running_as_aborted("again") == []


def test_mark_running_as_aborted_spares_a_live_recorder(store: SessionStore) -> None:
    sid = store.create_session(synth.META)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        with store.connection() as c:
            c.execute("UPDATE sessions SET owner_pid=? WHERE id=?", (child.pid, sid))
        assert store.mark_running_as_aborted("restart") == []
        assert store.mark_running_as_aborted("forced", only_dead_owners=False) == [sid]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_retention_by_age_and_count_never_deletes_running(store: SessionStore) -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    ids = []
    for days in (40, 20, 10, 1):
        sid = store.create_session(
            SessionMeta(treadmill_id="lane-1", started_at=now - timedelta(days=days))
        )
        rec = SessionRecorder(store, sid)
        rec.record_sample(Sample(t_s=0.0, speed_kmh=1.0))
        rec.finish("finished")
        ids.append(sid)
    running = store.create_session(SessionMeta(started_at=now - timedelta(days=100)))
    assert store.apply_retention(max_age_days=30, now=now) == [ids[0]]
    assert store.apply_retention(max_sessions=2, now=now) == [ids[1]]
    remaining = {s.id for s in store.list_sessions(limit=100)}
    assert remaining == {ids[2], ids[3], running}
    # Samples went with their sessions (ON DELETE CASCADE).
    with store.connection() as c:
        assert c.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    assert store.apply_retention() == []


def test_default_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_data_dir() == tmp_path / "state" / "treadctl"
    assert default_db_path() == tmp_path / "state" / "treadctl" / "sessions.db"
    assert default_db_path(tmp_path) == tmp_path / "sessions.db"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "state" / "treadctl"


def test_closed_store_refuses_and_close_is_idempotent(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "s.db")
    store.close()
    store.close()
    with pytest.raises(StoreError):
        store.list_sessions()
