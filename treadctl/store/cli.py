"""``treadctl sessions``: list, show, export and plot recorded sessions (docs/cli.md).

Also home of :func:`print_summary`, the closing line ``treadctl run`` prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from treadctl.cli import EXIT_OK, UsageError
from treadctl.store.db import (
    STALE_SESSION_REASON,
    SessionNotFound,
    SessionStore,
    StoreError,
    default_data_dir,
    default_db_path,
)
from treadctl.store.model import Event, Outcome, SessionInfo, iso_utc
from treadctl.store.segments import program_segments
from treadctl.store.summary import format_duration, print_summary

__all__ = ["print_summary", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"where sessions.db lives (default: {default_data_dir()})",
    )
    p = subparsers.add_parser(
        "sessions",
        help="list, show, export and plot recorded sessions",
        description="Recorded sessions (SQLite in the data directory).",
    )
    sub = p.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", parents=[common], help="newest sessions first")
    ls.add_argument(
        "--json", action="store_true", help="one JSON object per session and line (JSON lines)"
    )
    ls.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (default 20)")
    ls.add_argument("--treadmill", metavar="ID", help="only this treadmill")
    ls.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", parents=[common], help="details and summary of one session")
    show.add_argument("id", metavar="ID", help="session id or a unique prefix of one")
    show.add_argument("--json", action="store_true", help="one JSON object, with every event")
    show.set_defaults(func=_cmd_show)

    exp = sub.add_parser("export", parents=[common], help="CSV, TCX or FIT file of a session")
    exp.add_argument("id", metavar="ID", help="session id or a unique prefix of one")
    exp.add_argument("--format", "-f", required=True, metavar="csv|tcx|fit")
    exp.add_argument(
        "-o", "--output", metavar="FILE", help="output file (csv/tcx default: stdout; fit: ID.fit)"
    )
    exp.set_defaults(func=_cmd_export)

    plot = sub.add_parser("plot", parents=[common], help="PNG of speed, incline and events")
    plot.add_argument("id", metavar="ID", help="session id or a unique prefix of one")
    plot.add_argument("-o", "--output", required=True, metavar="FILE.png")
    plot.add_argument("--size", default="1600x900", metavar="WxH", help="pixels (default 1600x900)")
    plot.set_defaults(func=_cmd_plot)


# --- helpers -------------------------------------------------------------------------------


def _open(args: argparse.Namespace, *, must_exist: bool = True) -> SessionStore:
    db = default_db_path(args.data_dir)
    if must_exist and not db.exists():
        raise UsageError(f"no sessions recorded yet ({db} does not exist)")
    try:
        store = SessionStore(db)
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    try:
        # A session whose process died (SIGKILL, power, crash) would stay 'running' for ever:
        # close it as aborted, with its data, as `treadctl run` does. Live processes and
        # sessions recorded by another host are left alone.
        stale = store.mark_running_as_aborted(STALE_SESSION_REASON, only_this_host=True)
    except (OSError, StoreError, sqlite3.Error) as exc:
        stale = []  # a read-only store still lists and exports
        print(f"treadctl: could not close stale sessions: {exc}", file=sys.stderr)
    for session_id in stale:
        print(f"treadctl: session {session_id} was left running; closed as aborted",
              file=sys.stderr)
    return store


def _resolve(store: SessionStore, prefix: str) -> str:
    try:
        return store.resolve_id(prefix)
    except SessionNotFound as exc:
        raise UsageError(str(exc)) from exc


def _writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"cannot write {path}: is a directory")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"cannot write {path}: permission denied")


def _write_file(path: Path, data: bytes) -> None:
    _writable(path)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _row(info: SessionInfo) -> list[str]:
    summary = info.summary or {}
    dist = summary.get("distance_m")
    return [
        info.id,
        info.started_at.strftime("%Y-%m-%d %H:%M"),
        info.treadmill_id,
        info.program_name or "-",
        format_duration(float(summary["duration_s"])) if summary else "-",
        f"{float(dist) / 1000:.2f} km" if dist is not None else "-",
        f"{float(summary.get('reverse_distance_m') or 0):.0f} m" if summary else "-",
        str(info.outcome),
    ]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


# --- commands ------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be >= 0")
    db = default_db_path(args.data_dir)
    if not db.exists():
        if not args.json:  # JSON lines: no session, no line
            print(f"no sessions recorded yet ({db})")
        return EXIT_OK
    with _open(args) as store:
        sessions = store.list_sessions(args.limit, args.treadmill)
    if args.json:
        for s in sessions:
            print(json.dumps(s.to_dict()))
        return EXIT_OK
    if not sessions:
        print("no sessions")
        return EXIT_OK
    header = [
        "ID",
        "STARTED (UTC)",
        "TREADMILL",
        "PROGRAM",
        "TIME",
        "DISTANCE",
        "REVERSE",
        "OUTCOME",
    ]
    print(_table([_row(s) for s in sessions], header))
    return EXIT_OK


def _session_events(info: SessionInfo, events: list[Event]) -> list[dict[str, Any]]:
    """Every recorded event in time order, ending with ``finished`` once the session is
    over: the controller's own ``finished`` event when one was recorded, else one made
    from the session row (outcome, reason, end time, summary)."""
    out = [
        {
            "t_s": e.t_s,
            "ts": iso_utc(e.ts) if e.ts else None,
            "type": e.type,
            "data": dict(e.data),
        }
        for e in events
    ]
    if info.outcome != Outcome.RUNNING and not any(e["type"] == "finished" for e in out):
        summary = info.summary or {}
        last_t = max([float(summary.get("duration_s") or 0.0), *(e.t_s for e in events)])
        data: dict[str, Any] = {"outcome": str(info.outcome), "reason": info.reason}
        for key in ("distance_m", "segments_completed"):
            if key in summary:
                data[key] = summary[key]
        out.append(
            {
                "t_s": last_t,
                "ts": iso_utc(info.ended_at) if info.ended_at else None,
                "type": "finished",
                "data": data,
            }
        )
    return out


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _pairs(data: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in data.items() if k not in skip)


def _event_text(entry: dict[str, Any], info: SessionInfo) -> str:
    """One readable line for one event: segments and stops in words, the rest as k=v."""
    kind, data = entry["type"], entry["data"]
    if kind == "segment":
        segs = program_segments(info.program)
        if "segment" in data:  # the controller numbers segments from 1
            number = int(data["segment"])
        elif "index" in data:
            number = int(data["index"]) + 1
        else:
            return _pairs(data)
        text = f"{number}/{len(segs)}" if segs else str(number)
        if "direction" in data:
            text += f" {data['direction']}"
        if "speed_kmh" in data:
            text += f" {float(data['speed_kmh']):.1f} km/h"
        if "incline_pct" in data:
            text += f", incline {float(data['incline_pct']):.1f} %"
        if "duration_s" in data:
            text += f", {format_duration(float(data['duration_s']))}"
        label = data.get("label")
        if label is None and 0 < number <= len(segs):
            label = segs[number - 1].get("label")
        rest = _pairs(data, ("segment", "index", "direction", "speed_kmh", "incline_pct",
                             "duration_s", "label"))  # fmt: skip
        return text + (f" · {label}" if label else "") + (f" ({rest})" if rest else "")
    if kind == "finished":
        text = str(data.get("outcome") or "finished")
        if data.get("reason"):
            text += f": {data['reason']}"
        rest = _pairs(data, ("outcome", "reason", "session_id", "summary"))
        return text + (f" ({rest})" if rest else "")
    if kind == "session-start":
        return _pairs(data, ("session_id",))  # the id heads the page already
    if kind == "machine-status" and set(data) == {"status"}:
        return str(data["status"])
    if "reason" in data:  # e-stops, interlocks, faults, resets: the reason first
        what = data.get("interlock") or data.get("fault")
        reason = str(data["reason"])
        text = reason if not what or reason.startswith(str(what)) else f"{what}: {reason}"
        rest = _pairs(data, ("reason", "interlock", "fault"))
        return text + (f" ({rest})" if rest else "")
    return _pairs(data)


def _event_lines(entries: list[dict[str, Any]], info: SessionInfo) -> list[str]:
    """Consecutive identical events (FTMS status echoes during a ramp come one per
    setpoint) become one line with a count, so nothing is hidden and nothing floods."""
    lines: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        j = i + 1
        while (
            j < len(entries)
            and entries[j]["type"] == entry["type"]
            and entries[j]["data"] == entry["data"]
        ):
            j += 1
        text = _event_text(entry, info)
        if j - i > 1:
            text += f" ×{j - i} (until {format_duration(entries[j - 1]['t_s'])})"
        lines.append(f"  {format_duration(entry['t_s']):>8}  {entry['type']:<16} {text}".rstrip())
        i = j
    return lines


def _cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as store:
        sid = _resolve(store, args.id)
        info = store.get_session(sid)
        events = store.events(sid)
    entries = _session_events(info, events)
    if args.json:
        out: dict[str, Any] = info.to_dict()
        out["events"] = entries
        print(json.dumps(out, indent=1))
        return EXIT_OK
    lines = [
        f"session    {info.id}",
        f"treadmill  {info.treadmill_id}" + (f"  ({info.device})" if info.device else ""),
        f"profile    {info.profile or '-'}",
        f"program    {info.program_name or '-'}",
        f"started    {info.started_at:%Y-%m-%d %H:%M:%S} UTC",
        f"ended      {info.ended_at:%Y-%m-%d %H:%M:%S} UTC" if info.ended_at else "ended      -",
        f"outcome    {info.outcome}" + (f" ({info.reason})" if info.reason else ""),
        f"samples    {info.sample_count}",
    ]
    if entries:
        lines.append(f"events     {len(entries)}")
        lines.extend(_event_lines(entries, info))
    if info.summary:
        lines.append("summary    " + print_summary(info.summary))
    print("\n".join(lines))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from treadctl.store.export import FORMATS, export_session

    fmt = str(args.format).lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {args.format!r} (choose {', '.join(FORMATS)})")
    out = Path(args.output) if args.output else None
    if out is not None:
        _writable(out)
    with _open(args) as store:
        sid = _resolve(store, args.id)
        if out is None and fmt == "fit":
            out = Path(f"{sid}.fit")
            _writable(out)
        data = export_session(store, sid, fmt)
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    _write_file(out, data)
    print(f"wrote {out} ({len(data)} bytes)", file=sys.stderr)
    return EXIT_OK


def _cmd_plot(args: argparse.Namespace) -> int:
    from treadctl.store.plot import plot_session

    try:
        w, h = (int(v) for v in str(args.size).lower().split("x"))
        if not (200 <= w <= 10000 and 200 <= h <= 10000):
            raise ValueError
    except ValueError:
        raise UsageError(f"bad --size {args.size!r}: expected WxH, e.g. 1600x900") from None
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise UsageError(f"plot output must be a .png file, got {out}")
    _writable(out)
    with _open(args) as store:
        sid = _resolve(store, args.id)
        info = store.get_session(sid)
        samples = store.samples(sid)
        events = store.events(sid)
    try:
        plot_session(info, samples, events, out, width_px=w, height_px=h)
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK
