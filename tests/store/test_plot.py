"""Plots: a valid PNG of the requested size, also for awkward sessions."""

from __future__ import annotations

import itertools
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


FWD, REV = Direction.FORWARD, Direction.REVERSE


def _drawn_intervals(fig, color: str) -> set[tuple[float, float]]:
    """(t_a, t_b) of every line piece of the speed panel drawn in ``color``."""
    out: set[tuple[float, float]] = set()
    for line in fig.axes[0].lines:
        if line.get_color() == color and line.get_linestyle() == "-":
            xs = [float(x) for x in line.get_xdata()]
            out.update(itertools.pairwise(xs))
    return out


def _plot_keeping_figure(monkeypatch, store, sid: str, tmp_path: Path):
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # plot_session closes its figure
    plot_session(store.get_session(sid), store.samples(sid), store.events(sid),
                 tmp_path / "p.png")  # fmt: skip
    (fig,) = kept
    return fig


def _check_colours(samples, fig) -> None:
    from treadctl.store.plot import FORWARD_COLOR, REVERSE_COLOR

    blue = _drawn_intervals(fig, FORWARD_COLOR)
    orange = _drawn_intervals(fig, REVERSE_COLOR)
    assert blue and orange
    standing_forward = 0
    for a, b in itertools.pairwise(samples):
        piece = (a.t_s, b.t_s)
        assert (piece in blue) != (piece in orange), piece  # every piece drawn, once
        # The belt moved the way of the faster end; two standing ends: the earlier one's.
        faster = b if b.speed_kmh > a.speed_kmh else a
        assert piece in (orange if faster.direction == REV else blue), (a, b)
        if a.direction == b.direction:
            assert piece in (orange if a.direction == REV else blue), (a, b)
        standing_forward += a.direction == b.direction == FWD and a.speed_kmh == b.speed_kmh == 0
    assert standing_forward > 0  # the case the old sign-based colouring got wrong


def test_speed_runs_colour_by_direction_not_by_sign() -> None:
    from treadctl.store.plot import speed_runs

    def s(t: float, v: float, d: Direction) -> Sample:
        return Sample(t_s=t, speed_kmh=v, direction=d)

    samples = [
        s(0, 0.0, FWD), s(1, 0.0, FWD),  # forward standstill at the start
        s(2, 2.0, FWD), s(3, 0.0, FWD), s(4, 0.0, FWD), s(5, 0.0, FWD),  # dwell, forward
        s(6, 0.0, REV), s(7, 1.0, REV), s(8, 0.0, REV), s(9, 0.0, REV),  # reverse bout
        s(10, 0.0, FWD), s(11, 0.5, FWD), s(12, 0.0, FWD),
    ]  # fmt: skip
    runs = speed_runs(samples)
    assert runs == [(FWD, 0, 6), (REV, 6, 10), (FWD, 10, 12)]
    colour = {}
    for direction, first, last in runs:
        for i in range(first, last):
            assert i not in colour  # each line piece has one colour
            colour[i] = direction
    assert sorted(colour) == list(range(len(samples) - 1))  # and none is missing
    # The pieces between two standing forward samples are forward (blue): 0-1, 3-4, 4-5.
    assert colour[0] == colour[3] == colour[4] == FWD
    # Standing reverse (after the bout, before the switch) stays reverse (orange).
    assert colour[8] == REV
    assert speed_runs([]) == [] and speed_runs(samples[:1]) == [(FWD, 0, 0)]


def test_plot_of_a_synthetic_session_colours_forward_standstill_blue(
    store: SessionStore, recorded: str, tmp_path: Path, monkeypatch
) -> None:
    fig = _plot_keeping_figure(monkeypatch, store, recorded, tmp_path)
    _check_colours(store.samples(recorded), fig)


def test_plot_of_a_real_simulated_session(tmp_path: Path, monkeypatch, capsys) -> None:
    # quick-demo: forward walk, stand still (forward, 10 s), reverse walk, forward walk.
    from treadctl.cli import main
    from treadctl.store.db import open_store

    d = tmp_path / "data"
    assert main(["run", "quick-demo", "--speedup", "max", "--json", "--data-dir", str(d)]) == 0
    capsys.readouterr()
    with open_store(d) as store:
        (info,) = store.list_sessions(5, None)
        samples = store.samples(info.id)
        standing = [s for s in samples if s.segment == 1 and s.speed_kmh == 0]
        assert len(standing) > 50 and {s.direction for s in standing} == {FWD}
        fig = _plot_keeping_figure(monkeypatch, store, info.id, tmp_path)
    _check_colours(samples, fig)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "2  standstill" in labels and "3  ◀ reverse\n2.0 km/h" in labels


def test_an_estop_at_the_end_of_the_recording_stays_inside_the_frame(
    store: SessionStore, tmp_path: Path, monkeypatch
) -> None:
    # `run` stops recording at the latch, so the e-stop is the last thing recorded.
    rec = SessionRecorder.start(store, {"treadmill_id": "lane-9"})
    for i in range(200):
        rec.record_sample(Sample(t_s=i * 0.1, speed_kmh=min(i * 0.05, 3.0)))
    rec.record_event(Event(t_s=19.9, type="estop", data={"reason": "overspeed"}))
    rec.finish("estopped", "overspeed")
    fig = _plot_keeping_figure(monkeypatch, store, rec.session_id, tmp_path)
    red = [ln for ln in fig.axes[0].lines if ln.get_color() == "#c53030"]
    assert [float(ln.get_xdata()[0]) for ln in red] == [19.9]
    right = fig.axes[0].get_xlim()[1]
    assert right > 19.9 + 0.01 * 19.9  # the red line is not drawn on the frame's edge
