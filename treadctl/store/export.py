"""Exports of a recorded session: CSV, TCX (Garmin TrainingCenterDatabase v2) and FIT.

Direction is never lost on the way out:

* CSV: a ``direction`` column and ``signed_speed_kmh`` (negative = reverse).
* TCX: one ``Lap`` per program segment whose ``Notes`` start with ``reverse`` or
  ``forward``; speeds (``ns3:TPX/Speed``, m/s) stay magnitudes as the schema expects.
  Only schema elements are used, in schema order, so Garmin/Strava/Golden Cheetah load it.
* FIT (``fit-tool``): one record per second (FIT time resolution), one lap per segment
  (``wkt_step_index`` = segment index) and two
  developer fields (application "treadctl"): ``belt_direction`` (uint8, 0 forward,
  1 reverse) on every record and lap, and ``signed_speed`` (float32 m/s, negative =
  reverse) on every record. Standard ``speed`` stays a magnitude; ``grade`` is incline.

Heart rate (docs/heart-rate.md): the CSV has every sample's ``hr_bpm`` with its
``hr_source`` (strap | treadmill) and ``hr_quality`` (good | unreliable | lost; empty =
unknown). TCX ``HeartRateBpm`` and FIT ``heart_rate`` (records, lap and session averages and
maxima) carry only trusted values (:attr:`Sample.hr_trusted`), and when the session had a
strap, only the strap's: a treadmill value used during a strap failover stays in the CSV.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from xml.sax.saxutils import escape, quoteattr

from treadctl.store.db import SessionStore
from treadctl.store.model import Event, Sample, SessionInfo, as_utc, iso_utc
from treadctl.store.segments import Span, cumulative_distance_m, segment_spans
from treadctl.store.summary import summarize
from treadctl.types import KMH_PER_MPS, Direction

FORMATS = ("csv", "tcx", "fit")

TCX_NS = "http://www.garmin.com/xmlschemas/TrainingCenterDatabase/v2"
TCX_AX_NS = "http://www.garmin.com/xmlschemas/ActivityExtension/v2"
_XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_TCX_SCHEMA_LOCATION = f"{TCX_NS} http://www.garmin.com/xmlschemas/TrainingCenterDatabasev2.xsd"

CSV_COLUMNS = (
    "t_s",
    "ts",
    "segment",
    "state",
    "direction",
    "target_speed_kmh",
    "speed_kmh",
    "signed_target_speed_kmh",
    "signed_speed_kmh",
    "incline_pct",
    "target_incline_pct",
    "distance_m",
    "hr_bpm",
    "hr_source",
    "hr_quality",
)

# FIT developer fields (developer_data_index 0).
FIT_DEV_APP_ID = b"treadctl-sessns\x01"  # 16 bytes, identifies the field definitions
FIT_FIELD_BELT_DIRECTION = 0
FIT_FIELD_SIGNED_SPEED = 1


class ExportError(Exception):
    pass


def _sample_ts(session: SessionInfo, s: Sample) -> datetime:
    return (
        as_utc(s.ts) if s.ts is not None else as_utc(session.started_at) + timedelta(seconds=s.t_s)
    )


def _num(value: float, decimals: int) -> str:
    """Fixed-point text, never ``-0.00``: a standing reverse belt (-0.0) or a value that
    rounds to zero (-0.004) is plain zero in every export, whatever its sign was."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _no_negative_zero(value: float) -> float:
    return 0.0 if value == 0 else value


# --- CSV -----------------------------------------------------------------------------------


def to_csv(samples: Sequence[Sample]) -> str:
    """One row per sample, header row first, units in the column names."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for s in samples:
        w.writerow(
            (
                _num(s.t_s, 3),
                iso_utc(s.ts) if s.ts is not None else "",
                "" if s.segment is None else s.segment,
                s.state,
                str(s.direction),
                _num(s.target_speed_kmh, 2),
                _num(s.speed_kmh, 2),
                _num(s.signed_target_speed_kmh, 2),
                _num(s.signed_speed_kmh, 2),
                _num(s.incline_pct, 1),
                _num(s.target_incline_pct, 1),
                "" if s.distance_m is None else _num(s.distance_m, 1),
                "" if s.hr_bpm is None else s.hr_bpm,
                s.hr_source or "",
                s.hr_quality or "",
            )
        )
    return buf.getvalue()


# --- TCX -----------------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = TCX_NS) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        el.text = text
    return el


def export_hr(samples: Sequence[Sample]) -> list[int | None]:
    """The heart rate each sample exports to TCX/FIT (module docstring): trusted values,
    and only the strap's when the session had a strap."""
    strap = any(s.hr_source == "strap" for s in samples)
    return [s.hr_trusted if not strap or s.hr_source == "strap" else None for s in samples]


