"""Home Assistant MQTT discovery for treadctl treadmills.

This module owns the discovery payloads only: pure functions from a treadmill id
and its program names to ``(topic, JSON payload)`` pairs. The MQTT bridge
publishes them (QoS :data:`DISCOVERY_QOS`, retained), publishes them again when
Home Assistant announces itself on :func:`birth_topic`, and publishes
:func:`removal_messages` (empty retained payloads) for a treadmill that leaves
the config.

One Home Assistant *device* per treadmill; its entities read the contract's
topics (docs/mqtt.md) and never need anything the daemon does not already
publish:

* sensors from the retained ``<base>/<id>/state`` JSON: state, stop reason,
  program, segment, direction, target speed, session id;
* sensors from ``<base>/<id>/telemetry``: speed, incline, distance, elapsed time,
  heart rate;
* heart-rate sensors from the retained state: its source (strap / treadmill), its quality
  (good / unreliable / lost) and a governed segment's zone (low and high, bpm, so Home
  Assistant's history draws the band next to the heart rate); binary sensor "Heart rate
  unreliable" (the ``hr-unreliable`` warning: the reading is not trusted, nothing moves
  because of it);
* binary sensor "E-stop latched";
* buttons stop, e-stop, pause, resume;
* a select that starts a program (``cmd/start``).

There is deliberately **no reset button**. A latch is cleared by a deliberate act
of staff who can see the machine (or by the gym back-end, which owns that
procedure), never by a tap on a dashboard that may be in another room: EN 957-6
says a stop device never resets automatically and IEC 60204-1 that a reset must
not be able to restart the machine, and a one-tap reset next to a one-tap
program start would make both of those easy to defeat from afar.

Keys are Home Assistant's full names (no abbreviations), checked against the
MQTT sensor / binary sensor / button / select documentation. Availability follows
``<base>/<id>/status`` (``online`` / ``offline``, the daemon's Last Will), so every
entity shows "unavailable" when the daemon is gone. Templates render JSON
``null`` and missing keys as ``None``, which Home Assistant shows as "unknown".
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from treadctl import __version__
from treadctl.control.machine import State
from treadctl.daemon.bridge import CommandKind

__all__ = [
    "COMMAND_SUFFIXES",
    "DISCOVERY_QOS",
    "DISCOVERY_RETAIN",
    "HR_QUALITIES",
    "HR_SOURCES",
    "STATES",
    "birth_topic",
    "discovery_messages",
    "removal_messages",
]

DISCOVERY_QOS: Final = 1
# Retained so Home Assistant finds the entities after its own restart even before
# the daemon republishes on the birth message.
DISCOVERY_RETAIN: Final = True

# Command topics of docs/mqtt.md (relative to <base>/<id>/cmd/). Discovery only ever
# points Home Assistant at a subset of these; "reset" is intentionally not used.
COMMAND_SUFFIXES: Final = frozenset(k.value for k in CommandKind)

# state.state values of docs/mqtt.md, the options of the "State" enum sensor.
STATES: Final = tuple(s.value for s in State)
_DIRECTIONS: Final = ("forward", "reverse")
# Snapshot.hr_source / hr_quality values (docs/mqtt.md, "Heart rate"); null = no source.
HR_SOURCES: Final = ("strap", "treadmill")
HR_QUALITIES: Final = ("good", "unreliable", "lost")

# Home Assistant's discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config,
# node_id and object_id limited to this alphabet.
_TOPIC_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
# Program names go verbatim into the select's command template and a Jinja list
# literal; these characters would need escaping there, so they are refused.
_BAD_PROGRAM_CHARS_RE: Final = re.compile(r'["\\{}%\x00-\x1f\x7f]')


# --- templates --------------------------------------------------------------------------


def _text_template(key: str) -> str:
    # .get(): a missing key renders None (-> "unknown") instead of an undefined-variable
    # warning and an ignored empty payload.
    return f"{{{{ value_json.get('{key}') }}}}"


def _number_template(key: str, digits: int) -> str:
    # Rounding keeps Home Assistant from writing a new state for every telemetry
    # message (it only records changes); null/non-numbers become "unknown".
    return (
        f"{{% set v = value_json.get('{key}') %}}"
        f"{{{{ v | round({digits}) if v is number and v is not boolean else None }}}}"
    )


def _choice_template(key: str, options: list[str]) -> str:
    # A value outside the options would make Home Assistant log an error and keep the
    # previous value; show "unknown" instead (e.g. a program sent inline by the back-end).
    literal = json.dumps(options, ensure_ascii=False)
    return f"{{% set v = value_json.get('{key}') %}}{{{{ v if v in {literal} else None }}}}"


def _zone_template(index: int) -> str:
    # hr_zone_bpm is [low, high] during a governed segment, null otherwise (-> unknown).
    return (
        "{% set z = value_json.get('hr_zone_bpm') %}"
        "{{ z[" + str(index) + "] | round(0) if z is iterable and z is not string "
        "and z is not mapping and z | length == 2 and z[" + str(index) + "] is number "
        "and z[" + str(index) + "] is not boolean else None }}"
    )


_HR_UNRELIABLE_TEMPLATE: Final = (
    "{% set w = value_json.get('warnings') %}"
    "{{ ('ON' if 'hr-unreliable' in w else 'OFF') if w is iterable and w is not string "
    "and w is not mapping else None }}"
)

_LATCHED_TEMPLATE: Final = (
    "{% set v = value_json.get('latched') %}"
    "{{ 'ON' if v is sameas true else ('OFF' if v is sameas false else None) }}"
)

# The command template given by the daemon's contract: cmd/start takes
# {"program": NAME}; names are checked by _check_programs so this stays valid JSON.
_START_COMMAND_TEMPLATE: Final = '{"program": "{{ value }}"}'


# --- validation ---------------------------------------------------------------------------


def _check_topic_part(what: str, value: str, *, allow_slash: bool) -> None:
    if not value:
        raise ValueError(f"{what} must not be empty")
    if any(c in value for c in "+#\x00"):
        raise ValueError(f"{what} {value!r} must not contain '+', '#' or NUL")
    if not allow_slash and "/" in value:
        raise ValueError(f"{what} {value!r} must be a single topic level (no '/')")
    if value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{what} {value!r} must not start or end with '/'")


def _topic_safe_id(text: str) -> str:
    """``text`` as a discovery node/object id: stable, collision-free, [A-Za-z0-9_-]."""
    if _TOPIC_ID_RE.fullmatch(text):
        return text
    # Replace what Home Assistant refuses and add a hash of the original so that
    # "lane.1" and "lane 1" stay two different devices.
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', text)}_{digest}"


def _check_programs(programs: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for program in programs:
        if not isinstance(program, str) or not program.strip():
            raise ValueError(f"program names must be non-empty strings, got {program!r}")
        if _BAD_PROGRAM_CHARS_RE.search(program):
            raise ValueError(
                f"program name {program!r} cannot be offered to Home Assistant: "
                "it contains a quote, backslash, brace, % or control character"
            )
        if len(program) > 255:  # Home Assistant's limit for a state value
            raise ValueError(f"program name {program[:40]!r}... is longer than 255 characters")
        if program not in seen:
            seen.add(program)
            out.append(program)
    return out


# --- entities ------------------------------------------------------------------------------


def _heart_rate_entities(state_topic: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Next to "Heart rate", from the retained state: its source, its quality, the zone of a
    governed segment, and the ``hr-unreliable`` warning."""

    def enum(key: str, name: str, options: tuple[str, ...], icon: str) -> dict[str, Any]:
        return {"name": name, "state_topic": state_topic,
                "value_template": _choice_template(key, list(options)),
                "device_class": "enum", "options": list(options), "icon": icon}

    def zone(index: int, name: str, icon: str) -> dict[str, Any]:
        return {"name": name, "state_topic": state_topic,
                "value_template": _zone_template(index), "state_class": "measurement",
                "unit_of_measurement": "bpm", "icon": icon}

    unreliable = {"name": "Heart rate unreliable", "state_topic": state_topic,
                  "value_template": _HR_UNRELIABLE_TEMPLATE, "payload_on": "ON",
                  "payload_off": "OFF", "device_class": "problem", "icon": "mdi:heart-broken"}
    return [
        ("sensor", "hr_source", enum("hr_source", "Heart rate source", HR_SOURCES,
                                     "mdi:heart-cog")),
        ("sensor", "hr_quality", enum("hr_quality", "Heart rate quality", HR_QUALITIES,
                                      "mdi:heart-flash")),
        ("sensor", "hr_zone_low", zone(0, "Heart rate zone low", "mdi:heart-minus")),
        ("sensor", "hr_zone_high", zone(1, "Heart rate zone high", "mdi:heart-plus")),
        ("binary_sensor", "hr_unreliable", unreliable),
    ]


