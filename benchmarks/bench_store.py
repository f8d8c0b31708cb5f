"""Session store load: a 50-treadmill gym recording at 4 Hz for one hour of session time.

720,000 samples go through 50 ``SessionRecorder``s sharing one store (one writer thread),
as fast as the writer takes them: the producer hands over a virtual minute at a time and
waits for the commit, the way a real loop never lets the queue overflow. Reported:

* writer CPU seconds for the hour (``time.thread_time`` of the writer thread) and the share
  of one core that is in real time (cpu_s / 3600 s) — target < 5 %;
* the cost of ``record_sample`` on the control loop (µs per call, main-thread CPU);
* DB size per session-hour after a WAL checkpoint;
* the time ``finish`` takes for one hour-long session (summary over its samples);
* baseline, same run: the naive writer (one INSERT + COMMIT per sample) on a slice,
  extrapolated to the hour; ``ratio`` = naive CPU / batched CPU.

``quick`` records 6 minutes instead of 60 and extrapolates x10 (the note says so).
"""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from treadctl.store.db import SessionStore
from treadctl.store.model import Sample, SessionMeta
from treadctl.store.recorder import SessionRecorder, StoreWriter
from treadctl.types import Direction

TREADMILLS = 50
HZ = 4
HOUR_S = 3600
TARGET_CPU_PCT = 5.0
NAIVE_SLICE = 3000


def _sample(t_s: float, lane: int) -> Sample:
    # 2 minutes forward, 1 minute reverse, repeating; each lane a bit different.
    reverse = (t_s // 60) % 3 == 2
    speed = (2.5 if reverse else 6.0 + lane % 5) + 0.05 * math.sin(t_s + lane)
    return Sample(
        t_s=t_s,
        target_speed_kmh=round(speed),
        speed_kmh=speed,
        direction=Direction.REVERSE if reverse else Direction.FORWARD,
        incline_pct=1.0,
        target_incline_pct=1.0,
        distance_m=t_s * 1.6,
        hr_bpm=120 + lane % 30,
        state="running",
        segment=int(t_s // 60),
    )


def _naive_cpu_per_sample(path: Path) -> float:
    """CPU seconds per sample of the obvious design: INSERT + COMMIT for every sample."""
    with SessionStore(path) as store:
        sid = store.create_session(SessionMeta(treadmill_id="naive"))
        ref, started = store.session_ref(sid)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    samples = [_sample(i / HZ, 0) for i in range(NAIVE_SLICE)]
    cpu0 = time.process_time()
    for s in samples:
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO samples (session_ref, t_s, ts, target_speed_kmh, speed_kmh, direction,"
            " incline_pct, target_incline_pct, distance_m, hr_bpm, state, segment)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (ref, s.t_s, started.isoformat(), s.target_speed_kmh, s.speed_kmh,
             str(s.direction), s.incline_pct, s.target_incline_pct, s.distance_m, s.hr_bpm,
             s.state, s.segment),
        )  # fmt: skip
        conn.execute("COMMIT")
    cpu = time.process_time() - cpu0
    conn.close()
    return cpu / NAIVE_SLICE


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 360 if quick else HOUR_S
    scale = HOUR_S / seconds
    note = f"quick: {seconds} s recorded, x{scale:g} extrapolated" if quick else ""
    with tempfile.TemporaryDirectory(prefix="treadctl-bench-store-") as tmp:
        path = Path(tmp) / "sessions.db"
        store = SessionStore(path)
        recs = [
            SessionRecorder.start(
                store, SessionMeta(treadmill_id=f"lane-{i}", program_name="bench")
            )
            for i in range(TREADMILLS)
        ]
        writer = StoreWriter.for_store(store)
        ticks = seconds * HZ
        per_flush = 60 * HZ  # one virtual minute of the whole gym per hand-over
        record_cpu = 0.0
        wall = 0.0
        for start in range(0, ticks, per_flush):
            batch = [
                [_sample(tick / HZ, lane) for lane in range(TREADMILLS)]
                for tick in range(start, min(start + per_flush, ticks))
            ]
            w0 = time.perf_counter()
            c0 = time.thread_time()
            for row in batch:
                for rec, sample in zip(recs, row, strict=True):
                    rec.record_sample(sample)
            record_cpu += time.thread_time() - c0
            writer.flush()
            wall += time.perf_counter() - w0
        t0 = time.perf_counter()
        recs[0].finish("finished")
        finish_ms = (time.perf_counter() - t0) * 1000
        for rec in recs[1:]:
            rec.finish("finished")
        stats = writer.stats()
        store.checkpoint()
        store.close()
        size = sum(p.stat().st_size for p in Path(tmp).iterdir() if p.name.startswith(path.name))
        naive = _naive_cpu_per_sample(Path(tmp) / "naive.db")

    n = ticks * TREADMILLS
    cpu_hour = stats.cpu_s * scale
    pct = cpu_hour / HOUR_S * 100
    naive_hour = naive * n * scale
    results: list[dict[str, Any]] = [
        {
            "name": "store_samples_recorded",
            "value": n,
            "unit": "samples",
            "note": f"{TREADMILLS} treadmills x {HZ} Hz x {seconds} s; dropped "
            f"{stats.samples_dropped}, rejected {stats.rows_rejected}",
        },
        {
            "name": "store_write_throughput",
            "value": round(n / wall),
            "unit": "samples/s",
            "note": "record_sample + commit, wall clock (sample generation excluded)",
        },
        {
            "name": "store_writer_cpu_per_hour",
            "value": round(cpu_hour, 3),
            "unit": "s",
            "baseline": round(naive_hour, 3),
            "ratio": round(naive_hour / cpu_hour, 2) if cpu_hour else None,
            "note": (note + "; " if note else "")
            + "baseline: INSERT+COMMIT per sample, extrapolated",
        },
        {
            "name": "store_writer_cpu_pct_realtime",
            "value": round(pct, 3),
            "unit": "% of one core",
            "target": TARGET_CPU_PCT,
            "met": pct < TARGET_CPU_PCT,
            "note": f"{TREADMILLS} treadmills at {HZ} Hz in real time",
        },
        {
            "name": "store_record_sample_cost",
            "value": round(record_cpu / n * 1e6, 3),
            "unit": "us/call",
            "note": "control-loop side: queue append only",
        },
        {
            "name": "store_db_size_per_session_hour",
            "value": round(size * scale / TREADMILLS),
            "unit": "bytes",
            "note": (note + "; " if note else "") + f"{HZ} Hz samples, after WAL checkpoint",
        },
        {
            "name": "store_finish_session",
            "value": round(finish_ms * (scale if quick else 1), 1),
            "unit": "ms",
            "note": "flush + summary of one session-hour" + (" (extrapolated)" if quick else ""),
        },
    ]
    return results


if __name__ == "__main__":
    for r in run(quick=bool(os.environ.get("QUICK"))):
        print(r)
