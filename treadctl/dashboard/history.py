"""Session history for the dashboard.

On the daemon's machine (``data_dir`` set, or taken from ``daemon_config``) the daemon's
session store is opened **read only** (SQLite ``mode=ro``, ``query_only``): the list, the
plot (:func:`treadctl.store.plot.plot_session`) and the CSV/TCX/FIT downloads
(:func:`treadctl.store.export.export_session`) come from there. Elsewhere (a front-desk PC,
a central office) only the ``finished`` events' summaries seen since the dashboard started
are listed, without plots or downloads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from treadctl.dashboard.config import DashboardConfig, Site
from treadctl.store.db import MIGRATIONS, SessionNotFound, SessionStore, StoreError


class ReadOnlyStore(SessionStore):
    """A :class:`SessionStore` on a read-only connection: never migrates, never writes.
    The daemon owns the file; this only reads what it committed (WAL readers do not block
    the writer)."""

    def __init__(self, path: str | Path) -> None:  # no super(): it would migrate
        self.path = Path(path)
        self._lock = threading.RLock()
        self._migrations = list(MIGRATIONS)
        self._writer = None
        self._closed = False
        if not self.path.exists():
            raise StoreError(f"no session store at {self.path}")
        try:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                         check_same_thread=False, isolation_level=None,
                                         timeout=10.0)
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA query_only = ON")
            version = self.schema_version
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read session store {self.path}: {exc}") from exc
        if version != len(self._migrations):
            self._conn.close()
            raise StoreError(f"session store {self.path} has schema {version}, this treadctl "
                             f"reads {len(self._migrations)}")


class History:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._store: ReadOnlyStore | None = None
        self._lock = threading.Lock()
        self.db_path = (Path(config.data_dir) / "sessions.db") if config.data_dir else None

    @property
    def source(self) -> str:
        return "store" if self.db_path is not None else "summaries"

    def _open(self) -> ReadOnlyStore:
        with self._lock:
            if self._store is None:
                assert self.db_path is not None
                self._store = ReadOnlyStore(self.db_path)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def finished(self, lane: Any, event: dict[str, Any]) -> None:
        """Hook for the hub: nothing to do, the lane keeps its ``finished`` summaries."""

    async def list(self, site: Site, lane_id: str, finished: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
        if self.db_path is None or len(self.config.sites) > 1 or site.prefix:
            return [_from_event(e) for e in finished]

        def read() -> list[dict[str, Any]]:
            store = self._open()
            return [_from_info(s) for s in store.list_sessions(limit=25, treadmill_id=lane_id)]

        try:
            return await asyncio.get_running_loop().run_in_executor(None, read)
        except StoreError:
            return [_from_event(e) for e in finished]

    async def plot(self, session_id: str) -> bytes:
        from treadctl.store.plot import plot_session

        def draw() -> bytes:
            store = self._open()
            info = store.get_session(session_id)
            with tempfile.TemporaryDirectory(prefix="treadctl-dash-") as tmp:
                out = Path(tmp) / "plot.png"
                plot_session(info, store.samples(info.id), store.events(info.id), out,
                             width_px=1200, height_px=675)
                return out.read_bytes()

        return await self._run(draw)

    async def export(self, session_id: str, fmt: str) -> bytes:
        from treadctl.store.export import export_session

        def make() -> bytes:
            store = self._open()
            return export_session(store, store.resolve_id(session_id), fmt)

        return await self._run(make)

    async def _run(self, fn: Any) -> bytes:
        if self.db_path is None:
            raise web.HTTPNotFound(text="no session store on this machine: plots and "
                                        "downloads are on the daemon's machine")
        try:
            data: bytes = await asyncio.get_running_loop().run_in_executor(None, fn)
            return data
        except SessionNotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        except StoreError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None


def _from_info(s: Any) -> dict[str, Any]:
    d = s.to_dict()
    summary = d.get("summary") or {}
    return {"session_id": d["id"], "program": d["program_name"], "started_at": d["started_at"],
            "ended_at": d["ended_at"], "outcome": d["outcome"], "reason": d["reason"],
            "distance_m": summary.get("distance_m"), "elapsed_s": summary.get("duration_s",
                                                                               summary.get("elapsed_s")),
            "downloads": True}


def _from_event(e: dict[str, Any]) -> dict[str, Any]:
    summary = e.get("summary") or {}
    return {"session_id": e.get("session_id"), "program": summary.get("program_name"),
            "started_at": summary.get("started_at"), "ended_at": e.get("ts"),
            "outcome": e.get("outcome"), "reason": e.get("reason"),
            "distance_m": e.get("distance_m"), "elapsed_s": e.get("elapsed_s"),
            "downloads": False}