def _hr_values(hr: Sequence[int | None]) -> list[int]:
    return [v for v in hr if v is not None]


def _lap_notes(span: Span, n_spans: int) -> str:
    # Starts with the direction word so tools (and people) can filter on it.
    where = f"segment {span.index + 1}" if span.index is not None else "manual control"
    return (
        f"{span.direction} · {where} of {n_spans} · target {_num(span.target_speed_kmh, 1)} km/h"
        f" · incline {_num(span.target_incline_pct, 1)} %"
    )


def to_tcx(session: SessionInfo, samples: Sequence[Sample], events: Sequence[Event]) -> bytes:
    """TrainingCenterDatabase v2, one Activity (Sport="Running"), one Lap per segment."""
    root = ET.Element(f"{{{TCX_NS}}}TrainingCenterDatabase")
    root.set(f"{{{_XSI_NS}}}schemaLocation", _TCX_SCHEMA_LOCATION)
    activity = _sub(_sub(root, "Activities"), "Activity")
    activity.set("Sport", "Running")
    _sub(activity, "Id", iso_utc(session.started_at))
    cum = cumulative_distance_m(samples)
    hr = export_hr(samples)
    spans = segment_spans(samples, session.program)
    if not spans:
        # The schema needs at least one Lap; an empty session gets an empty one.
        lap = _sub(activity, "Lap")
        lap.set("StartTime", iso_utc(session.started_at))
        for tag, text in (
            ("TotalTimeSeconds", "0"),
            ("DistanceMeters", "0"),
            ("Calories", "0"),
            ("Intensity", "Resting"),
            ("TriggerMethod", "Manual"),
        ):
            _sub(lap, tag, text)
    for k, span in enumerate(spans):
        chunk = samples[span.start : span.stop]
        last = k == len(spans) - 1
        end_i = span.stop if span.stop < len(samples) else span.stop - 1
        lap = _sub(activity, "Lap")
        lap.set("StartTime", iso_utc(_sample_ts(session, chunk[0])))
        _sub(lap, "TotalTimeSeconds", _num(span.duration_s, 2))
        _sub(lap, "DistanceMeters", _num(cum[end_i] - cum[span.start], 2))
        _sub(lap, "MaximumSpeed", _num(max(s.speed_kmh for s in chunk) / KMH_PER_MPS, 3))
        # No body weight is known, so no honest energy estimate: 0 (the element is required).
        _sub(lap, "Calories", "0")
        hrs = _hr_values(hr[span.start : span.stop])
        if hrs:
            _sub(_sub(lap, "AverageHeartRateBpm"), "Value", str(round(sum(hrs) / len(hrs))))
            _sub(_sub(lap, "MaximumHeartRateBpm"), "Value", str(max(hrs)))
        moving = span.target_speed_kmh > 0
        _sub(lap, "Intensity", "Active" if moving else "Resting")
        # Program segments end on time; the last one may have been cut short by a stop.
        manual = span.index is None or (last and session.outcome != "finished")
        _sub(lap, "TriggerMethod", "Manual" if manual else "Time")
        track = _sub(lap, "Track")
        for i, s in enumerate(chunk, start=span.start):
            tp = _sub(track, "Trackpoint")
            _sub(tp, "Time", iso_utc(_sample_ts(session, s)))
            _sub(tp, "DistanceMeters", _num(cum[i], 2))
            if hr[i] is not None:
                _sub(_sub(tp, "HeartRateBpm"), "Value", str(hr[i]))
            tpx = _sub(_sub(tp, "Extensions"), "TPX", ns=TCX_AX_NS)
            _sub(tpx, "Speed", _num(s.speed_kmh / KMH_PER_MPS, 3), ns=TCX_AX_NS)
        _sub(lap, "Notes", _lap_notes(span, len(spans)))
        lx = _sub(_sub(lap, "Extensions"), "LX", ns=TCX_AX_NS)
        avg_mps = (cum[end_i] - cum[span.start]) / span.duration_s if span.duration_s > 0 else 0.0
        _sub(lx, "AvgSpeed", _num(avg_mps, 3), ns=TCX_AX_NS)
    summary = session.summary or summarize(samples, events, outcome=str(session.outcome))
    _sub(
        activity,
        "Notes",
        f"treadctl session {session.id} · program {session.program_name or '-'} · "
        f"treadmill {session.treadmill_id} · {session.outcome}"
        + (f" ({session.reason})" if session.reason else "")
        + f" · reverse {float(summary.get('reverse_distance_m') or 0):.0f} m in "
        f"{float(summary.get('reverse_time_s') or 0):.0f} s",
    )
    return _serialize(root)


