"""The ``[dashboard]`` table of a TOML file (docs/dashboard.md, "Configuration").

Errors are one line naming the file and field, like the daemon's config.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("viewer", "staff", "admin")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LANE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DashboardConfigError(ValueError):
    """An unusable dashboard config; the message is one line naming the field."""


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str = field(repr=False)
    role: str


@dataclass(frozen=True)
class Site:
    """One group of lanes. ``prefix`` is put in front of the base topic: ``""`` for the
    local broker, ``"site-a/"`` for a site seen through a central broker (docs/fleet.md)."""

    name: str
    prefix: str = ""
    #: The bridge's notification topic on the central broker (``1`` up, ``0`` down).
    bridge_topic: str | None = None


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = field(default_factory=lambda: f"treadctl-dashboard-{socket.gethostname()}")
    keepalive_s: int = 30
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class LaneInfo:
    """What the dashboard knows of a lane beyond its MQTT topics (its firmware profile, for
    refusing reverse programs on forward-only lanes before anything moves)."""

    profile: str
    limits: Any = None  # treadctl.limits.Limits | None
    #: Forward-only belt, the user faces the rear for reverse segments (daemon config).
    rear_facing: bool = False
    protocol: str | None = None
    #: Where this came from: ``daemon`` (its retained ``info``) or ``config``.
    source: str = "config"


@dataclass(frozen=True)
class DashboardConfig:
    bind: str = "127.0.0.1"
    port: int = 8080
    title: str = "treadctl front desk"
    base_topic: str = "treadctl"
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    users: tuple[User, ...] = ()
    sites: tuple[Site, ...] = (Site("local"),)
    #: Lane key (``lane-1`` or ``site-a/lane-1``) -> profile and per-lane limits.
    lanes: Mapping[str, LaneInfo] = field(default_factory=dict)
    site_limits: Any = None  # treadctl.limits.Limits | None
    data_dir: str | None = None  # the daemon's store, read only
    audit_log: str | None = None
    secure_cookies: bool = False
    session_ttl_s: float = 12 * 3600.0
    reply_timeout_s: float = 5.0
    source: str = "<config>"

    def lane_info(self, site: Site, lane_id: str) -> LaneInfo | None:
        return self.lanes.get(f"{site.name}/{lane_id}") or (
            self.lanes.get(lane_id) if len(self.sites) == 1 else None)


def _get(t: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:
    if key not in t:
        return default
    value = t[key]
    if isinstance(value, bool) and kind is not bool:
        raise DashboardConfigError(f"{where}.{key}: must be {_kind(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise DashboardConfigError(f"{where}.{key}: must be {_kind(kind)}, got {value!r}")
    return value


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number",
             dict: "a table", list: "an array"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _known(t: Mapping[str, Any], where: str, known: set[str]) -> None:
    for key in t:
        if key not in known:
            raise DashboardConfigError(
                f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")


def _path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _mqtt(t: Mapping[str, Any], where: str, base: Path, fallback: Any) -> MqttSettings:
    _known(t, where, {"host", "port", "username", "password", "password_file", "client_id",
                      "keepalive_s", "ca_file", "cert_file", "key_file"})
    host = _get(t, "host", str, where, fallback.host if fallback else "127.0.0.1")
    default_port = fallback.port if fallback else 1883
    port = _get(t, "port", int, where, default_port)
    if not 1 <= port <= 65535:
        raise DashboardConfigError(f"{where}.port: must be an integer 1..65535, got {port}")
    password = _get(t, "password", str, where)
    pw_file = _path(_get(t, "password_file", str, where), base)
    if password is not None and pw_file is not None:
        raise DashboardConfigError(f"{where}: password and password_file: choose one")
    if pw_file is not None:
        try:
            password = Path(pw_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DashboardConfigError(
                f"{where}.password_file: cannot read {pw_file}: {exc.strerror}") from None
    tls = getattr(fallback, "tls", None) if fallback else None
    keepalive = _get(t, "keepalive_s", int, where, 30)
    if keepalive < 1:
        raise DashboardConfigError(f"{where}.keepalive_s: must be >= 1, got {keepalive}")
    kw: dict[str, Any] = {}
    if "client_id" in t:
        kw["client_id"] = _get(t, "client_id", str, where)
    return MqttSettings(
        host=host, port=port, username=_get(t, "username", str, where), password=password,
        keepalive_s=keepalive,
        ca_file=_path(_get(t, "ca_file", str, where), base) or (tls.ca_file if tls else None),
        cert_file=_path(_get(t, "cert_file", str, where), base),
        key_file=_path(_get(t, "key_file", str, where), base),
        **kw,
    )


def _users(raw: Any, where: str) -> tuple[User, ...]:
    if not isinstance(raw, list):
        raise DashboardConfigError(f"{where}: [[dashboard.user]] must be an array of tables")
    users: list[User] = []
    seen: set[str] = set()
    for i, u in enumerate(raw, start=1):
        w = f"{where}: [[dashboard.user]] #{i}"
        if not isinstance(u, dict):
            raise DashboardConfigError(f"{w}: must be a table")
        _known(u, w, {"name", "password_hash", "role"})
        name = _get(u, "name", str, w)
        if name is None or not _NAME.match(name):
            raise DashboardConfigError(f"{w}.name: required, [A-Za-z0-9_.-], 1..64 characters")
        if name in seen:
            raise DashboardConfigError(f"{w}.name: {name!r} appears twice")
        seen.add(name)
        pw = _get(u, "password_hash", str, w)
        if pw is None or not pw.startswith(("$argon2", "$2b$", "$2a$", "$2y$")):
            raise DashboardConfigError(
                f"{w}.password_hash: required, an argon2 or bcrypt hash (make one with "
                "`treadctl dashboard hash-password`), never the password itself")
        role = _get(u, "role", str, w, "viewer")
        if role not in ROLES:
            raise DashboardConfigError(f"{w}.role: one of {', '.join(ROLES)}, got {role!r}")
        users.append(User(name, pw, role))
    return tuple(users)


def _sites(raw: Any, where: str) -> tuple[Site, ...]:
    if not isinstance(raw, list) or not raw:
        raise DashboardConfigError(f"{where}: [[dashboard.site]] must be a non-empty array")
    sites: list[Site] = []
    for i, s in enumerate(raw, start=1):
        w = f"{where}: [[dashboard.site]] #{i}"
        if not isinstance(s, dict):
            raise DashboardConfigError(f"{w}: must be a table")
        _known(s, w, {"name", "prefix", "bridge_topic"})
        name = _get(s, "name", str, w)
        if name is None or not _NAME.match(name):
            raise DashboardConfigError(f"{w}.name: required, [A-Za-z0-9_.-], 1..64 characters")
        prefix = _get(s, "prefix", str, w, f"{name}/")
        if prefix and (not prefix.endswith("/") or re.search(r"[#+\x00]", prefix)):
            raise DashboardConfigError(f"{w}.prefix: must end with '/' and hold no # or +")
        if any(x.name == name for x in sites):
            raise DashboardConfigError(f"{w}.name: {name!r} appears twice")
        sites.append(Site(name, prefix, _get(s, "bridge_topic", str, w)))
    return tuple(sites)


def parse_dashboard_config(data: Mapping[str, Any], where: str = "<config>",
                           base: Path | None = None) -> DashboardConfig:
    from treadctl.limits import LimitsError, limits_from_dict
    from treadctl.profiles import ProfileError, load_profile

    base = base or Path.cwd()
    if "dashboard" not in data or not isinstance(data["dashboard"], dict):
        raise DashboardConfigError(f"{where}: no [dashboard] table")
    d = data["dashboard"]
    w = f"{where}: [dashboard]"
    _known(d, w, {"bind", "port", "title", "base_topic", "mqtt", "user", "site", "lanes",
                  "daemon_config", "data_dir", "audit_log", "secure_cookies", "session_ttl_s",
                  "reply_timeout_s", "site_limits"})
    daemon = None
    lanes: dict[str, LaneInfo] = {}
    site_limits = None
    data_dir = None
    base_topic = "treadctl"
    dc_path = _path(_get(d, "daemon_config", str, w), base)
    if dc_path is not None:
        from treadctl.daemon.config import ConfigError, load_config

        try:
            # Never the daemon's MQTT password: the dashboard has its own account (and its
            # systemd unit cannot even read that file).
            daemon = load_config(dc_path, secrets=False)
        except (ConfigError, OSError) as exc:
            raise DashboardConfigError(f"{w}.daemon_config: {exc}") from None
        lanes = {t.id: LaneInfo(t.profile, t.limits, t.rear_facing) for t in daemon.treadmills}
        site_limits = daemon.site_limits
        data_dir = daemon.daemon.data_dir
        base_topic = daemon.mqtt.base_topic
    base_topic = _get(d, "base_topic", str, w, base_topic)
    if not base_topic or re.search(r"[#+\x00]", base_topic) or base_topic.strip("/") != base_topic:
        raise DashboardConfigError(f"{w}.base_topic: a topic without # + or leading/trailing /")
    raw_lanes = _get(d, "lanes", dict, w, {})
    for key, profile in raw_lanes.items():
        parts = key.split("/")
        if len(parts) > 2 or not all(_LANE_ID.match(p) for p in parts):
            raise DashboardConfigError(f"{w}.lanes.{key}: a lane id or SITE/LANE")
        if not isinstance(profile, str):
            raise DashboardConfigError(f"{w}.lanes.{key}: a firmware profile name")
        lanes[key] = LaneInfo(profile, None)
    for key, info in lanes.items():
        try:
            load_profile(info.profile)
        except ProfileError as exc:
            raise DashboardConfigError(f"{w}.lanes.{key}: {exc}") from None
    if "site_limits" in d:
        try:
            site_limits = limits_from_dict(_get(d, "site_limits", dict, w), f"{w}.site_limits")
        except LimitsError as exc:
            raise DashboardConfigError(str(exc)) from None
    port = _get(d, "port", int, w, 8080)
    if not 1 <= port <= 65535:
        raise DashboardConfigError(f"{w}.port: must be an integer 1..65535, got {port}")
    users = _users(d.get("user", []), where)
    if not users:
        raise DashboardConfigError(
            f"{w}: no [[dashboard.user]]: nobody could log in (docs/dashboard.md)")
    sites = _sites(d["site"], where) if "site" in d else (Site("local"),)
    ttl = _get(d, "session_ttl_s", (int, float), w, 12 * 3600)
    reply = _get(d, "reply_timeout_s", (int, float), w, 5.0)
    if ttl <= 0 or reply <= 0:
        raise DashboardConfigError(f"{w}: session_ttl_s and reply_timeout_s must be > 0")
    return DashboardConfig(
        bind=_get(d, "bind", str, w, "127.0.0.1"),
        port=port,
        title=_get(d, "title", str, w, "treadctl front desk"),
        base_topic=base_topic,
        mqtt=_mqtt(_get(d, "mqtt", dict, w, {}), f"{w}.mqtt", base,
                   daemon.mqtt if daemon else None),
        users=users,
        sites=sites,
        lanes=lanes,
        site_limits=site_limits,
        data_dir=_path(_get(d, "data_dir", str, w), base) or data_dir,
        audit_log=_path(_get(d, "audit_log", str, w), base),
        secure_cookies=_get(d, "secure_cookies", bool, w, False),
        session_ttl_s=float(ttl),
        reply_timeout_s=float(reply),
        source=where,
    )


def load_dashboard_config(path: str | os.PathLike[str]) -> DashboardConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DashboardConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DashboardConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_dashboard_config(data, p.name, p.parent)
