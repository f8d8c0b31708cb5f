"""Heart rate in the store and its outputs (docs/heart-rate.md): hr_source and hr_quality per
sample (schema v2, v1 files still readable), CSV columns, TCX/FIT heart rate from trusted
strap readings, the summary, and the plot's heart-rate panel with the zone band.

The session comes from the HR supervisor on the simulator's heart model (tests/hr/lane.py):
a forward warm-up, then a governed reverse walk (zone 100-110 bpm) during which the strap
drops out for 30 s (the treadmill's own HR field takes over, then the strap again) and then
sends spikes for a minute, then a forward cool-down.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import fitdecode
import pytest

from tests.hr.lane import Lane, governed
from treadctl.store import db as dbmod
from treadctl.store.db import SessionStore
from treadctl.store.export import export_hr, export_session
from treadctl.store.model import Event, Sample, SessionMeta
from treadctl.store.plot import bad_hr_runs, plot_session, zone_bands
from treadctl.store.recorder import SessionRecorder
from treadctl.store.segments import segment_spans
from treadctl.types import Direction

import store_synth as synth  # conftest puts it on sys.path

REV = Direction.REVERSE
ZONE = (100.0, 110.0)
PROGRAM: dict[str, Any] = {
    "name": "backward-walk-hr-zone",
    "segments": [
        {"duration_s": 60, "speed_kmh": 3.0, "direction": "forward", "label": "warm-up"},
        {"duration_s": 480, "speed_kmh": 3.0, "direction": "reverse", "label": "zone",
         "hr_zone_bpm": list(ZONE), "min_speed_kmh": 2.0, "max_speed_kmh": 5.5},
        {"duration_s": 60, "speed_kmh": 2.5, "direction": "forward", "label": "cool-down"},
    ],
}


def _program_speed(lane: Lane) -> float:
    """The program's speed at the lane's time (its last ``(start, speed)`` begun)."""
    speed = 0.0
    for start, v in lane.speeds:
        if lane.t >= start:
            speed = v
    return speed


def governed_session() -> tuple[list[Sample], list[Event]]:
    """One sample per second (and the events) of the session in the module docstring."""
    lane = Lane(Direction.FORWARD, None, speeds=[(0.0, 3.0), (60.0, 0.0)],
                faults="dropout@260+30,spike@400+60", treadmill="true")
    samples: list[Sample] = []
    segment = 0

    def record(seconds: int) -> None:
        for _ in range(seconds):
            lane.run(1)
            st = lane.steps[-1].status
            target = st.wanted_speed_kmh if st.wanted_speed_kmh is not None else (
                _program_speed(lane))
            samples.append(Sample(
                t_s=lane.t, speed_kmh=round(lane.belt, 2), direction=lane.direction,
                target_speed_kmh=target, hr_bpm=st.bpm, hr_source=st.source,
                hr_quality=st.quality, segment=segment, state="running"))

    record(64)  # warm-up, then the belt stands (3.0 km/h at 0.9 km/h/s: 3.3 s)
    segment = 1
    lane.begin(governed(Direction.REVERSE, ZONE, duration_s=480), Direction.REVERSE)
    record(480)
    segment = 2
    lane.end([(0.0, 0.0)])  # the belt stands before the direction changes back
    record(4)
    lane.direction = Direction.FORWARD
    lane.speeds = [(0.0, 2.5)]
    record(56)
    events = [Event(t_s=float(e["t"]), type=str(e["type"]),
                    data={k: v for k, v in e.items() if k not in ("t", "type")})
              for e in lane.events]
    return samples, events


@pytest.fixture(scope="module")
def session_data() -> tuple[list[Sample], list[Event]]:
    return governed_session()


@pytest.fixture
def hr_session(store: SessionStore, session_data: tuple[list[Sample], list[Event]]) -> str:
    samples, events = session_data
    rec = SessionRecorder.start(store, SessionMeta(
        treadmill_id="lane-2", program_name="backward-walk-hr-zone", program=PROGRAM,
        started_at=synth.STARTED_AT))
    for s in samples:
        rec.record_sample(s)
    for e in events:
        rec.record_event(e)
    rec.finish("finished", "")
    return rec.session_id


def test_the_session_is_what_the_docstring_says(
        session_data: tuple[list[Sample], list[Event]]) -> None:
    samples, events = session_data
    sources = {s.hr_source for s in samples}
    assert sources == {"strap", "treadmill"}
    assert any(s.hr_quality == "unreliable" for s in samples)  # the spikes
    assert [e.type for e in events if e.type == "hr-source"]  # the failover
    gov = [s for s in samples if s.segment == 1 and s.t_s > 240]
    assert all(ZONE[0] - 3 <= (s.hr_bpm or ZONE[0]) <= ZONE[1] + 3 for s in gov)


def test_hr_source_and_quality_are_stored(store: SessionStore, hr_session: str,
                                          session_data: tuple[list[Sample], list[Event]],
                                          ) -> None:
    got = store.samples(hr_session)
    want, _ = session_data
    assert [(s.hr_bpm, s.hr_source, s.hr_quality) for s in got] == [
        (s.hr_bpm, s.hr_source, s.hr_quality) for s in want]
    kinds = {e.type for e in store.events(hr_session)}
    assert {"hr-source", "hr-unreliable", "hr-recovered"} <= kinds
    summary = store.get_session(hr_session).summary
    assert summary is not None
    trusted = [s.hr_bpm for s in want if s.hr_quality == "good" and s.hr_bpm]
    assert summary["max_hr_bpm"] == max(trusted)  # no spike in the summary


def test_a_v1_file_is_migrated_and_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SessionStore(path, migrations=dbmod.MIGRATIONS[:1]) as old:
        assert old.schema_version == 1
        sid = old.create_session(synth.META)
        ref = old.session_ref(sid)[0]
        old._conn.execute(
            "INSERT INTO samples (session_ref, t_s, ts, target_speed_kmh, speed_kmh, direction,"
            " incline_pct, target_incline_pct, distance_m, hr_bpm, state, segment)"
            " VALUES (?, 1.0, '2026-11-26T10:30:01.000Z', 3, 3, 'reverse', 0, 0, 1, 97,"
            " 'running', 0)", (ref,))
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(samples)")]
        assert "hr_source" not in cols
    with SessionStore(path) as new:
        assert new.schema_version == len(dbmod.MIGRATIONS) == 2
        (s,) = new.samples(sid)
        assert (s.hr_bpm, s.hr_source, s.hr_quality, s.hr_trusted) == (97, None, None, 97)
        assert export_session(new, sid, "csv").decode().splitlines()[1].endswith(",97,,")
        # And it records new samples with their source and quality.
        rec = SessionRecorder(new, sid)
        rec.record_sample(Sample(t_s=2.0, speed_kmh=3.0, hr_bpm=98, hr_source="strap",
                                 hr_quality="good"))
        rec.finish("finished", "")
        assert [x.hr_source for x in new.samples(sid)] == [None, "strap"]
        assert new.integrity_check() == "ok"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_csv_carries_source_and_quality(store: SessionStore, hr_session: str) -> None:
    rows = list(csv.DictReader(io.StringIO(export_session(store, hr_session, "csv").decode())))
    assert {"hr_bpm", "hr_source", "hr_quality"} <= set(rows[0])
    assert {r["hr_source"] for r in rows} == {"strap", "treadmill"}
    assert {r["hr_quality"] for r in rows} >= {"good", "unreliable"}
    failover = [r for r in rows if r["hr_source"] == "treadmill" and r["hr_quality"] == "good"]
    assert failover and all(r["hr_bpm"] for r in failover)


def _fit(store: SessionStore, sid: str, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    path = tmp_path / "s.fit"
    path.write_bytes(export_session(store, sid, "fit"))
    by_name: dict[str, list[dict[str, Any]]] = {}
    with fitdecode.FitReader(str(path), check_crc=fitdecode.CrcCheck.RAISE) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage):
                by_name.setdefault(frame.name, []).append(
                    {f.name: f.value for f in frame.fields})
    return by_name


def test_fit_heart_rate_is_the_strap_s_trusted_readings(
        store: SessionStore, hr_session: str, tmp_path: Path) -> None:
    samples = store.samples(hr_session)
    by_name = _fit(store, hr_session, tmp_path)
    records = by_name["record"]
    assert len(records) == len(samples)  # one sample per second here
    for s, r in zip(samples, records, strict=True):
        if s.hr_source == "strap" and s.hr_quality == "good":
            assert r["heart_rate"] == s.hr_bpm
        else:  # the treadmill's failover values and every untrusted reading: absent
            assert r.get("heart_rate") is None, (s, r)
    strap = [s.hr_bpm for s in samples if s.hr_source == "strap" and s.hr_quality == "good"]
    (sess,) = by_name["session"]
    assert sess["max_heart_rate"] == max(strap)  # type: ignore[type-var]
    assert sess["avg_heart_rate"] == round(sum(strap) / len(strap))  # type: ignore[arg-type]
    laps = by_name["lap"]
    assert len(laps) == 3 and all(lap["max_heart_rate"] <= 115 for lap in laps)


def test_fit_heart_rate_from_the_treadmill_when_there_is_no_strap(
        store: SessionStore, tmp_path: Path) -> None:
    rec = SessionRecorder.start(store, synth.META)
    for k in range(60):
        rec.record_sample(Sample(t_s=float(k), speed_kmh=3.0, hr_bpm=90 + k % 5,
                                 hr_source="treadmill", hr_quality="good"))
    rec.record_sample(Sample(t_s=60.0, speed_kmh=3.0, hr_bpm=199, hr_source="treadmill",
                             hr_quality="unreliable"))
    rec.finish("finished", "")
    records = _fit(store, rec.session_id, tmp_path)["record"]
    assert [r.get("heart_rate") for r in records] == [90 + k % 5 for k in range(60)] + [None]


def test_tcx_heart_rate_is_trusted_strap_only(store: SessionStore, hr_session: str) -> None:
    ns = {"tcx": "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"}
    root = ET.fromstring(export_session(store, hr_session, "tcx"))
    samples = store.samples(hr_session)
    points = root.findall(".//tcx:Trackpoint", ns)
    assert len(points) == len(samples)
    for s, tp in zip(samples, points, strict=True):
        value = tp.findtext("tcx:HeartRateBpm/tcx:Value", namespaces=ns)
        want = s.hr_bpm if s.hr_source == "strap" and s.hr_quality == "good" else None
        assert (int(value) if value else None) == want
    assert export_hr(samples).count(None) == sum(1 for p in points if p.find(
        "tcx:HeartRateBpm", ns) is None)


def test_plot_draws_the_hr_panel_with_the_zone_band(store: SessionStore, hr_session: str,
                                                    tmp_path: Path) -> None:
    session = store.get_session(hr_session)
    samples = store.samples(hr_session)
    bands = zone_bands(segment_spans(samples, session.program), session.program)
    assert len(bands) == 1
    t0, t1, low, high = bands[0]
    assert (low, high) == ZONE and t1 - t0 == pytest.approx(480, abs=1)
    assert bad_hr_runs(samples)  # the spikes, hatched
    out = tmp_path / "hr.png"
    plot_session(session, samples, store.events(hr_session), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000
    keep = Path("/tmp/treadctl-hr-plot.png")  # for a person to look at, outside the tree
    keep.write_bytes(data)


def test_plot_marks_the_hr_loss_rule(store: SessionStore, tmp_path: Path) -> None:
    """A governed reverse walk whose strap loses contact at 200 s: hatched from then on,
    the walk and the controlled stop marked."""
    lane = Lane(Direction.REVERSE, governed(Direction.REVERSE, ZONE), faults="contact-lost@200")
    rec = SessionRecorder.start(store, SessionMeta(
        treadmill_id="lane-3", program_name="hr-loss", started_at=synth.STARTED_AT,
        program={"name": "hr-loss", "segments": [PROGRAM["segments"][1]]}))
    for _ in range(300):
        lane.run(1)
        st = lane.steps[-1].status
        rec.record_sample(Sample(t_s=lane.t, speed_kmh=round(lane.belt, 2), direction=REV,
                                 target_speed_kmh=0.0 if lane.stopping else (
                                     st.wanted_speed_kmh or 0.0),
                                 hr_bpm=st.bpm, hr_source=st.source, hr_quality=st.quality,
                                 segment=0))
    for e in lane.events:
        rec.record_event(Event(t_s=float(e["t"]), type=str(e["type"])))
    rec.finish("stopped", "heart rate not recovered")
    sid = rec.session_id
    kinds = [e.type for e in store.events(sid)]
    assert kinds == ["hr-unreliable", "hr-loss-walk", "hr-loss-stop"]
    runs = bad_hr_runs(store.samples(sid))
    assert len(runs) == 1 and runs[0][0] == 200.0 and runs[0][1] == 300.0
    out = tmp_path / "loss.png"
    plot_session(store.get_session(sid), store.samples(sid), store.events(sid), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 30_000
