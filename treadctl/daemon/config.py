"""The daemon's configuration: a TOML file validated into frozen dataclasses.

Owns the schema of ``/etc/treadctl/daemon.toml`` (``[mqtt]``, ``[daemon]``,
``[site_limits]``, ``[safety]``, ``[homeassistant]``, ``[[treadmill]]``), its defaults and
its errors. Every error is a :class:`ConfigError` whose message names the file and the
field (``daemon.toml: [mqtt].port: must be an integer 1..65535``). Nothing here opens a
socket or a device: ``treadctl daemon --check`` runs exactly this and exits.

Secrets (MQTT password) are read here and never logged or put in ``repr``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from treadctl.control.safety import SafetyConfig
from treadctl.hr.registry import check_strap_config
from treadctl.hr.strap import HRURLError, parse_hr_url
from treadctl.limits import Limits, LimitsError, limits_from_dict
from treadctl.profiles import ProfileError, load_profile
from treadctl.transport import DeviceURLError, parse_device_url

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/treadctl/daemon.toml"
DEFAULT_DATA_DIR = "/var/lib/treadctl"

#: Treadmill ids become MQTT topic levels: no wildcards, separators or spaces.
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: ``all`` is the gym-wide level (``treadctl/all/cmd/estop``).
_RESERVED_IDS = frozenset({"all"})
_TOPIC_LEVEL_FORBIDDEN = re.compile(r"[#+\x00]")


class ConfigError(ValueError):
    """An unusable config; the message is one line naming the field."""


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip hostname verification (self-signed lab brokers only)


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = field(default_factory=lambda: f"treadctl-{socket.gethostname()}")
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    base_topic: str = "treadctl"
    max_payload_bytes: int = 16384


@dataclass(frozen=True)
class DaemonSettings:
    data_dir: str = DEFAULT_DATA_DIR
    telemetry_hz: float = 4.0
    tick_hz: float = 10.0
    heartbeat_s: float | None = None
    broker_lost_policy: Literal["stop", "continue"] = "stop"
    broker_grace_s: float = 10.0
    command_rate_per_s: float = 20.0


@dataclass(frozen=True)
class HomeAssistantConfig:
    enabled: bool = False
    prefix: str = "homeassistant"
    #: Fixed discovery node id: entity ids stay stable whatever the MQTT client id is.
    node_id: str = "treadctl"


@dataclass(frozen=True)
class TreadmillConfig:
    id: str
    device: str
    profile: str = "treadctl-reference"
    limits: Limits | None = None
    #: Backward walking on a forward-only belt: the user faces the rear, the belt never
    #: changes direction; refused on a profile that can reverse (docs/daemon.md).
    rear_facing: bool = False
    #: The lane's heart-rate strap (``ble://AA:BB:..``, ``ble://name=PREFIX``, or
    #: ``sim-hr://...`` on the lane's simulated belt), None: the treadmill's own HR field
    #: only. One strap is on one person: two lanes with the same strap is a config error.
    hr: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    mqtt: MqttConfig
    daemon: DaemonSettings
    treadmills: tuple[TreadmillConfig, ...]
    site_limits: Limits | None = None
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    source: str = "<config>"


# --------------------------------------------------------------------------- helpers


class _Table:
    """One TOML table: typed getters that name ``[table].key`` in errors, unknown keys fail."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a table, got {type(data).__name__}")
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})"
                )
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        return key in self.data

    def str_(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._name(key)}: required")
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self._name(key)}: must be a non-empty string")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self._name(key)}: must be true or false")
        return value

    def int_(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{self._name(key)}: must be an integer {lo}..{hi}, got {value!r}")
        return value

    def num(self, key: str, default: float | None, lo: float, hi: float) -> float | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{self._name(key)}: must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise ConfigError(f"{self._name(key)}: must be within {lo:g}..{hi:g}, got {value!r}")
        return number


def _file_field(t: _Table, key: str, base: Path) -> str | None:
    value = t.str_(key)
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(f"{t._name(key)}: no such file: {path}")
    return str(path)


def _topic_base(t: _Table) -> str:
    value = t.str_("base_topic", "treadctl")
    assert value is not None
    if _TOPIC_LEVEL_FORBIDDEN.search(value) or value.startswith("/") or value.endswith("/"):
        raise ConfigError(
            f"{t.where}.base_topic: must not contain '+', '#' or start/end with '/', got {value!r}"
        )
    return value


# --------------------------------------------------------------------------- sections


def _mqtt(data: Any, where: str, base: Path, secrets: bool = True) -> MqttConfig:
    t = _Table(
        data,
        f"{where}: [mqtt]",
        {"host", "port", "client_id", "username", "password", "password_file", "tls",
         "keepalive_s", "base_topic", "max_payload_bytes"},
    )
    password = t.str_("password")
    if t.has("password_file"):
        if password is not None:
            raise ConfigError(f"{t.where}.password_file: give password or password_file, not both")
        if secrets:
            pw_path = _file_field(t, "password_file", base)
            assert pw_path is not None
            try:
                password = Path(pw_path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"{t.where}.password_file: cannot read: {exc.strerror}"
                                  ) from None
            if not password:
                raise ConfigError(f"{t.where}.password_file: file is empty")
    username = t.str_("username")
    if password is not None and username is None:
        raise ConfigError(f"{t.where}.username: required when a password is given")
    tls: TlsConfig | None = None
    if t.has("tls"):
        tt = _Table(t.data["tls"], f"{t.where}.tls", {"ca_file", "cert_file", "key_file",
                                                      "insecure"})
        tls = TlsConfig(
            ca_file=_file_field(tt, "ca_file", base),
            cert_file=_file_field(tt, "cert_file", base),
            key_file=_file_field(tt, "key_file", base),
            insecure=tt.bool_("insecure", False),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            raise ConfigError(f"{tt.where}: cert_file and key_file go together")
    default = MqttConfig()
    client_id = t.str_("client_id", default.client_id)
    host = t.str_("host", default.host)
    assert client_id is not None and host is not None
    return MqttConfig(
        host=host,
        port=t.int_("port", 8883 if tls is not None else 1883, 1, 65535),
        client_id=client_id,
        username=username,
        password=password,
        tls=tls,
        keepalive_s=t.int_("keepalive_s", default.keepalive_s, 5, 3600),
        base_topic=_topic_base(t),
        max_payload_bytes=t.int_("max_payload_bytes", default.max_payload_bytes, 256, 1 << 20),
    )


def _daemon(data: Any, where: str) -> DaemonSettings:
    t = _Table(
        data,
        f"{where}: [daemon]",
        {"data_dir", "telemetry_hz", "tick_hz", "heartbeat_s", "broker_lost_policy",
         "broker_grace_s", "command_rate_per_s"},
    )
    d = DaemonSettings()
    policy = t.str_("broker_lost_policy", d.broker_lost_policy)
    if policy not in ("stop", "continue"):
        raise ConfigError(f"{t.where}.broker_lost_policy: must be 'stop' or 'continue', "
                          f"got {policy!r}")
    data_dir = t.str_("data_dir", d.data_dir)
    assert data_dir is not None
    return DaemonSettings(
        data_dir=data_dir,
        telemetry_hz=_req(t.num("telemetry_hz", d.telemetry_hz, 2.0, 5.0)),
        tick_hz=_req(t.num("tick_hz", d.tick_hz, 1.0, 50.0)),
        heartbeat_s=t.num("heartbeat_s", None, 0.5, 3600.0),
        broker_lost_policy="stop" if policy == "stop" else "continue",
        broker_grace_s=_req(t.num("broker_grace_s", d.broker_grace_s, 0.0, 3600.0)),
        command_rate_per_s=_req(t.num("command_rate_per_s", d.command_rate_per_s, 1.0, 1000.0)),
    )


def _req(value: float | None) -> float:
    assert value is not None
    return value


def _limits(data: Any, where: str) -> Limits:
    try:
        return limits_from_dict(data, where)
    except LimitsError as exc:
        raise ConfigError(str(exc)) from None


def _treadmills(data: Any, where: str) -> tuple[TreadmillConfig, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: [[treadmill]]: at least one treadmill is required")
    out: list[TreadmillConfig] = []
    seen: set[str] = set()
    for index, item in enumerate(data, start=1):
        t = _Table(item, f"{where}: [[treadmill]] #{index}",
                   {"id", "device", "profile", "limits", "rear_facing", "hr"})
        tid = t.str_("id", required=True)
        assert tid is not None
        if not _ID_RE.match(tid) or tid in _RESERVED_IDS:
            raise ConfigError(
                f"{t.where}.id: {tid!r} must be 1-64 of [A-Za-z0-9_-] and not 'all' "
                "(it is an MQTT topic level)"
            )
        if tid in seen:
            raise ConfigError(f"{t.where}.id: duplicate id {tid!r}")
        seen.add(tid)
        device = t.str_("device", required=True)
        assert device is not None
        try:
            url = parse_device_url(device)
        except DeviceURLError as exc:
            raise ConfigError(f"{t.where}.device: {exc}") from None
        profile = t.str_("profile", "treadctl-reference")
        assert profile is not None
        try:
            loaded = load_profile(profile)
        except ProfileError as exc:
            raise ConfigError(f"{t.where}.profile: {exc}") from None
        if loaded.protocol != "ftms" and url.scheme == "ble":
            raise ConfigError(
                f"{t.where}.device: profile {profile!r} speaks the {loaded.protocol} protocol "
                "over serial:// or tcp:// (sim:// for its simulator), not Bluetooth")
        rear_facing = t.bool_("rear_facing", False)
        if rear_facing and loaded.supports_reverse:
            raise ConfigError(
                f"{t.where}.rear_facing: refused: profile {profile!r} runs the belt in reverse "
                f"itself (reverse.method = {loaded.reverse.method!r}); rear-facing is only for "
                "forward-only treadmills - remove rear_facing, reverse programs run as they are")
        limits = _limits(t.data["limits"], f"{t.where}.limits") if t.has("limits") else None
        hr = t.str_("hr")
        if hr is not None:
            try:
                parse_hr_url(hr)
            except HRURLError as exc:
                raise ConfigError(f"{t.where}.hr: {exc}") from None
        out.append(TreadmillConfig(id=tid, device=device, profile=profile, limits=limits,
                                   rear_facing=rear_facing, hr=hr))
    # A strap is on one person: the same strap on two lanes would guard and govern two
    # belts with one heart (treadctl/hr/registry.py).
    problems = check_strap_config([(tm.id, tm.hr) for tm in out])
    if problems:
        raise ConfigError(f"{where}: [[treadmill]]: {problems[0]}")
    return tuple(out)


# --------------------------------------------------------------------------- entry points


def parse_config(data: Mapping[str, Any], where: str = "<config>", base: Path | None = None,
                 *, secrets: bool = True) -> DaemonConfig:
    """Validate a parsed TOML document. ``base`` resolves relative file paths.
    ``secrets=False`` (another process reading the daemon's config, e.g. the dashboard):
    the MQTT ``password_file`` is neither opened nor read, and ``password`` is None."""
    base = base or Path.cwd()
    top = _Table(data, where, {"mqtt", "daemon", "site_limits", "safety", "homeassistant",
                               "treadmill"})
    mqtt = _mqtt(data.get("mqtt", {}), where, base, secrets)
    if not secrets:
        mqtt = replace(mqtt, password=None)
    daemon = _daemon(data.get("daemon", {}), where)
    site = _limits(data["site_limits"], f"{where}: [site_limits]") if top.has(
        "site_limits") else None
    safety = SafetyConfig()
    if top.has("safety"):
        if not isinstance(data["safety"], Mapping):
            raise ConfigError(f"{where}: [safety]: must be a table")
        try:
            safety = SafetyConfig.from_dict(dict(data["safety"]), f"{where}: [safety]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    ha = HomeAssistantConfig()
    if top.has("homeassistant"):
        h = _Table(data["homeassistant"], f"{where}: [homeassistant]",
                   {"enabled", "prefix", "node_id"})
        prefix = h.str_("prefix", ha.prefix)
        assert prefix is not None
        if _TOPIC_LEVEL_FORBIDDEN.search(prefix):
            raise ConfigError(f"{h.where}.prefix: must not contain '+' or '#'")
        node_id = h.str_("node_id", ha.node_id)
        assert node_id is not None
        if not _ID_RE.match(node_id):
            raise ConfigError(f"{h.where}.node_id: {node_id!r} must be 1-64 of [A-Za-z0-9_-]")
        ha = HomeAssistantConfig(enabled=h.bool_("enabled", True), prefix=prefix, node_id=node_id)
    treadmills = _treadmills(data.get("treadmill"), where)
    return DaemonConfig(
        mqtt=mqtt,
        daemon=daemon,
        treadmills=treadmills,
        site_limits=site,
        safety=safety,
        homeassistant=ha,
        source=where,
    )


def load_config(path: str | os.PathLike[str], *, secrets: bool = True) -> DaemonConfig:
    """Read and validate a config file; raises :class:`ConfigError` (one line).
    ``secrets=False``: see :func:`parse_config`."""
    p = Path(path)
    name = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    config = parse_config(data, name, p.parent, secrets=secrets)
    if secrets and config.mqtt.password is not None and "password" in data.get("mqtt", {}):
        _warn_if_readable(p)
    return config


def _warn_if_readable(path: Path) -> None:
    """A password in a group/world-readable file is worth a warning (never the password)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "%s holds an MQTT password and is readable by group/others (mode %o); "
            "chmod 600 it or use password_file",
            path,
            stat.S_IMODE(mode),
        )
