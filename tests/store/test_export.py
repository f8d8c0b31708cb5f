"""Every export read back by an independent parser: csv, xml.etree (namespace-aware), fitdecode."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import fitdecode
import pytest

from treadctl.store.db import SessionStore
from treadctl.store.export import ExportError, export_session
from treadctl.types import KMH_PER_MPS

import store_synth as synth  # conftest puts it on sys.path

NS = {
    "tcx": "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2",
    "ax": "http://www.garmin.com/xmlschemas/ActivityExtension/v2",
}
# Element order of ActivityLap_t / Trackpoint_t in TrainingCenterDatabasev2.xsd.
LAP_ORDER = [
    "TotalTimeSeconds", "DistanceMeters", "MaximumSpeed", "Calories", "AverageHeartRateBpm",
    "MaximumHeartRateBpm", "Intensity", "Cadence", "TriggerMethod", "Track", "Notes",
    "Extensions",
]  # fmt: skip
TRACKPOINT_ORDER = [
    "Time", "Position", "AltitudeMeters", "DistanceMeters", "HeartRateBpm", "Cadence",
    "SensorState", "Extensions",
]  # fmt: skip
SEGMENT_DIRECTIONS = [s["direction"] for s in synth.PROGRAM["segment"]]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _assert_schema_order(el: ET.Element, order: list[str]) -> None:
    names = [_local(c.tag) for c in el]
    positions = [order.index(n) for n in names]  # ValueError = element not allowed
    assert positions == sorted(positions), names
    assert len(set(names)) == len(names) or names.count("Track") == len(names) - len(set(names)) + 1


def test_csv(store: SessionStore, recorded: str) -> None:
    text = export_session(store, recorded, "csv").decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    samples = store.samples(recorded)
    assert len(rows) == len(samples)
    assert set(rows[0]) >= {
        "t_s", "ts", "direction", "speed_kmh", "signed_speed_kmh", "target_speed_kmh",
        "incline_pct", "distance_m", "hr_bpm", "segment", "state",
    }  # fmt: skip
    reverse = [r for r in rows if r["direction"] == "reverse" and float(r["speed_kmh"]) > 0.5]
    forward = [r for r in rows if r["direction"] == "forward" and float(r["speed_kmh"]) > 0.5]
    assert reverse and forward
    assert all(float(r["signed_speed_kmh"]) == -float(r["speed_kmh"]) for r in reverse)
    assert all(float(r["signed_speed_kmh"]) == float(r["speed_kmh"]) for r in forward)
    assert min(float(r["signed_speed_kmh"]) for r in rows) == pytest.approx(-3.0, abs=0.05)
    assert rows[0]["ts"] == "2026-11-26T10:30:00.000Z"
    # Reverse travel towards a target happens in the reverse segments only (the belt coasts
    # to a stop, target 0, at the start of the following forward segment).
    assert {r["segment"] for r in reverse if float(r["target_speed_kmh"]) > 0} == {"1", "3"}


def test_tcx(store: SessionStore, recorded: str) -> None:
    root = ET.fromstring(export_session(store, recorded, "tcx"))
    assert root.tag == f"{{{NS['tcx']}}}TrainingCenterDatabase"
    activities = root.findall("tcx:Activities/tcx:Activity", NS)
    assert len(activities) == 1
    act = activities[0]
    assert act.get("Sport") == "Running"
    assert act.findtext("tcx:Id", namespaces=NS) == "2026-11-26T10:30:00.000Z"
    laps = act.findall("tcx:Lap", NS)
    assert len(laps) == len(SEGMENT_DIRECTIONS)
    samples = store.samples(recorded)
    n_points = 0
    for lap, direction in zip(laps, SEGMENT_DIRECTIONS, strict=True):
        _assert_schema_order(lap, LAP_ORDER)
        assert (lap.findtext("tcx:Notes", namespaces=NS) or "").startswith(direction)
        assert float(lap.findtext("tcx:TotalTimeSeconds", namespaces=NS) or 0) > 0
        assert float(lap.findtext("tcx:DistanceMeters", namespaces=NS) or 0) > 0
        assert lap.findtext("tcx:Calories", namespaces=NS) == "0"
        assert lap.findtext("tcx:Intensity", namespaces=NS) in ("Active", "Resting")
        assert lap.findtext("tcx:TriggerMethod", namespaces=NS) in ("Time", "Manual")
        assert lap.get("StartTime", "").endswith("Z")
        for tp in lap.findall("tcx:Track/tcx:Trackpoint", NS):
            _assert_schema_order(tp, TRACKPOINT_ORDER)
            speed = tp.findtext("tcx:Extensions/ax:TPX/ax:Speed", namespaces=NS)
            assert speed is not None and float(speed) >= 0  # magnitudes, m/s
            assert tp.find("tcx:HeartRateBpm/tcx:Value", NS) is not None
            n_points += 1
    assert n_points == len(samples)
    assert laps[-1].findtext("tcx:TriggerMethod", namespaces=NS) == "Manual"  # cut by e-stop
    # Reverse lap of segment 2 (2.5 km/h): its trackpoints reach 2.5 km/h in m/s.
    rev_speeds = [
        float(x.text or 0)
        for x in laps[1].iterfind("tcx:Track/tcx:Trackpoint/tcx:Extensions/ax:TPX/ax:Speed", NS)
    ]
    assert max(rev_speeds[40:]) == pytest.approx(2.5 / KMH_PER_MPS, abs=0.02)
    total = sum(float(lap.findtext("tcx:DistanceMeters", namespaces=NS) or 0) for lap in laps)
    summary = store.get_session(recorded).summary
    assert summary is not None
    assert total == pytest.approx(summary["distance_m"], abs=0.5)
    assert "reverse" in (act.findtext("tcx:Notes", namespaces=NS) or "")


def test_fit(store: SessionStore, recorded: str, tmp_path: Path) -> None:
    path = tmp_path / "s.fit"
    path.write_bytes(export_session(store, recorded, "fit"))
    by_name: dict[str, list[dict[str, Any]]] = {}
    with fitdecode.FitReader(str(path), check_crc=fitdecode.CrcCheck.RAISE) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage):
                fields = {f.name: f.value for f in frame.fields}
                by_name.setdefault(frame.name, []).append(fields)
    assert by_name["file_id"][0]["type"] == "activity"
    records = by_name["record"]
    summary = store.get_session(recorded).summary
    assert summary is not None
    assert len(records) == pytest.approx(summary["duration_s"], abs=2)  # one per second
    times = [r["timestamp"] for r in records]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(float(r["speed"]) >= 0 for r in records)
    rev = [r for r in records if r["belt_direction"] == 1 and float(r["speed"]) > 0.2]
    assert rev and all(float(r["signed_speed"]) < 0 for r in rev)
    assert all(r["heart_rate"] for r in records)
    assert float(records[-1]["distance"]) == pytest.approx(summary["distance_m"], abs=3)
    laps = by_name["lap"]
    assert [lap["belt_direction"] for lap in laps] == [
        1 if d == "reverse" else 0 for d in SEGMENT_DIRECTIONS
    ]
    assert [lap.get("wkt_step_index") for lap in laps] == list(range(len(SEGMENT_DIRECTIONS)))
    assert all(lap["sub_sport"] == "treadmill" for lap in laps)
    assert sum(float(lap["total_distance"]) for lap in laps) == pytest.approx(
        summary["distance_m"], abs=0.5
    )
    (session,) = by_name["session"]
    assert session["sport"] == "running" and session["num_laps"] == len(laps)
    assert float(session["total_elapsed_time"]) == pytest.approx(summary["duration_s"], abs=1)
    assert by_name["activity"][0]["num_sessions"] == 1


def test_empty_session_exports(store: SessionStore) -> None:
    sid = store.create_session(synth.META)
    assert export_session(store, sid, "csv").decode().count("\n") == 1
    root = ET.fromstring(export_session(store, sid, "tcx"))
    assert len(root.findall("tcx:Activities/tcx:Activity/tcx:Lap", NS)) == 1
    assert export_session(store, sid, "fit")[8:12] == b".FIT"


def test_unknown_format(store: SessionStore, recorded: str) -> None:
    with pytest.raises(ExportError):
        export_session(store, recorded, "gpx")


def _standing_reverse_session() -> tuple[Any, list[Any]]:
    """A reverse bout that ends at standstill: speeds 0.0 and 0.004 km/h in reverse, an
    incline of -0.04 % (a machine that reads slightly below level)."""
    from datetime import timedelta

    from treadctl.store.model import Outcome, Sample, SessionInfo
    from treadctl.types import Direction

    info = SessionInfo(
        id="20261126-103000-lane-1-0000", treadmill_id="lane-1", device="sim://",
        profile="treadctl-reference", program_name="p", program=None,
        started_at=synth.STARTED_AT, ended_at=synth.STARTED_AT + timedelta(seconds=4),
        outcome=Outcome.FINISHED, reason="", summary=None,
    )  # fmt: skip
    rev = Direction.REVERSE
    samples = [
        Sample(t_s=t, speed_kmh=v, direction=d, target_speed_kmh=tv, incline_pct=-0.04,
               target_incline_pct=-0.0, distance_m=0.0, hr_bpm=90, segment=0,
               ts=synth.STARTED_AT + timedelta(seconds=t))
        for t, v, tv, d in [
            (0.0, 0.0, 0.0, rev), (1.0, 0.004, 0.0, rev), (2.0, 1.0, 2.0, rev),
            (3.0, 0.0, 0.0, rev), (4.0, 0.0, 0.0, Direction.FORWARD),
        ]
    ]  # fmt: skip
    return info, samples


def test_no_export_prints_negative_zero(tmp_path: Path) -> None:
    import math
    import re

    from treadctl.store.export import to_csv, to_fit, to_tcx

    info, samples = _standing_reverse_session()
    assert samples[0].signed_speed_kmh == 0.0 and math.copysign(1, samples[0].signed_speed_kmh) > 0
    negative_zero = re.compile(r"^-0(\.0*)?$")
    rows = list(csv.reader(io.StringIO(to_csv(samples))))
    cells = [c for row in rows[1:] for c in row]
    assert not [c for c in cells if negative_zero.match(c)], rows
    assert rows[3][8] == "-1.00"  # a real negative stays negative
    root = ET.fromstring(to_tcx(info, samples, []))
    texts = [el.text.strip() for el in root.iter() if el.text and el.text.strip()]
    assert not [t for t in texts if negative_zero.match(t)]
    assert not [t for t in texts if "-0.0 " in t or t.endswith("-0.0 %")]  # lap notes
    path = tmp_path / "z.fit"
    path.write_bytes(to_fit(info, samples, []))
    zeros = []
    with fitdecode.FitReader(str(path), check_crc=fitdecode.CrcCheck.RAISE) as reader:
        for frame in reader:
            if isinstance(frame, fitdecode.FitDataMessage) and frame.name == "record":
                fields = {f.name: f.value for f in frame.fields}
                zeros += [fields["signed_speed"], fields["grade"]]
    assert zeros and all(math.copysign(1, float(v)) > 0 for v in zeros if float(v) == 0), zeros
