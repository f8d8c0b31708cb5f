"""The dashboard's web side (aiohttp): pages, the live stream (Server-Sent Events), commands.

Every ``/api`` route needs a logged-in session; every command (POST) also needs the
session's CSRF token in ``X-CSRF-Token`` and, when the browser sends one, a same-origin
``Origin``. Who pressed what is written to the audit log and travels in the command
itself: every command carries ``by`` (the logged-in user) and, where the user typed one,
``reason``; the daemon records both in the session's events (docs/daemon.md, "Who pressed
what"). The ``request_id`` is ``dash-<user>-<random>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import secrets
from collections import deque
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from treadctl.dashboard import programs as progs
from treadctl.dashboard.auth import Auth, Session, allowed
from treadctl.dashboard.config import DashboardConfig, LaneInfo, Site
from treadctl.dashboard.history import History
from treadctl.dashboard.hub import Hub

log = logging.getLogger("treadctl.dashboard")

COOKIE = "treadctl_dash"
MAX_REASON = 160
_LANE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STATIC = resources.files("treadctl.dashboard").joinpath("static")

SESSION_KEY = web.RequestKey("session", Session)


def _static(name: str) -> bytes:
    return STATIC.joinpath(name).read_bytes()


class Dashboard:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.auth = Auth({u.name: u for u in config.users}, config.session_ttl_s)
        self.hub = Hub(config, self.capabilities)
        self.history = History(config)
        self.hub.on_finished = self.history.finished
        self.audit: deque[dict[str, Any]] = deque(maxlen=500)
        self.sites = {s.name: s for s in config.sites}

    # ------------------------------------------------------------------ helpers
    def lane_facts(self, site: Site, lane_id: str) -> LaneInfo | None:
        """What the lane can do: the daemon's retained ``info`` when it published one, else
        the dashboard's own config (``daemon_config``, ``[dashboard.lanes]``)."""
        live = self.hub.lanes.get(f"{site.name}/{lane_id}")
        if live is not None and live.info is not None:
            return progs.lane_from_info(live.info)
        return self.config.lane_info(site, lane_id)

    def capabilities(self, site: Site, lane_id: str) -> dict[str, Any]:
        live = self.hub.lanes.get(f"{site.name}/{lane_id}")
        if live is not None and live.info is not None:
            i = live.info
            return {"profile": i.get("profile"), "protocol": i.get("protocol"),
                    "reverse": bool(i.get("reverse_programs", i.get("can_reverse"))),
                    "rear_facing": bool(i.get("rear_facing")), "caps_from": "daemon"}
        info = self.config.lane_info(site, lane_id)
        if info is None:
            return {"profile": None, "protocol": None, "reverse": None, "rear_facing": False,
                    "caps_from": None}
        protocol, can_reverse = _profile_caps(info.profile)
        return {"profile": info.profile, "protocol": protocol,
                "reverse": can_reverse or info.rear_facing, "rear_facing": info.rear_facing,
                "caps_from": "config"}

    def record(self, session: Session, action: str, target: str, **detail: Any) -> None:
        entry = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "user": session.user, "role": session.role, "action": action,
                 "target": target, **detail}
        self.audit.appendleft(entry)
        log.info("audit: %s", json.dumps(entry))
        if self.config.audit_log:
            try:
                with open(self.config.audit_log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")
            except OSError as exc:
                log.error("audit log %s: %s", self.config.audit_log, exc)

    def lane_of(self, request: web.Request) -> tuple[Site, str]:
        site = self.sites.get(request.match_info["site"])
        lane = request.match_info["lane"]
        if site is None or not _LANE.match(lane):
            raise web.HTTPNotFound(text="no such lane")
        return site, lane

    # ------------------------------------------------------------------ middleware
    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path in ("/login", "/static/style.css", "/favicon.ico", "/healthz"):
            open_response: web.StreamResponse = await handler(request)
            return open_response
        session = self.auth.session(request.cookies.get(COOKIE))
        if session is None:
            if path.startswith("/api/"):
                raise web.HTTPUnauthorized(text="log in first")
            raise web.HTTPFound("/login")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"{request.scheme}://{request.host}" and (
                    origin != f"https://{request.host}"):
                raise web.HTTPForbidden(text="cross-origin request refused")
            if not self.auth.csrf_ok(session, request.headers.get("X-CSRF-Token")):
                raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page")
        request[SESSION_KEY] = session
        response: web.StreamResponse = await handler(request)
        return response

    @web.middleware
    async def headers(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'")
        return response

    # ------------------------------------------------------------------ pages
    async def login_page(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            form = await request.post()
            name = str(form.get("user", ""))[:64]
            password = str(form.get("password", ""))[:1024]
            client = request.remote or "?"
            if self.auth.throttled(client):
                return self._login_html("Too many failed log-ins; wait a minute.", 429)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, self.auth.login, name, password, client)
            if result is None:
                log.warning("failed log-in for %r from %s", name, client)
                return self._login_html("Wrong user name or password.", 401)
            token, session = result
            self.record(session, "login", "-")
            response = web.HTTPFound("/")
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                                secure=self.config.secure_cookies, path="/",
                                max_age=int(self.config.session_ttl_s))
            raise response
        return self._login_html("")

    def _login_html(self, message: str, status: int = 200) -> web.Response:
        html = _static("login.html").decode().replace("{{message}}", _esc(message)).replace(
            "{{title}}", _esc(self.config.title))
        return web.Response(text=html, content_type="text/html", status=status)

    async def logout(self, request: web.Request) -> web.Response:
        self.auth.logout(request.cookies.get(COOKIE))
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def index(self, request: web.Request) -> web.Response:
        html = _static("index.html").decode().replace("{{title}}", _esc(self.config.title))
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"css": "text/css", "js": "application/javascript"}
        ext = name.rsplit(".", 1)[-1]
        if name not in ("style.css", "app.js"):
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=types[ext],
                            headers={"Cache-Control": "no-cache"})

    # ------------------------------------------------------------------ read-only API
    async def me(self, request: web.Request) -> web.Response:
        s = request[SESSION_KEY]
        return web.json_response({
            "user": s.user, "role": s.role, "csrf": s.csrf, "title": self.config.title,
            "may": {a: allowed(s.role, a) for a in ("stop", "estop", "start", "pause",
                                                   "resume", "reset", "audit")},
            "sites": [x.name for x in self.config.sites],
            "gym_estop": self._gym_estop_scope(),
            "history_source": self.history.source})

    async def lanes(self, request: web.Request) -> web.Response:
        return web.json_response(self.hub.snapshot())

    async def programs(self, request: web.Request) -> web.Response:
        return web.json_response(progs.builtins())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        q = self.hub.listen()
        try:
            snap = json.dumps(self.hub.snapshot(), separators=(",", ":"))
            await response.write(f"retry: 1000\nevent: snapshot\ndata: {snap}\n\n".encode())
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    frame = b": keep-alive\n\n"
                if not frame:
                    break  # dropped for not reading: the browser reconnects
                await response.write(frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unlisten(q)
        return response

    async def sessions(self, request: web.Request) -> web.Response:
        site, lane = self.lane_of(request)
        live = self.hub.lanes.get(f"{site.name}/{lane}")
        rows = await self.history.list(site, lane, list(live.finished) if live else [])
        return web.json_response({"source": self.history.source, "sessions": rows})

    async def plot(self, request: web.Request) -> web.Response:
        data = await self.history.plot(request.match_info["sid"])
        return web.Response(body=data, content_type="image/png",
                            headers={"Cache-Control": "no-store"})

    async def export(self, request: web.Request) -> web.Response:
        sid, fmt = request.match_info["sid"], request.match_info["fmt"]
        data = await self.history.export(sid, fmt)
        types = {"csv": "text/csv", "tcx": "application/vnd.garmin.tcx+xml",
                 "fit": "application/vnd.ant.fit"}
        return web.Response(body=data, content_type=types[fmt], headers={
            "Content-Disposition": f'attachment; filename="{_safe_name(sid)}.{fmt}"'})

    async def audit_view(self, request: web.Request) -> web.Response:
        s = request[SESSION_KEY]
        if not allowed(s.role, "audit"):
            raise web.HTTPForbidden(text="admins only")
        return web.json_response(list(self.audit))

    # ------------------------------------------------------------------ commands
    def _need(self, session: Session, action: str) -> None:
        if not allowed(session.role, action):
            raise web.HTTPForbidden(text=f"{action}: your role ({session.role}) may not")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_length and request.content_length > 4096:
            raise web.HTTPRequestEntityTooLarge(max_size=4096, actual_size=request.content_length)
        with contextlib.suppress(ValueError):
            data = await request.json()
            if isinstance(data, dict):
                return data
        return {}

    def _rid(self, session: Session) -> str:
        return f"dash-{session.user}-{secrets.token_hex(5)}"

    async def lane_command(self, request: web.Request) -> web.Response:
        session = request[SESSION_KEY]
        site, lane = self.lane_of(request)
        command = request.match_info["command"]
        target = f"{site.name}/{lane}"
        if command == "estop":
            # First, before reading the body or anything else that could take time.
            rid = self._rid(session)
            payload = json.dumps({"reason": "dashboard e-stop", "by": session.user,
                                  "request_id": rid}).encode()
            sent = self.hub.publish_now(self.hub.topic(site, lane, "estop"), payload)
            self.record(session, "estop", target, request_id=rid, sent=sent)
            if not sent:
                return web.json_response({"type": "error", "error": "not connected to the "
                                          "broker: e-stop NOT sent"}, status=503)
            return web.json_response({"type": "sent", "command": "estop", "request_id": rid})
        if command in ("stop", "pause", "resume"):
            self._need(session, command)
            body = await self._body(request)
            rid = self._rid(session)
            out: dict[str, Any] = {"by": session.user, "request_id": rid}
            reason = " ".join(str(body.get("reason") or "").split())[:MAX_REASON]
            if reason:
                out["reason"] = reason
            self.record(session, command, target, request_id=rid, reason=reason or None)
            return web.json_response(await self.hub.command(site, lane, command, out))
        if command == "reset":
            self._need(session, "reset")
            body = await self._body(request)
            reason = str(body.get("reason") or "").strip()
            if not reason:
                raise web.HTTPBadRequest(text="a reset needs a reason")
            if body.get("confirm") is not True:
                raise web.HTTPBadRequest(text="a reset needs the confirmation")
            reason = " ".join(reason.split())[:MAX_REASON]
            rid = self._rid(session)
            self.record(session, "reset", target, request_id=rid, reason=reason)
            return web.json_response(await self.hub.command(
                site, lane, "reset", {"reason": reason, "by": session.user,
                                      "request_id": rid}))
        if command == "start":
            self._need(session, "start")
            return await self._start(request, session, site, lane)
        raise web.HTTPNotFound(text=f"unknown command {command}")

    async def _start(self, request: web.Request, session: Session, site: Site,
                     lane: str) -> web.Response:
        target = f"{site.name}/{lane}"
        info = self.lane_facts(site, lane)
        dry_run = request.query.get("check") == "1"
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data, filename = b"", "upload.toml"
            async for part in reader:
                if getattr(part, "name", None) == "file":
                    filename = Path(getattr(part, "filename", None) or filename).name
                    chunk = await part.read()  # type: ignore[union-attr]
                    if len(chunk) > progs.MAX_UPLOAD_BYTES:
                        chunk = chunk[: progs.MAX_UPLOAD_BYTES + 1]
                    data = bytes(chunk)
            checked = progs.check_on_lane(progs.parse_upload(data, filename), filename, info,
                                          self.config)
            label = filename
            payload_program: Any = None
            if checked.ok and checked.program is not None:
                payload_program = checked.program.to_dict()
        else:
            body = await self._body(request)
            name = str(body.get("program") or "")
            program = progs.builtin_program(name)
            if program is None:
                raise web.HTTPBadRequest(text=f"unknown built-in program {name!r}")
            checked = progs.check_on_lane(progs.Checked(program), name, info, self.config)
            label, payload_program = name, name
        if not checked.ok or checked.program is None:
            self.record(session, "start-refused", target, program=label, lines=checked.lines)
            return web.json_response({"type": "invalid", **checked.as_dict()}, status=422)
        if dry_run:
            return web.json_response({"type": "checked", **checked.as_dict()})
        rid = self._rid(session)
        self.record(session, "start", target, program=checked.program.name, request_id=rid)
        self.hub.remember_program(site, lane, checked.program)
        reply = await self.hub.command(site, lane, "start",
                                       {"program": payload_program, "by": session.user,
                                        "request_id": rid})
        return web.json_response({**reply, "warnings": checked.warnings})

    def _gym_estop_scope(self) -> str:
        if len(self.config.sites) == 1 and not self.config.sites[0].prefix:
            return "gym"  # treadctl/all/cmd/estop on the local broker
        return "lanes"  # fleet: one e-stop per known lane (the gym-wide topic never crosses)

    async def estop_all(self, request: web.Request) -> web.Response:
        session = request[SESSION_KEY]
        rid = self._rid(session)
        payload = json.dumps({"reason": "dashboard gym-wide e-stop", "by": session.user,
                              "request_id": rid}).encode()
        only = request.query.get("site")
        sent: list[str] = []
        if self._gym_estop_scope() == "gym":
            site = self.config.sites[0]
            if self.hub.publish_now(f"{self.config.base_topic}/all/cmd/estop", payload):
                sent.append(f"{site.name}/all")
        else:
            for lane in list(self.hub.lanes.values()):
                if only and lane.site.name != only:
                    continue
                if self.hub.publish_now(self.hub.topic(lane.site, lane.id, "estop"), payload):
                    sent.append(lane.key)
        self.record(session, "estop-all", only or "all", request_id=rid, sent=sent)
        if not sent:
            return web.json_response({"type": "error", "error": "not connected to the broker "
                                      "(or no lanes known): e-stop NOT sent"}, status=503)
        return web.json_response({"type": "sent", "targets": sent, "request_id": rid})

    async def favicon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"broker": self.hub.connected.is_set(),
                                  "lanes": len(self.hub.lanes),
                                  "browsers": len(self.hub.listeners),
                                  **self.hub.stats})

    # ------------------------------------------------------------------ app
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.headers, self.guard],
                              client_max_size=progs.MAX_UPLOAD_BYTES + 65536)
        app.router.add_route("*", "/login", self.login_page)
        app.router.add_post("/logout", self.logout)
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/favicon.ico", self.favicon)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/me", self.me)
        app.router.add_get("/api/lanes", self.lanes)
        app.router.add_get("/api/programs", self.programs)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/audit", self.audit_view)
        app.router.add_get("/api/lanes/{site}/{lane}/sessions", self.sessions)
        app.router.add_get("/api/sessions/{sid}/plot.png", self.plot)
        app.router.add_get(r"/api/sessions/{sid}/export.{fmt:csv|tcx|fit}", self.export)
        app.router.add_post("/api/lanes/{site}/{lane}/{command}", self.lane_command)
        app.router.add_post("/api/estop-all", self.estop_all)
        return app


@functools.lru_cache(maxsize=256)
def _profile_caps(profile_name: str) -> tuple[str | None, bool]:
    """(protocol, can reverse) of a profile the dashboard's config names."""
    from treadctl.profiles import load_profile

    try:
        profile = load_profile(profile_name)
    except Exception:
        return None, False
    return profile.protocol, profile.supports_reverse


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:100]


async def serve(config: DashboardConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run the dashboard until cancelled (the CLI cancels it on SIGTERM/SIGINT)."""
    dash = Dashboard(config)
    runner = web.AppRunner(dash.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.bind, config.port)
    hub_task = asyncio.create_task(dash.hub.run(), name="dashboard-mqtt")
    try:
        await site.start()
        log.info("dashboard on http://%s:%s/", config.bind, config.port)
        if ready is not None:
            ready.set()
        await hub_task
    finally:
        hub_task.cancel()
        with contextlib.suppress(BaseException):
            await hub_task
        dash.history.close()
        await runner.cleanup()

