"""A lane's heart-rate straps (docs/daemon.md, "Heart rate"): its own (``hr`` in its
config), bound in the strap registry for the lane's life, and a session's (``cmd/start``
``hr_device``), bound for that session. A strap never moves the belt."""

from __future__ import annotations

import asyncio
from typing import Any

from treadctl.control.controller import ControlError, Controller
from treadctl.daemon.lane_state import log
from treadctl.daemon.sessions import LaneSessions
from treadctl.hr.registry import STRAPS, strap_key
from treadctl.hr.strap import HRURLError, open_hr_source, parse_hr_url
from treadctl.programs.model import Program


class LaneStraps(LaneSessions):
    """The lane's heart-rate straps (see the module docstring)."""

    # ------------------------------------------------------------------ heart-rate strap
    def _bind_strap(self, url: str | None) -> str | None:
        """Bind the lane's configured strap (the config has refused two lanes sharing one).
        A refusal here leaves the lane without its strap, never without its belt."""
        if url is None:
            return None
        try:
            STRAPS.bind(url, self.cfg.id)
        except HRURLError as exc:
            log.error("%s: heart-rate strap not used: %s", self.cfg.id, exc)
            return None
        return url

    def _strap_kwargs(self, url: str | None) -> dict[str, Any]:
        """How a controller gets ``url``: a ``sim-hr://`` strap the controller builds on
        the belt it drives (simulated straps are never registered); a ``ble://`` strap is
        built here and handed over, so the controller never binds or releases it: the
        lane holds its binding (for its life, or for the session)."""
        if url is None:
            return {}
        try:
            if parse_hr_url(url).scheme == "sim-hr":
                return {"hr_url": url}
            return {"hr_source": open_hr_source(url, clock=self.daemon.clock)}
        except HRURLError as exc:  # validated already; a strap never keeps a lane down
            log.error("%s: heart-rate strap %s not used: %s", self.cfg.id, url, exc)
            return {}

    async def _attach_strap(self, ctrl: Controller, url: str | None) -> None:
        kwargs = self._strap_kwargs(url)
        if "hr_url" in kwargs:
            await ctrl.attach_strap(kwargs["hr_url"])
        elif "hr_source" in kwargs:
            await ctrl.attach_strap(source=kwargs["hr_source"])
        else:
            await ctrl.detach_strap()

    def _same_strap(self, a: str, b: str | None) -> bool:
        if b is None:
            return False
        ka, kb = strap_key(parse_hr_url(a)), strap_key(parse_hr_url(b))
        return ka == kb if ka is not None or kb is not None else a == b

    async def _use_session_strap(self, ctrl: Controller, url: str | None) -> None:
        """``cmd/start``'s ``hr_device``: bound to this lane (``StrapInUse`` when another
        lane holds it: the start is refused, nothing changed) and used for the session."""
        if url is None or self._same_strap(url, self.strap):
            return
        try:
            STRAPS.bind(url, self.cfg.id)
        except HRURLError as exc:
            raise ControlError(f"hr_device: {exc}; nothing moved") from None
        self.session_strap = url
        try:
            await self._attach_strap(ctrl, url)
        except BaseException:
            self._release_session_strap()
            raise

    async def _end_session_strap(self, ctrl: Controller) -> None:
        """The session is over: its ``hr_device`` is closed and released, the lane's own
        strap is used again. Moves nothing."""
        if self.session_strap is None:
            return
        try:
            if ctrl is self.controller:
                await self._attach_strap(ctrl, self.strap)
        except Exception as exc:  # a strap never takes a lane down
            log.error("%s: heart-rate strap after the session: %s", self.cfg.id, exc)
        finally:
            self._release_session_strap()

    def _release_session_strap(self) -> None:
        url, self.session_strap = self.session_strap, None
        if url is not None:
            STRAPS.release(url, self.cfg.id)

    def release_straps(self) -> None:
        """The lane's end: every strap it holds goes back to the registry."""
        self._release_session_strap()
        if self.strap is not None:
            STRAPS.release(self.strap, self.cfg.id)

    def _check_hr_source(self, ctrl: Controller, program: Program, url: str | None) -> None:
        """A heart-rate-governed program needs a heart rate: a strap (the lane's or the
        session's) or a treadmill that has sent one. Refused before anything moves."""
        if not any(seg.governed for seg in program.segments):
            return
        if url is not None or ctrl.hr_supervisor.status.source is not None:
            return
        raise ControlError(
            f"program {program.name!r} has heart-rate-governed segments (hr_zone_bpm) and "
            f"lane {self.cfg.id!r} has no heart-rate source: no strap (give hr_device, or "
            "hr in the lane's config) and the treadmill sends no heart rate; nothing moved")

    def _session_strap_done(self, ctrl: Controller) -> None:
        self._strap_restore = asyncio.get_running_loop().create_task(
            self._end_session_strap(ctrl), name=f"{self.cfg.id}-strap-restore")
