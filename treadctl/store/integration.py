"""Glue between a running ``Controller`` and the session store.

``controller_recorder_factory(...)`` returns the ``recorder_factory`` a Controller takes:
at every session start it opens a ``SessionRecorder``; telemetry becomes samples, controller
events become events (non-blocking: both only enqueue), and the session's end is
recorded with the summary the store computes. One store and one writer thread serve
every treadmill of a process.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadctl.store.db import SessionStore, default_db_path
from treadctl.store.model import Event, Sample, SessionMeta
from treadctl.store.recorder import SessionRecorder

if TYPE_CHECKING:
    from treadctl.control.controller import Controller, SessionResult
    from treadctl.programs.model import Program

log = logging.getLogger(__name__)


class ControllerRecorder:
    """Adapter the Controller calls: ``sample``, ``event`` (sync, cheap), ``finish`` (async)."""

    def __init__(self, recorder: SessionRecorder) -> None:
        self.recorder = recorder
        self.session_id = recorder.session_id

    def sample(self, ctl: Controller, now: float) -> None:
        """One sample from the controller's Snapshot. The heart rate's source and quality
        are read as ``snapshot.hr_source`` / ``snapshot.hr_quality`` when the Snapshot has
        them (``str | None``, from :class:`treadctl.hr.supervisor.HRStatus`), else stored
        as unknown (NULL)."""
        snap = ctl.snapshot
        self.recorder.record_sample(
            Sample(
                t_s=snap.elapsed_s,
                speed_kmh=snap.speed_kmh,
                direction=snap.direction,
                target_speed_kmh=snap.target_speed_kmh,
                incline_pct=snap.incline_pct,
                target_incline_pct=snap.target_incline_pct,
                distance_m=snap.distance_m,
                hr_bpm=snap.hr_bpm,
                state=snap.state.value,
                segment=None if snap.segment is None else snap.segment - 1,
                hr_source=getattr(snap, "hr_source", None),
                hr_quality=getattr(snap, "hr_quality", None),
            )
        )

    def event(self, ctl: Controller, event: dict[str, Any]) -> None:
        data = {k: v for k, v in event.items() if k not in ("type", "t_s")}
        self.recorder.record_event(
            Event(t_s=ctl.snapshot.elapsed_s, type=str(event["type"]), data=data)
        )

    async def finish(self, ctl: Controller, result: SessionResult) -> dict[str, Any]:
        return await self.recorder.afinish(result.outcome.value, result.reason or "")


class RecorderFactory:
    """Callable ``(controller, program, session_id) -> ControllerRecorder``; owns the store."""

    def __init__(self, store: SessionStore, *, treadmill_id: str, device: str, profile: str):
        self.store = store
        self.treadmill_id = treadmill_id
        self.device = device
        self.profile = profile

    def __call__(self, ctl: Controller, program: Program, session_id: str) -> ControllerRecorder:
        meta = SessionMeta(
            treadmill_id=ctl.treadmill_id or self.treadmill_id,
            device=self.device,
            profile=self.profile,
            program_name=program.name,
            program=program.to_dict(),
            started_at=ctl.clock.wall(),
        )
        return ControllerRecorder(SessionRecorder.start(self.store, meta))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.close()


def controller_recorder_factory(
    *,
    data_dir: str | os.PathLike[str] | None,
    treadmill_id: str,
    device: str,
    profile: str,
    store: SessionStore | None = None,
) -> RecorderFactory:
    """A recorder factory writing to ``data_dir`` (default: XDG state dir)."""
    if store is None:
        path = default_db_path(Path(data_dir) if data_dir is not None else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SessionStore(path)
    return RecorderFactory(store, treadmill_id=treadmill_id, device=device, profile=profile)
