"""SessionRecorder / StoreWriter: non-blocking queue, one writer per store, finishing."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from treadctl.clock import run_virtual
from treadctl.store.db import SessionStore
from treadctl.store.model import Outcome, as_utc
from treadctl.store.recorder import Event, Sample, SessionRecorder, StoreWriter, summarize
from treadctl.types import Direction

import store_synth as synth  # conftest puts it on sys.path


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("treadctl-store-writer")]


def test_many_recorders_share_one_writer_thread(tmp_path: Path) -> None:
    before = len(_writer_threads())
    with SessionStore(tmp_path / "s.db") as store:
        recs = [SessionRecorder.start(store, {"treadmill_id": f"lane-{i}"}) for i in range(10)]
        assert len({id(r.writer) for r in recs}) == 1
        assert len(_writer_threads()) == before + 1
        for k in range(100):
            for r in recs:
                r.record_sample(Sample(t_s=k * 0.25, speed_kmh=5.0))
        for r in recs:
            r.finish("finished")
        for r in recs:
            assert len(store.samples(r.session_id)) == 100
    # close() flushed and stopped the writer.
    assert len(_writer_threads()) == before


def test_full_queue_drops_and_counts_instead_of_blocking(store: SessionStore) -> None:
    small = StoreWriter(store, max_pending_samples=10, max_pending_events=5)
    rec = SessionRecorder.start(store, synth.META, writer=small)
    # Hold the store's connection (its lock): the writer cannot commit, as if the disk
    # had stalled.
    with store.connection():
        for i in range(50):
            rec.record_sample(Sample(t_s=i * 0.25, speed_kmh=1.0))  # returns at once
        for i in range(20):
            rec.record_event(Event(t_s=i, type="fault", data={"fault": "x"}))
        stats = small.stats()
        # The writer may have taken one batch before it blocked on the lock: at most
        # 10 + 10 samples and 5 + 5 events are held, the rest was dropped, nothing blocked.
        assert stats.samples_dropped >= 30
        assert stats.events_dropped >= 10
    small.flush()
    rec.finish("finished")
    small.close()
    stats = small.stats()
    assert stats.samples_written + stats.samples_dropped == 50
    assert stats.events_written + stats.events_dropped == 20
    assert len(store.samples(rec.session_id)) == stats.samples_written


def test_bad_row_does_not_cost_the_batch(store: SessionStore) -> None:
    rec = SessionRecorder.start(store, synth.META)
    rec.record_sample(Sample(t_s=0.0, speed_kmh=1.0))
    rec.record_sample(Sample(t_s=0.25, speed_kmh=None))  # type: ignore[arg-type]
    rec.record_sample(Sample(t_s=0.5, speed_kmh=1.0))
    rec.record_event(Event(t_s=0.5, type="command", data={"obj": object()}))  # not JSON
    rec.finish("finished")
    assert [s.t_s for s in store.samples(rec.session_id)] == [0.0, 0.5]
    assert rec.writer.stats().rows_rejected == 1
    assert store.events(rec.session_id)[0].data["obj"].startswith("<object")


def test_rows_store_every_field_and_null_in_recording_order(store: SessionStore) -> None:
    """The writer leaves None heart-rate columns out of a row and inserts runs of rows of
    one shape together: what is stored is still every field of every sample (NULL for
    None), with rowids in the order the samples were recorded and ``ts`` the session's
    start + t_s to the millisecond (truncated), across second and day boundaries."""
    hr_variants = [
        (None, None, None),
        (131, None, None),
        (131, "strap", None),
        (131, "strap", "good"),
        (None, "treadmill", "lost"),
        (None, None, "unreliable"),
        (0, "treadmill", "unreliable"),
    ]
    t_values = [0.0, 0.0005, 0.9995, 0.999_999_9, 1.0, 59.75, 3599.999, 86_399.9996, 90_000.125]
    rec = SessionRecorder.start(store, synth.META)
    recorded: list[Sample] = []
    k = 0
    for t_s in t_values:
        # Runs of one shape and single rows of another, interleaved.
        for hr, source, quality in [*hr_variants, hr_variants[0], hr_variants[0]]:
            k += 1
            sample = Sample(
                t_s=t_s + k * 1e-3,
                target_speed_kmh=None if k % 5 == 0 else 3.0,
                speed_kmh=2.5 + k / 100,
                direction=Direction.REVERSE if k % 2 else Direction.FORWARD,
                incline_pct=None if k % 7 == 0 else 1.5,
                target_incline_pct=None if k % 3 == 0 else 1.5,
                distance_m=float(k),
                hr_bpm=hr,
                state="running" if k % 4 else "paused",
                segment=None if k % 6 == 0 else k,
                hr_source=source,
                hr_quality=quality,
            )
            recorded.append(sample)
            rec.record_sample(sample)
    rec.finish("finished")
    started = as_utc(rec.started_at).replace(tzinfo=None)
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT t_s, ts, target_speed_kmh, speed_kmh, direction, incline_pct,"
            " target_incline_pct, distance_m, hr_bpm, state, segment, hr_source, hr_quality"
            " FROM samples ORDER BY rowid"
        ).fetchall()
    expected = [
        (
            s.t_s,
            (started + timedelta(seconds=s.t_s)).isoformat(timespec="milliseconds") + "Z",
            s.target_speed_kmh,
            s.speed_kmh,
            str(s.direction),
            s.incline_pct,
            s.target_incline_pct,
            s.distance_m,
            s.hr_bpm,
            s.state,
            s.segment,
            s.hr_source,
            s.hr_quality,
        )
        for s in recorded
    ]
    assert rows == expected


def test_finish_flushes_and_is_idempotent(store: SessionStore) -> None:
    samples, events = synth.synthetic_session(estop=False)
    rec = SessionRecorder.start(store, synth.META)
    for s in samples:
        rec.record_sample(s)
    for e in events:
        rec.record_event(e)
    summary = rec.finish("finished")
    assert summary == summarize(samples, events, outcome="finished")
    assert rec.finish("error", "late") == summary
    rec.record_sample(Sample(t_s=9999.0, speed_kmh=1.0))  # after finish: ignored
    rec.flush()
    assert len(store.samples(rec.session_id)) == len(samples)
    assert store.get_session(rec.session_id).outcome is Outcome.FINISHED


def test_async_use_on_virtual_time(store: SessionStore) -> None:
    async def session() -> str:
        rec = SessionRecorder.start(store, synth.META)
        async with rec:
            for i in range(4 * 60):  # one minute at 4 Hz of virtual time
                rec.record_sample(Sample(t_s=i / 4, speed_kmh=2.0, direction=Direction.REVERSE))
                await asyncio.sleep(0.25)
            await rec.afinish("stopped", "member pressed stop")
        return rec.session_id

    sid = run_virtual(session)
    info = store.get_session(sid)
    assert info.outcome is Outcome.STOPPED and info.reason == "member pressed stop"
    assert info.sample_count == 240
    assert info.summary is not None and info.summary["reverse_time_s"] == pytest.approx(59.75)


def test_async_context_records_an_error_and_keeps_data(store: SessionStore) -> None:
    async def session() -> str:
        rec = SessionRecorder.start(store, synth.META)
        with pytest.raises(RuntimeError):
            async with rec:
                rec.record_sample(Sample(t_s=0.0, speed_kmh=1.0))
                raise RuntimeError("control loop bug")
        return rec.session_id

    sid = run_virtual(session)
    info = store.get_session(sid)
    assert info.outcome is Outcome.ERROR and "control loop bug" in info.reason
    assert info.sample_count == 1


def test_aclose_without_finish_marks_aborted(store: SessionStore) -> None:
    async def session() -> str:
        rec = SessionRecorder.start(store, synth.META)
        rec.record_sample(Sample(t_s=0.0, speed_kmh=1.0))
        await rec.aclose()
        return rec.session_id

    assert store.get_session(run_virtual(session)).outcome is Outcome.ABORTED


def test_summarize_numbers() -> None:
    fwd, rev = Direction.FORWARD, Direction.REVERSE
    samples = [
        Sample(t_s=0.0, speed_kmh=0.0, direction=fwd, distance_m=0.0, segment=0, hr_bpm=100),
        Sample(t_s=10.0, speed_kmh=3.6, direction=fwd, distance_m=10.0, segment=0, hr_bpm=120),
        Sample(t_s=20.0, speed_kmh=0.0, direction=rev, distance_m=20.0, segment=1),
        Sample(t_s=30.0, speed_kmh=7.2, direction=rev, distance_m=30.0, segment=1, hr_bpm=140),
        # odometer reset: integrate speed instead (7.2 and 0 km/h over 10 s = 10 m)
        Sample(t_s=40.0, speed_kmh=0.0, direction=rev, distance_m=0.0, segment=1),
    ]
    events = [Event(t_s=41.0, type="estop", data={"reason": "x"})]
    s = summarize(samples, events, outcome="estopped", reason="x")
    assert s["duration_s"] == 41.0
    assert s["forward_distance_m"] == 20.0
    assert s["reverse_distance_m"] == 20.0
    assert s["distance_m"] == 40.0
    assert s["reverse_time_s"] == 20.0
    assert s["max_speed_kmh"] == 7.2 and s["max_reverse_speed_kmh"] == 7.2
    assert s["avg_hr_bpm"] == 120.0 and s["max_hr_bpm"] == 140
    assert s["segments_completed"] == 1  # the reverse one was cut short
    assert summarize(samples, [], outcome="finished")["segments_completed"] == 2
    empty = summarize([], [])
    assert empty["duration_s"] == 0.0 and empty["avg_hr_bpm"] is None
