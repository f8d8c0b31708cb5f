"""The MQTT contract (docs/mqtt.md) as pure code: topics, command parsing, payloads.

Sans-I/O like h11: bytes in, validated :class:`Command` objects or :class:`CommandInvalid`
out; snapshots/events in, JSON bytes out. No client, no socket, no clock of its own (the
caller passes ``now``), so every rule of the contract is testable byte by byte and the
service (:mod:`treadctl.daemon.service`) is only wiring.

``cmd/estop`` is deliberately *not* parsed here before it acts: the service stops the belt
on the topic alone and only afterwards asks :func:`parse_estop` for the operator's reason
(it goes into the latch) and a request id for the ack (best effort, never raises).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class CommandKind(enum.StrEnum):
    """The one registry of MQTT commands (``<base>/<id>/cmd/<name>``, docs/mqtt.md). The
    bridge parses them, the lane runs them (a table from kind to handler), discovery and
    the fuzz seeds read them from here. A new command: a member, its :data:`SPECS`
    entry, and its handler in the lane."""

    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    SET = "set"
    ESTOP = "estop"
    RESET = "reset"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class CommandSpec:
    fields: frozenset[str]  # the payload fields it accepts
    empty_ok: bool = False  # an empty payload means {} (``mosquitto_pub -n``)
    superseded_by_stop: bool = False  # still queued when a cmd/stop arrives: dropped
    #: recorded by the lane as a ``command`` event (who pressed what); ``set`` is recorded
    #: by the controller (with the setpoints), ``heartbeat`` is not a person's action
    audited: bool = True


#: Who gave a command and why (docs/daemon.md, "Who pressed what"): optional on every
#: command an operator gives; the lane records them in a ``command`` event.
OPERATOR = frozenset({"by", "reason"})

SPECS: dict[CommandKind, CommandSpec] = {
    CommandKind.START: CommandSpec(frozenset({"program", "hr_device", "request_id"}) | OPERATOR,
                                   superseded_by_stop=True),
    CommandKind.STOP: CommandSpec(frozenset({"request_id"}) | OPERATOR, empty_ok=True),
    CommandKind.PAUSE: CommandSpec(frozenset({"request_id"}) | OPERATOR, empty_ok=True,
                                   superseded_by_stop=True),
    CommandKind.RESUME: CommandSpec(frozenset({"request_id"}) | OPERATOR, empty_ok=True,
                                    superseded_by_stop=True),
    CommandKind.SET: CommandSpec(frozenset({"speed_kmh", "incline_pct", "request_id"})
                                 | OPERATOR, superseded_by_stop=True, audited=False),
    CommandKind.ESTOP: CommandSpec(frozenset({"reason", "request_id"}) | OPERATOR),
    CommandKind.RESET: CommandSpec(frozenset({"reason", "request_id"}) | OPERATOR),
    CommandKind.HEARTBEAT: CommandSpec(frozenset({"request_id"}), empty_ok=True,
                                       audited=False),
}

#: Commands a treadmill accepts, by name (in the registry's order).
COMMANDS: tuple[str, ...] = tuple(k.value for k in CommandKind)
#: The topic level that addresses every treadmill (``<base>/all/cmd/estop``).
ALL = "all"
MAX_REQUEST_ID_CHARS = 128
MAX_REASON_CHARS = 200
MAX_BY_CHARS = 64
MAX_HR_DEVICE_CHARS = 256

_FIELDS: dict[str, frozenset[str]] = {k.value: spec.fields for k, spec in SPECS.items()}
_EMPTY_OK = frozenset(k.value for k, spec in SPECS.items() if spec.empty_ok)

RequestId = str | int | None


@dataclass(frozen=True)
class Topics:
    """Every topic of one treadmill under ``base`` (default ``treadctl``)."""

    base: str
    treadmill_id: str

    @property
    def prefix(self) -> str:
        return f"{self.base}/{self.treadmill_id}"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def state(self) -> str:
        return f"{self.prefix}/state"

    @property
    def info(self) -> str:
        """Retained: what the lane can do (treadctl/daemon/info.py)."""
        return f"{self.prefix}/info"

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/telemetry"

    @property
    def event(self) -> str:
        return f"{self.prefix}/event"

    @property
    def commands(self) -> str:
        """Subscription filter for this treadmill's commands."""
        return f"{self.prefix}/cmd/#"

    @property
    def estop(self) -> str:
        return f"{self.prefix}/cmd/estop"

    @property
    def gym_estop(self) -> str:
        return f"{self.base}/{ALL}/cmd/estop"

    def command_of(self, topic: str) -> str | None:
        """``"set"`` for ``<prefix>/cmd/set``; None when the topic is not ours."""
        head = f"{self.prefix}/cmd/"
        if topic.startswith(head):
            return topic[len(head):]
        return None


