"""Plots: a valid PNG of the requested size, also for awkward sessions."""

from __future__ import annotations

import struct
from pathlib import Path

from treadctl.store.db import SessionStore
from treadctl.store.plot import plot_session
from treadctl.store.recorder import Event, Sample, SessionRecorder
from treadctl.types import Direction

import store_synth as synth  # conftest puts it on sys.path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    return width, height


def test_plot_is_a_png_of_the_expected_size(
    store: SessionStore, recorded: str, tmp_path: Path
) -> None:
    out = tmp_path / "session.png"
    plot_session(store.get_session(recorded), store.samples(recorded), store.events(recorded), out)
    assert _png_size(out) == (1600, 900)
    assert out.stat().st_size > 30_000  # not blank


def test_plot_custom_size_and_awkward_sessions(store: SessionStore, tmp_path: Path) -> None:
    empty = store.create_session(synth.META)
    out = tmp_path / "empty.png"
    plot_session(store.get_session(empty), [], [], out, width_px=800, height_px=450)
    assert _png_size(out) == (800, 450)

    # Reverse only, no program, no heart rate, several alarms close together.
    rec = SessionRecorder.start(store, {"treadmill_id": "lane-9"})
    for i in range(400):
        rec.record_sample(
            Sample(t_s=i * 0.25, speed_kmh=min(i * 0.05, 4.0), direction=Direction.REVERSE)
        )
    for t, kind in ((50.0, "interlock"), (51.0, "fault"), (52.0, "estop")):
        rec.record_event(Event(t_s=t, type=kind, data={"reason": "a very long reason " * 5}))
    rec.finish("estopped", "tracking error")
    out = tmp_path / "reverse.png"
    sid = rec.session_id
    plot_session(store.get_session(sid), store.samples(sid), store.events(sid), out)
    assert _png_size(out) == (1600, 900)