def _entities(
    state_topic: str, telemetry_topic: str, cmd_topic: str, programs: list[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, key, component-specific config) for every entity of one treadmill."""

    def command(suffix: str) -> str:
        assert suffix in COMMAND_SUFFIXES
        return f"{cmd_topic}/{suffix}"

    def button(name: str, suffix: str, payload: dict[str, str], icon: str) -> dict[str, Any]:
        return {
            "name": name,
            "command_topic": command(suffix),
            "payload_press": json.dumps(payload, separators=(",", ":")),
            "qos": 1,
            # A retained command would fire again on every reconnect of the daemon.
            "retain": False,
            "icon": icon,
        }

    entities: list[tuple[str, str, dict[str, Any]]] = [
        (
            "sensor",
            "state",
            {
                "name": "State",
                "state_topic": state_topic,
                "value_template": _choice_template("state", list(STATES)),
                "device_class": "enum",
                "options": list(STATES),
                # Every field of the state message (reason, session id, ...) as attributes.
                "json_attributes_topic": state_topic,
                "icon": "mdi:run",
            },
        ),
        (
            "sensor",
            "reason",
            {
                "name": "Stop reason",
                "state_topic": state_topic,
                "value_template": _text_template("reason"),
                "icon": "mdi:alert-circle-outline",
            },
        ),
        (
            "sensor",
            "current_program",
            {
                "name": "Current program",
                "state_topic": state_topic,
                "value_template": _text_template("program"),
                "icon": "mdi:format-list-numbered",
            },
        ),
        (
            "sensor",
            "segment",
            {
                "name": "Segment",
                "state_topic": state_topic,
                "value_template": _number_template("segment", 0),
                "icon": "mdi:debug-step-over",
            },
        ),
        (
            "sensor",
            "session",
            {
                "name": "Session",
                "state_topic": state_topic,
                "value_template": _text_template("session_id"),
                "entity_category": "diagnostic",
                "icon": "mdi:identifier",
            },
        ),
        (
            "sensor",
            "direction",
            {
                "name": "Direction",
                "state_topic": state_topic,
                "value_template": _choice_template("direction", list(_DIRECTIONS)),
                "device_class": "enum",
                "options": list(_DIRECTIONS),
                "icon": "mdi:swap-horizontal",
            },
        ),
        (
            "sensor",
            "target_speed",
            {
                "name": "Target speed",
                "state_topic": state_topic,
                "value_template": _number_template("target_speed_kmh", 1),
                "device_class": "speed",
                "state_class": "measurement",
                "unit_of_measurement": "km/h",
                "suggested_display_precision": 1,
            },
        ),
        (
            "sensor",
            "speed",
            {
                "name": "Speed",
                "state_topic": telemetry_topic,
                "value_template": _number_template("speed_kmh", 1),
                "device_class": "speed",
                "state_class": "measurement",
                "unit_of_measurement": "km/h",
                "suggested_display_precision": 1,
            },
        ),
        (
            "sensor",
            "incline",
            {
                "name": "Incline",
                "state_topic": telemetry_topic,
                "value_template": _number_template("incline_pct", 1),
                "state_class": "measurement",
                "unit_of_measurement": "%",
                "suggested_display_precision": 1,
                "icon": "mdi:slope-uphill",
            },
        ),
        (
            "sensor",
            "distance",
            {
                "name": "Distance",
                "state_topic": telemetry_topic,
                "value_template": _number_template("distance_m", 0),
                "device_class": "distance",
                # Restarts at 0 with each session; total_increasing reads a drop as a reset.
                "state_class": "total_increasing",
                "unit_of_measurement": "m",
                "suggested_display_precision": 0,
            },
        ),
        (
            "sensor",
            "elapsed",
            {
                "name": "Elapsed",
                "state_topic": telemetry_topic,
                "value_template": _number_template("elapsed_s", 0),
                "device_class": "duration",
                "unit_of_measurement": "s",
                "suggested_display_precision": 0,
            },
        ),
        (
            "sensor",
            "heart_rate",
            {
                "name": "Heart rate",
                "state_topic": telemetry_topic,
                "value_template": _number_template("hr_bpm", 0),
                "state_class": "measurement",
                "unit_of_measurement": "bpm",
                "icon": "mdi:heart-pulse",
            },
        ),
        *_heart_rate_entities(state_topic),
        (
            "binary_sensor",
            "latched",
            {
                "name": "E-stop latched",
                "state_topic": state_topic,
                "value_template": _LATCHED_TEMPLATE,
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "problem",
                "icon": "mdi:alert-octagon",
            },
        ),
        ("button", "stop", button("Stop", "stop", {}, "mdi:stop")),
        (
            "button",
            "estop",
            button("Emergency stop", "estop", {"reason": "home-assistant"}, "mdi:alert-octagon"),
        ),
        ("button", "pause", button("Pause", "pause", {}, "mdi:pause")),
        ("button", "resume", button("Resume", "resume", {}, "mdi:play")),
    ]
    if programs:
        # A select needs at least one option; with none there is nothing to start.
        entities.append(
            (
                "select",
                "program",
                {
                    "name": "Program",
                    "command_topic": command("start"),
                    "command_template": _START_COMMAND_TEMPLATE,
                    "options": programs,
                    "state_topic": state_topic,
                    "value_template": _choice_template("program", programs),
                    "qos": 1,
                    "retain": False,
                    "icon": "mdi:play-box-multiple",
                },
            )
        )
    return entities


# Every (component, key) discovery_messages can produce, for removal.
_ALL_KEYS: Final = tuple((component, key) for component, key, _ in _entities("s", "t", "c", ["x"]))


def _discovery_topic(prefix: str, component: str, node_id: str, object_id: str) -> str:
    return f"{prefix}/{component}/{node_id}/{object_id}/config"


def _check_common(treadmill_id: str, base_topic: str, node_id: str, prefix: str) -> str:
    _check_topic_part("treadmill_id", treadmill_id, allow_slash=False)
    _check_topic_part("base_topic", base_topic, allow_slash=True)
    _check_topic_part("prefix", prefix, allow_slash=True)
    if not node_id:
        raise ValueError("node_id must not be empty")
    return _topic_safe_id(treadmill_id)


def birth_topic(prefix: str = "homeassistant") -> str:
    """Where Home Assistant publishes ``online`` when it (re)starts: republish then."""
    return f"{prefix}/status"


def discovery_messages(
    treadmill_id: str,
    *,
    base_topic: str = "treadctl",
    node_id: str = "treadctl",
    programs: list[str],
    prefix: str = "homeassistant",
    name: str | None = None,
    model: str = "FTMS treadmill",
) -> list[tuple[str, str]]:
    """Discovery config messages for one treadmill, as (topic, JSON payload) pairs.

    ``programs`` are the names offered by the "Program" select (empty: no select).
    ``name`` is the device name shown in Home Assistant (default ``Treadmill <id>``),
    ``model`` its model (the daemon names the firmware profile and protocol).
    ``node_id`` and ``treadmill_id`` outside Home Assistant's ``[A-Za-z0-9_-]`` are
    cleaned for the discovery topic (with a hash, so stable and distinct); the contract
    topics keep ``treadmill_id`` as given. Raises ValueError for a treadmill id that is
    not a single MQTT topic level, an empty node id, a prefix/base topic with wildcards,
    or a program name that cannot be put into the select's templates.
    """
    safe_id = _check_common(treadmill_id, base_topic, node_id, prefix)
    # The bridge may pass its MQTT client id (which can hold dots); clean it the same way.
    node_id = _topic_safe_id(node_id)
    offered = _check_programs(programs)
    root = f"{base_topic}/{treadmill_id}"
    device = {
        "identifiers": [f"{node_id}_{safe_id}"],
        "name": name if name else f"Treadmill {treadmill_id}",
        "manufacturer": "treadctl",
        "model": model,
        "sw_version": __version__,
    }
    origin = {"name": "treadctl", "sw_version": __version__}
    availability = [
        {
            "topic": f"{root}/status",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]
    messages: list[tuple[str, str]] = []
    for component, key, config in _entities(
        f"{root}/state", f"{root}/telemetry", f"{root}/cmd", offered
    ):
        object_id = f"{safe_id}_{key}"
        payload = {
            **config,
            "unique_id": f"{node_id}_{object_id}",
            "availability": availability,
            "device": device,
            "origin": origin,
        }
        messages.append(
            (
                _discovery_topic(prefix, component, node_id, object_id),
                json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            )
        )
    return messages


def removal_messages(
    treadmill_id: str,
    *,
    base_topic: str = "treadctl",
    node_id: str = "treadctl",
    programs: list[str] | None = None,
    prefix: str = "homeassistant",
    name: str | None = None,
) -> list[tuple[str, str]]:
    """Empty payloads for every discovery topic of one treadmill (publish retained).

    Takes the same arguments as :func:`discovery_messages` so the caller can pass the
    same ones; ``programs`` and ``name`` do not matter here: the select is removed
    whether or not it was ever published.
    """
    del programs, name  # accepted for symmetry with discovery_messages
    safe_id = _check_common(treadmill_id, base_topic, node_id, prefix)
    node_id = _topic_safe_id(node_id)
    return [
        (_discovery_topic(prefix, component, node_id, f"{safe_id}_{key}"), "")
        for component, key in _ALL_KEYS
    ]