# Garmin's own files use the ``ns3`` prefix for ActivityExtension and some TCX readers match
# it literally; ElementTree refuses to register ``ns<digits>`` prefixes, so we write the
# (simple: no mixed content) tree ourselves.
_PREFIXES = {TCX_NS: "", TCX_AX_NS: "ns3", _XSI_NS: "xsi"}


def _qname(tag: str) -> str:
    ns, _, local = tag[1:].partition("}")
    prefix = _PREFIXES[ns]
    return f"{prefix}:{local}" if prefix else local


def _serialize(root: ET.Element) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def write(el: ET.Element, depth: int, top: bool) -> None:
        pad = " " * depth
        attrs = "".join(
            f" {_qname(k) if k.startswith('{') else k}={quoteattr(v)}" for k, v in el.attrib.items()
        )
        if top:
            attrs = (
                "".join(f' xmlns{":" + p if p else ""}="{ns}"' for ns, p in _PREFIXES.items())
                + attrs
            )
        name = _qname(el.tag)
        children = list(el)
        if children:
            out.append(f"{pad}<{name}{attrs}>\n")
            for child in children:
                write(child, depth + 1, False)
            out.append(f"{pad}</{name}>\n")
        elif el.text is not None:
            out.append(f"{pad}<{name}{attrs}>{escape(el.text)}</{name}>\n")
        else:
            out.append(f"{pad}<{name}{attrs}/>\n")

    write(root, 0, True)
    return "".join(out).encode("utf-8")


# --- FIT -----------------------------------------------------------------------------------


def _ms(value: datetime) -> int:
    return round(as_utc(value).timestamp() * 1000)