@dataclass(frozen=True)
class Command:
    """A validated command. Fields not used by ``kind`` are None."""

    kind: str
    request_id: RequestId = None
    program: str | dict[str, Any] | None = None
    speed_kmh: float | None = None
    incline_pct: float | None = None
    reason: str | None = None
    #: The operator who gave the command (``by``), e.g. the dashboard's logged-in user.
    by: str | None = None
    #: ``cmd/start``: the heart-rate strap for this session (a valid ``ble://`` or
    #: ``sim-hr://`` URL), instead of the lane's own ``hr``; bound to the lane for the
    #: session (the lane refuses one that another lane holds) and released at its end.
    hr_device: str | None = None


class CommandInvalid(Exception):
    """A command that is rejected before it reaches the controller (nothing changes)."""

    def __init__(self, kind: str, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.request_id = request_id


def _request_id(obj: dict[str, Any], kind: str) -> RequestId:
    if "request_id" not in obj:
        return None
    rid = obj["request_id"]
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise CommandInvalid(kind, "request_id: must be a string or an integer")
    if isinstance(rid, str) and len(rid) > MAX_REQUEST_ID_CHARS:
        raise CommandInvalid(kind, f"request_id: longer than {MAX_REQUEST_ID_CHARS} characters")
    return rid


def _number(obj: dict[str, Any], key: str, kind: str, rid: RequestId) -> float | None:
    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandInvalid(kind, f"{key}: must be a number, got {_json_type(value)}", rid)
    number = float(value)
    if not math.isfinite(number):
        raise CommandInvalid(kind, f"{key}: must be a finite number", rid)
    return number


def _json_type(value: Any) -> str:
    return {
        str: "string", bool: "boolean", int: "number", float: "number", list: "array",
        dict: "object", type(None): "null",
    }.get(type(value), type(value).__name__)


def _decode_object(kind: str, payload: bytes, max_bytes: int) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise CommandInvalid(kind, f"payload too large ({len(payload)} > {max_bytes} bytes)")
    if not payload.strip() and kind in _EMPTY_OK:
        return {}
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandInvalid(kind, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandInvalid(kind, f"payload must be a JSON object, got {_json_type(obj)}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_command(kind: str, payload: bytes, max_bytes: int) -> Command:
    """Validate ``payload`` of ``cmd/<kind>``; raises :class:`CommandInvalid`."""
    if kind not in _FIELDS:
        raise CommandInvalid(kind, f"unknown command {kind!r} (known: {', '.join(COMMANDS)})")
    obj = _decode_object(kind, payload, max_bytes)
    rid = _request_id(obj, kind)
    unknown = sorted(set(obj) - _FIELDS[kind])
    if unknown:
        known = ", ".join(sorted(_FIELDS[kind]))
        raise CommandInvalid(kind, f"unknown field {unknown[0]!r} (known: {known})", rid)
    by = _by(obj, kind, rid)
    if kind == "start":
        program = obj.get("program")
        if program is None:
            raise CommandInvalid(kind, "program: required (a built-in name or a program object)",
                                 rid)
        if not isinstance(program, str | dict) or program == "":
            raise CommandInvalid(
                kind, f"program: must be a name or an object, got {_json_type(program)}", rid
            )
        return Command(kind, rid, program=program, by=by, reason=_reason(obj, kind, rid),
                       hr_device=_hr_device(obj, kind, rid))
    if kind == "set":
        speed = _number(obj, "speed_kmh", kind, rid)
        incline = _number(obj, "incline_pct", kind, rid)
        if speed is None and incline is None:
            raise CommandInvalid(kind, "give speed_kmh and/or incline_pct", rid)
        return Command(kind, rid, speed_kmh=speed, incline_pct=incline, by=by,
                       reason=_reason(obj, kind, rid))
    if kind in ("reset", "estop"):
        reason = obj.get("reason")
        if reason is None and kind == "estop":
            return Command(kind, rid, by=by)
        if not isinstance(reason, str) or not reason.strip():
            raise CommandInvalid(kind, "reason: required, a non-empty string", rid)
        if len(reason) > MAX_REASON_CHARS:
            raise CommandInvalid(kind, f"reason: longer than {MAX_REASON_CHARS} characters", rid)
        return Command(kind, rid, reason=reason.strip(), by=by)
    if kind in _FIELDS and "reason" in _FIELDS[kind]:
        return Command(kind, rid, by=by, reason=_reason(obj, kind, rid))
    return Command(kind, rid)


def _text(obj: dict[str, Any], key: str, kind: str, rid: RequestId,
          max_chars: int) -> str | None:
    """An optional non-empty string field of at most ``max_chars`` (stripped)."""
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise CommandInvalid(kind, f"{key}: must be a string, got {_json_type(value)}", rid)
    value = value.strip()
    if not value:
        raise CommandInvalid(kind, f"{key}: must not be empty", rid)
    if len(value) > max_chars:
        raise CommandInvalid(kind, f"{key}: longer than {max_chars} characters", rid)
    return value


def _hr_device(obj: dict[str, Any], kind: str, rid: RequestId) -> str | None:
    """``hr_device``: a heart-rate strap URL (``ble://...`` or ``sim-hr://...``), checked
    here (pure: nothing connects); whether another lane holds it is the lane's check."""
    url = _text(obj, "hr_device", kind, rid, MAX_HR_DEVICE_CHARS)
    if url is None:
        return None
    from treadctl.hr.strap import HRURLError, parse_hr_url

    try:
        parse_hr_url(url)
    except HRURLError as exc:
        raise CommandInvalid(kind, f"hr_device: {exc}", rid) from None
    return url


def _by(obj: dict[str, Any], kind: str, rid: RequestId) -> str | None:
    """``by``: who gave the command, one line of 1..``MAX_BY_CHARS`` printable characters."""
    by = _text(obj, "by", kind, rid, MAX_BY_CHARS)
    if by is not None and not by.isprintable():
        raise CommandInvalid(kind, "by: must be one line of printable characters", rid)
    return by


def _reason(obj: dict[str, Any], kind: str, rid: RequestId) -> str | None:
    """An optional ``reason`` (start, stop, pause, resume, set): a string of at most
    ``MAX_REASON_CHARS``; blank counts as none."""
    reason = obj.get("reason")
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise CommandInvalid(kind, f"reason: must be a string, got {_json_type(reason)}", rid)
    if len(reason) > MAX_REASON_CHARS:
        raise CommandInvalid(kind, f"reason: longer than {MAX_REASON_CHARS} characters", rid)
    return " ".join(reason.split()) or None


@dataclass(frozen=True)
class EstopDetails:
    """What an e-stop payload says, read *after* the belt was told to stop: the operator's
    ``reason`` (carried into the latch: ``state.reason``, the ``estop`` event, the session
    record), the ``request_id`` for the ack, and ``warnings`` naming whatever in the payload
    was not as documented (it stopped anyway)."""

    reason: str | None = None
    request_id: RequestId = None
    warnings: tuple[str, ...] = ()
    #: Who pressed it (``by``), when the payload says so (cut to ``MAX_BY_CHARS``).
    by: str | None = None

    @property
    def note(self) -> str | None:
        """What goes into the latch (``state.reason``): the reason and who pressed it."""
        if self.by is None:
            return self.reason
        return f"{self.reason} (by {self.by})" if self.reason else f"by {self.by}"


def _clip(text: str) -> str:
    text = " ".join(text.split())  # one line: it ends up in logs and in state.reason
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "\u2026"
    return text


def parse_estop(payload: bytes, max_bytes: int) -> EstopDetails:
    """Best-effort reading of an e-stop payload. Never raises and never refuses: every
    payload has already stopped the belt. A JSON object gives ``reason`` and
    ``request_id``; a reason that is not a string is coerced (``5`` -> ``"5"``, an object
    to its JSON text) and a too long one is cut, each with a warning; a non-JSON text
    payload (``mosquitto_pub -m "runner fell"``) is taken as the reason."""
    try:
        return _parse_estop(payload, max_bytes)
    except Exception as exc:  # e.g. RecursionError on absurdly nested JSON
        return EstopDetails(warnings=(f"payload not understood ({type(exc).__name__})",))


def _parse_estop(payload: bytes, max_bytes: int) -> EstopDetails:
    if not payload.strip():
        return EstopDetails()
    if len(payload) > max_bytes:
        return EstopDetails(warnings=(f"payload too large ({len(payload)} > {max_bytes} "
                                      "bytes): not read",))
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return EstopDetails(warnings=("payload is not UTF-8 text: not read",))
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        if all(c.isprintable() or c.isspace() for c in text):
            return EstopDetails(_clip(text) or None,
                                warnings=("payload is not JSON: taken as the reason",))
        return EstopDetails(warnings=("payload is not JSON: not read",))
    if isinstance(obj, str):
        return EstopDetails(_clip(obj) or None)
    if not isinstance(obj, dict):
        return EstopDetails(warnings=(f"payload is a JSON {_json_type(obj)}, expected an "
                                      "object: not read",))
    warnings: list[str] = []
    rid: RequestId = None
    try:
        rid = _request_id(obj, "estop")
    except CommandInvalid as exc:
        warnings.append(f"{exc.message}: ignored")
    unknown = sorted(set(obj) - _FIELDS["estop"])
    if unknown:
        warnings.append(f"unknown field {unknown[0]!r} ignored (known: by, reason, request_id)")
    value = obj.get("reason")
    reason: str | None = None
    if isinstance(value, str):
        reason = _clip(value) or None
        if len(" ".join(value.split())) > MAX_REASON_CHARS:
            warnings.append(f"reason: longer than {MAX_REASON_CHARS} characters; cut")
    elif value is not None:
        reason = _clip(json.dumps(value, separators=(",", ":"), default=str))
        warnings.append(f"reason: expected a string, got {_json_type(value)}; used {reason!r}")
    by: str | None = None
    who = obj.get("by")
    if isinstance(who, str):
        by = " ".join(who.split())[:MAX_BY_CHARS] or None
        if len(" ".join(who.split())) > MAX_BY_CHARS:
            warnings.append(f"by: longer than {MAX_BY_CHARS} characters; cut")
    elif who is not None:
        warnings.append(f"by: expected a string, got {_json_type(who)}; ignored")
    return EstopDetails(reason, rid, tuple(warnings), by)


def estop_details(payload: bytes, max_bytes: int) -> tuple[str | None, RequestId]:
    """Reason and request id of an e-stop payload (:func:`parse_estop`); never raises."""
    details = parse_estop(payload, max_bytes)
    return details.reason, details.request_id


# --------------------------------------------------------------------------- payloads out


def iso_utc(when: datetime | None = None) -> str:
    """``2024-05-01T12:00:00.123Z``: the ``ts`` of every outgoing payload."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: One encoder for every payload (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _dumps(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode()


#: The heart-rate fields of ``state`` and ``telemetry`` (docs/mqtt.md, "Heart rate"):
#: the filtered HR (null unless its quality is good), its source, its quality, and the
#: governed segment's zone.
HR_FIELDS = ("hr_bpm", "hr_source", "hr_quality", "hr_zone_bpm")
STATE_FIELDS = (
    "state", "latched", "reason", "program", "segment", "direction", "target_speed_kmh",
    "speed_kmh", "incline_pct", "session_id", *HR_FIELDS, "warnings",
)
TELEMETRY_FIELDS = ("speed_kmh", "direction", "incline_pct", "distance_m", "elapsed_s",
                    *HR_FIELDS)


def snapshot_fields(snapshot: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``names`` read straight off a controller ``Snapshot`` (no ``dataclasses.asdict``
    deep copy: this runs for every telemetry frame of every treadmill). Enums are StrEnums
    and encode as their value."""
    return {name: getattr(snapshot, name) for name in names}


def state_payload(snapshot: dict[str, Any], ts: str | None = None, **extra: Any) -> bytes:
    """The retained ``state`` message from ``Snapshot.as_dict()`` (plus ``extra`` fields)."""
    out = {k: snapshot.get(k) for k in STATE_FIELDS}
    out.update(extra)
    out["ts"] = ts or iso_utc()
    return _dumps(out)


def telemetry_payload(snapshot: dict[str, Any], ts: str | None = None, **extra: Any) -> bytes:
    """A ``telemetry`` message (plus ``extra`` fields, e.g. the link counters now and then)."""
    out: dict[str, Any] = {"ts": ts or iso_utc()}
    out.update({k: snapshot.get(k) for k in TELEMETRY_FIELDS})
    out.update(extra)
    return _dumps(out)


def disconnected_state(reason: str | None, ts: str | None = None, *,
                       latch_reason: str | None = None) -> bytes:
    """State of a treadmill whose link is down (no controller to ask). Its speed is not
    known: ``speed_kmh`` is null (the field stays, docs/mqtt.md). ``latch_reason``: the
    lane's machine is latched (a latch kept across the link loss, or an e-stop while the
    link is down): ``latched`` is true and ``reason`` is the latch's, as on a link."""
    snap: dict[str, Any] = {
        "state": "disconnected", "latched": latch_reason is not None,
        "reason": latch_reason if latch_reason is not None else reason,
        "direction": "forward", "target_speed_kmh": 0.0, "speed_kmh": None,
        "incline_pct": 0.0, "warnings": [],
    }
    return state_payload(snap, ts)


def event_payload(event: dict[str, Any], ts: str | None = None) -> bytes:
    """An ``event`` message; ``request_id`` is always present (null when not a reply)."""
    out = dict(event)
    # The controller stamps its events with its own monotonic clock (``t_s``): meaningless
    # outside this process (it restarts at every boot). ``ts`` is the event's time.
    out.pop("t_s", None)
    out.setdefault("request_id", None)
    out["ts"] = ts or iso_utc()
    return _dumps(out)


def ack(kind: str, request_id: RequestId, **data: Any) -> dict[str, Any]:
    return {"type": "ack", "command": kind, "request_id": request_id, **data}


def error(kind: str, request_id: RequestId, message: str) -> dict[str, Any]:
    return {"type": "error", "command": kind, "request_id": request_id, "error": message}
