"""Helpers for the dashboard and fleet tests (loaded by conftest.py as ``dash_stack``).

Everything runs as it would in a gym: ``treadctl daemon`` with simulated lanes and
``treadctl dashboard`` as processes of their own next to a real mosquitto, and Debian's
Chromium driven by Playwright. Chromium and the playwright package are installed by
scripts/setup.sh and the test extra: a missing browser fails these tests, it never skips
them.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from soak.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TREADCTL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORDS = {"sam": "staff-pass-1", "vic": "viewer-pass-1", "ada": "admin-pass-1"}
ROLES = {"sam": "staff", "vic": "viewer", "ada": "admin"}


def hashes() -> dict[str, str]:
    from treadctl.dashboard.auth import hash_password

    return {u: hash_password(p) for u, p in PASSWORDS.items()}


_HASHES: dict[str, str] = {}


def users_toml() -> str:
    if not _HASHES:
        _HASHES.update(hashes())
    return "".join(f'[[dashboard.user]]\nname = "{u}"\nrole = "{ROLES[u]}"\n'
                   f'password_hash = "{_HASHES[u]}"\n' for u in PASSWORDS)


def daemon_toml(port: int, data_dir: Path, lanes: list[tuple[str, str]], client_id: str,
                telemetry_hz: int = 4) -> str:
    out = [f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "{client_id}"\n'
           f'keepalive_s = 5\n',
           f'[daemon]\ndata_dir = "{data_dir}"\ntelemetry_hz = {telemetry_hz}\n']
    for i, (lane, profile) in enumerate(lanes):
        out.append(f'[[treadmill]]\nid = "{lane}"\ndevice = "sim://?seed={i}&profile={profile}"\n'
                   f'profile = "{profile}"\n')
    return "\n".join(out)


class Proc:
    """A ``python -m treadctl ...`` child; ``stop()`` sends SIGTERM (a clean shutdown)."""

    def __init__(self, args: list[str], log: Path, cwd: Path | None = None) -> None:
        self.log = log
        self.fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "treadctl", *args], cwd=cwd or REPO,
                                     stdout=self.fh, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.fh.close()


def wait_until(pred: Any, within_s: float, what: str, proc: Proc | None = None) -> Any:
    """Poll a condition on another process (an HTTP answer, a file) until it holds."""
    deadline = time.monotonic() + within_s
    while True:
        with contextlib.suppress(Exception):
            value = pred()
            if value:
                return value
        if proc is not None and not proc.alive():
            raise AssertionError(f"{what}: process exited:\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            extra = f"\n{proc.output()[-3000:]}" if proc is not None else ""
            raise AssertionError(f"timed out waiting for {what}{extra}")
        time.sleep(0.05)  # polling another process's condition, not waiting for time


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Dashboard:
    def __init__(self, workdir: Path, broker_port: int, body: str, name: str = "dash",
                 mqtt_extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"{name}.toml"
        self.config.write_text(f'[dashboard]\nport = {self.port}\n'
                               f'audit_log = "{workdir / (name + "-audit.jsonl")}"\n{body}\n'
                               f'[dashboard.mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
                               f'client_id = "{name}-{self.port}"\n{mqtt_extra}\n'
                               + users_toml())
        self.proc = Proc(["dashboard", "--config", str(self.config)], workdir / f"{name}.log")

    def wait_lanes(self, n: int, within_s: float = 20.0) -> None:
        wait_until(lambda: (h := get_json(self.url + "/healthz"))["broker"] and h["lanes"] >= n,
                   within_s, f"dashboard sees {n} lanes", self.proc)

    def stop(self) -> None:
        self.proc.stop()


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1280, 860)) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} missing: scripts/setup.sh installs Debian's chromium (apt-get install "
        "chromium chromium-driver); the browser tests do not skip")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.js_errors = errors  # type: ignore[attr-defined]
            yield page
        finally:
            browser.close()


def log_in(page: Any, url: str, user: str) -> None:
    page.goto(url + "/")
    page.fill("#user", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#login")
    page.wait_for_selector("#who")
    page.wait_for_function("() => document.querySelector('#who').textContent.length > 0")


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Saved next to the test's files, and into $TREADCTL_SCREENSHOTS when set (to look at)."""
    out = tmp_path / f"{name}.png"
    page.screenshot(path=str(out))
    keep = os.environ.get("TREADCTL_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(keep) / f"{name}.png"))
    return out


class Browserless:
    """A cookie-keeping HTTP client, like a browser without the page."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def login(self, user: str, password: str | None = None) -> int:
        data = urllib.parse.urlencode({"user": user,
                                       "password": password or PASSWORDS[user]}).encode()
        try:
            with self.opener.open(self.base + "/login", data, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        if status == 200:
            self.csrf = self.get("/api/me")[1]["csrf"]
        return status

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with self.opener.open(self.base + path, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, body: Any = None, csrf: str | None = "auto",
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        h = {"Content-Type": "application/json", **(headers or {})}
        if csrf == "auto":
            csrf = self.csrf
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        req = urllib.request.Request(self.base + path, json.dumps(body or {}).encode(), h)
        try:
            with self.opener.open(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text