def to_fit(session: SessionInfo, samples: Sequence[Sample], events: Sequence[Event]) -> bytes:
    """A FIT activity file: file_id, timer events, records, one lap per segment, session,
    activity; direction in developer fields (see module docstring)."""
    # fit-tool is imported here: it is large and only this export needs it.
    from fit_tool.base_type import BaseType
    from fit_tool.developer_field import DeveloperField
    from fit_tool.fit_file_builder import FitFileBuilder
    from fit_tool.profile.messages.activity_message import ActivityMessage
    from fit_tool.profile.messages.developer_data_id_message import DeveloperDataIdMessage
    from fit_tool.profile.messages.event_message import EventMessage
    from fit_tool.profile.messages.field_description_message import FieldDescriptionMessage
    from fit_tool.profile.messages.file_id_message import FileIdMessage
    from fit_tool.profile.messages.lap_message import LapMessage
    from fit_tool.profile.messages.record_message import RecordMessage
    from fit_tool.profile.messages.session_message import SessionMessage
    from fit_tool.profile.profile_type import (
        Activity,
        EventType,
        FileType,
        Intensity,
        LapTrigger,
        Manufacturer,
        Sport,
        SubSport,
    )
    from fit_tool.profile.profile_type import Event as FitEvent

    builder = FitFileBuilder(auto_define=True, min_string_size=16)
    start_ms = _ms(session.started_at)
    last_ms = _ms(_sample_ts(session, samples[-1])) if samples else start_ms

    fid = FileIdMessage()
    fid.type = FileType.ACTIVITY
    fid.manufacturer = Manufacturer.DEVELOPMENT.value
    fid.product = 1
    fid.serial_number = zlib.crc32(session.id.encode()) & 0x7FFFFFFF or 1  # stable per session
    fid.time_created = start_ms
    builder.add(fid)

    dev = DeveloperDataIdMessage()
    dev.application_id = FIT_DEV_APP_ID
    dev.developer_data_index = 0
    builder.add(dev)
    for field_no, name, base_type, units in (
        (FIT_FIELD_BELT_DIRECTION, "belt_direction", BaseType.UINT8, "0=fwd,1=rev"),
        (FIT_FIELD_SIGNED_SPEED, "signed_speed", BaseType.FLOAT32, "m/s"),
    ):
        desc = FieldDescriptionMessage()
        desc.developer_data_index = 0
        desc.field_definition_number = field_no
        desc.fit_base_type_id = base_type
        desc.field_name = name
        desc.units = units
        builder.add(desc)

    def dir_field(direction: Direction) -> DeveloperField:
        f = DeveloperField(
            developer_data_index=0,
            field_id=FIT_FIELD_BELT_DIRECTION,
            base_type=BaseType.UINT8,
            size=1,
        )
        f.set_value(0, 1 if direction == Direction.REVERSE else 0)
        return f

    ev = EventMessage()
    ev.event = FitEvent.TIMER
    ev.event_type = EventType.START
    ev.timestamp = start_ms
    builder.add(ev)

    hr = export_hr(samples)
    has_hr = any(v is not None for v in hr)
    cum = cumulative_distance_m(samples)
    last_second: int | None = None
    for i, s in enumerate(samples):
        ts_ms = _ms(_sample_ts(session, s))
        # FIT timestamps have 1 s resolution and Garmin/Strava expect them to increase:
        # one record per second (the first sample of it); laps/session use every sample.
        if ts_ms // 1000 == last_second:
            continue
        last_second = ts_ms // 1000
        speed_f = DeveloperField(
            developer_data_index=0,
            field_id=FIT_FIELD_SIGNED_SPEED,
            base_type=BaseType.FLOAT32,
            size=4,
        )
        speed_f.set_value(0, _no_negative_zero(s.signed_speed_kmh / KMH_PER_MPS))
        rec = RecordMessage(developer_fields=[dir_field(s.direction), speed_f])
        rec.timestamp = ts_ms
        rec.distance = cum[i]
        rec.speed = s.speed_kmh / KMH_PER_MPS
        rec.grade = _no_negative_zero(s.incline_pct)
        if has_hr:
            rec.heart_rate = hr[i]
        builder.add(rec)

    ev = EventMessage()
    ev.event = FitEvent.TIMER
    ev.event_type = EventType.STOP_ALL
    ev.timestamp = last_ms
    builder.add(ev)

    spans = segment_spans(samples, session.program)
    for k, span in enumerate(spans):
        chunk = samples[span.start : span.stop]
        end_i = span.stop if span.stop < len(samples) else span.stop - 1
        lap = LapMessage(developer_fields=[dir_field(span.direction)])
        lap.message_index = k
        lap.start_time = _ms(_sample_ts(session, chunk[0]))
        lap.timestamp = _ms(_sample_ts(session, samples[end_i]))
        lap.total_elapsed_time = span.duration_s
        lap.total_timer_time = span.duration_s
        dist = cum[end_i] - cum[span.start]
        lap.total_distance = dist
        lap.avg_speed = dist / span.duration_s if span.duration_s > 0 else 0.0
        lap.max_speed = max(s.speed_kmh for s in chunk) / KMH_PER_MPS
        hrs = _hr_values(hr[span.start : span.stop])
        if hrs:
            lap.avg_heart_rate = round(sum(hrs) / len(hrs))
            lap.max_heart_rate = max(hrs)
        lap.event = FitEvent.LAP
        lap.event_type = EventType.STOP
        lap.sport = Sport.RUNNING
        lap.sub_sport = SubSport.TREADMILL
        lap.intensity = Intensity.ACTIVE if span.target_speed_kmh > 0 else Intensity.REST
        last = k == len(spans) - 1
        manual = span.index is None or (last and session.outcome != "finished")
        lap.lap_trigger = (
            LapTrigger.SESSION_END if last else LapTrigger.MANUAL if manual else LapTrigger.TIME
        )
        if span.index is not None:
            lap.workout_step_index = span.index
        builder.add(lap)

    summary = summarize(samples, events, outcome=str(session.outcome))
    duration_s = (last_ms - start_ms) / 1000
    sess = SessionMessage()
    sess.message_index = 0
    sess.timestamp = last_ms
    sess.start_time = start_ms
    sess.total_elapsed_time = duration_s
    sess.total_timer_time = duration_s
    sess.total_distance = cum[-1] if cum else 0.0
    sess.avg_speed = (cum[-1] / duration_s) if cum and duration_s > 0 else 0.0
    sess.max_speed = float(summary["max_speed_kmh"]) / KMH_PER_MPS
    all_hr = _hr_values(hr)
    if all_hr:
        sess.avg_heart_rate = round(sum(all_hr) / len(all_hr))
        sess.max_heart_rate = max(all_hr)
    sess.sport = Sport.RUNNING
    sess.sub_sport = SubSport.TREADMILL
    sess.first_lap_index = 0
    sess.num_laps = len(spans)
    sess.event = FitEvent.SESSION
    sess.event_type = EventType.STOP
    builder.add(sess)

    act = ActivityMessage()
    act.timestamp = last_ms
    act.total_timer_time = duration_s
    act.num_sessions = 1
    act.type = Activity.MANUAL
    act.event = FitEvent.ACTIVITY
    act.event_type = EventType.STOP
    builder.add(act)

    data: bytes = builder.build().to_bytes()
    return data


# --- entry point ---------------------------------------------------------------------------


def export_session(store: SessionStore, session_id: str, fmt: str) -> bytes:
    """The session in ``fmt`` (one of :data:`FORMATS`) as bytes (CSV/TCX are UTF-8)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    session = store.get_session(session_id)
    samples = store.samples(session_id)
    if fmt == "csv":
        return to_csv(samples).encode("utf-8")
    events = store.events(session_id)
    if fmt == "tcx":
        return to_tcx(session, samples, events)
    return to_fit(session, samples, events)
