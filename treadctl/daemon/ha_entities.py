"""The Home Assistant entities of one treadmill, as data: what each one reads or sends on
the contract's topics (docs/mqtt.md) and how Home Assistant shows it (docs/home-assistant.md,
"What appears"). :mod:`treadctl.daemon.discovery` turns this table into discovery messages
(topics, ids, device, availability) and validates what it is given.

Every entity reads the contract and never needs anything the daemon does not already publish:

* sensors from the retained ``<base>/<id>/state`` JSON: state, stop reason, program,
  segment, direction, target speed, session id;
* sensors from ``<base>/<id>/telemetry``: speed, incline, distance, elapsed time, heart rate
  (telemetry carries every reading; the retained state's ``hr_bpm`` moves in steps);
* heart-rate sensors from the retained state: its source (strap / treadmill), its quality
  (good / unreliable / lost) and a governed segment's zone (low and high, bpm, so Home
  Assistant's history draws the band next to the heart rate); binary sensor "Heart rate
  unreliable" (the ``hr-unreliable`` warning: the reading is not trusted, nothing moves
  because of it);
* binary sensor "E-stop latched";
* buttons stop, e-stop, pause, resume;
* a select that starts a program (``cmd/start``).

There is deliberately **no reset button** (:mod:`treadctl.daemon.discovery` says why).

The names of commands, states, directions, heart-rate sources and qualities come from their
one registry each (:class:`treadctl.daemon.bridge.CommandKind`, the safety machine's
:class:`~treadctl.control.machine.State`, :class:`~treadctl.types.Direction`, the heart-rate
supervisor's); ``tests/daemon/test_registry.py`` checks it. Keys are Home Assistant's full
names (no abbreviations). Templates render JSON ``null`` and missing keys as ``None``, which
Home Assistant shows as "unknown".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, get_args

from treadctl.control.machine import State
from treadctl.daemon.bridge import CommandKind
from treadctl.hr.filter import HR_UNRELIABLE, QUALITIES
from treadctl.hr.supervisor import Source
from treadctl.types import Direction

__all__ = [
    "COMMAND_SUFFIXES",
    "DIRECTIONS",
    "ENTITIES",
    "HR_QUALITIES",
    "HR_SOURCES",
    "STATES",
    "Entity",
    "Topic",
    "entities",
]

# Command topics of docs/mqtt.md (relative to <base>/<id>/cmd/). Discovery only ever
# points Home Assistant at a subset of these; "reset" is intentionally not used.
COMMAND_SUFFIXES: Final = frozenset(k.value for k in CommandKind)
# state.state values of docs/mqtt.md, the options of the "State" enum sensor.
STATES: Final = tuple(s.value for s in State)
DIRECTIONS: Final = tuple(d.value for d in Direction)
# Snapshot.hr_source / hr_quality values (docs/mqtt.md, "Heart rate"); null = no source.
HR_SOURCES: Final[tuple[str, ...]] = get_args(Source)
HR_QUALITIES: Final[tuple[str, ...]] = QUALITIES


@dataclass(frozen=True)
class Topic:
    """A contract topic of the treadmill, relative to ``<base>/<id>/``: ``state``,
    ``telemetry`` or ``cmd/<command>`` (discovery puts the full topic in its place)."""

    name: str

    @classmethod
    def command(cls, kind: CommandKind) -> Topic:
        return cls(f"cmd/{kind.value}")


STATE: Final = Topic("state")
TELEMETRY: Final = Topic("telemetry")


@dataclass(frozen=True)
class Entity:
    """One entity: its component, its key (``<id>_<key>`` is its object id) and its
    component-specific config, topics given as :class:`Topic`."""

    component: str  # sensor / binary_sensor / button / select
    key: str
    config: dict[str, Any]


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
    "{{ ('ON' if '" + HR_UNRELIABLE + "' in w else 'OFF') if w is iterable and w is not "
    "string and w is not mapping else None }}"
)

_LATCHED_TEMPLATE: Final = (
    "{% set v = value_json.get('latched') %}"
    "{{ 'ON' if v is sameas true else ('OFF' if v is sameas false else None) }}"
)

# The command template given by the daemon's contract: cmd/start takes
# {"program": NAME}; discovery checks the names so this stays valid JSON.
_START_COMMAND_TEMPLATE: Final = '{"program": "{{ value }}"}'


# --- the table ----------------------------------------------------------------------------


def _enum(
    name: str, topic: Topic, key: str, options: tuple[str, ...], icon: str, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "state_topic": topic,
        "value_template": _choice_template(key, list(options)),
        "device_class": "enum",
        "options": list(options),
        **extra,
        "icon": icon,
    }


def _zone(index: int, name: str, icon: str) -> dict[str, Any]:
    return {
        "name": name,
        "state_topic": STATE,
        "value_template": _zone_template(index),
        "state_class": "measurement",
        "unit_of_measurement": "bpm",
        "icon": icon,
    }


def _button(name: str, kind: CommandKind, payload: dict[str, str], icon: str) -> dict[str, Any]:
    return {
        "name": name,
        "command_topic": Topic.command(kind),
        "payload_press": json.dumps(payload, separators=(",", ":")),
        "qos": 1,
        # A retained command would fire again on every reconnect of the daemon.
        "retain": False,
        "icon": icon,
    }


#: Every entity but the program select, in the order they are published.
ENTITIES: Final[tuple[Entity, ...]] = (
    Entity("sensor", "state", _enum(
        "State", STATE, "state", STATES, "mdi:run",
        # Every field of the state message (reason, session id, ...) as attributes.
        json_attributes_topic=STATE)),
    Entity("sensor", "reason", {
        "name": "Stop reason", "state_topic": STATE,
        "value_template": _text_template("reason"), "icon": "mdi:alert-circle-outline"}),
    Entity("sensor", "current_program", {
        "name": "Current program", "state_topic": STATE,
        "value_template": _text_template("program"), "icon": "mdi:format-list-numbered"}),
    Entity("sensor", "segment", {
        "name": "Segment", "state_topic": STATE,
        "value_template": _number_template("segment", 0), "icon": "mdi:debug-step-over"}),
    Entity("sensor", "session", {
        "name": "Session", "state_topic": STATE,
        "value_template": _text_template("session_id"), "entity_category": "diagnostic",
        "icon": "mdi:identifier"}),
    Entity("sensor", "direction", _enum(
        "Direction", STATE, "direction", DIRECTIONS, "mdi:swap-horizontal")),
    Entity("sensor", "target_speed", {
        "name": "Target speed", "state_topic": STATE,
        "value_template": _number_template("target_speed_kmh", 1), "device_class": "speed",
        "state_class": "measurement", "unit_of_measurement": "km/h",
        "suggested_display_precision": 1}),
    Entity("sensor", "speed", {
        "name": "Speed", "state_topic": TELEMETRY,
        "value_template": _number_template("speed_kmh", 1), "device_class": "speed",
        "state_class": "measurement", "unit_of_measurement": "km/h",
        "suggested_display_precision": 1}),
    Entity("sensor", "incline", {
        "name": "Incline", "state_topic": TELEMETRY,
        "value_template": _number_template("incline_pct", 1), "state_class": "measurement",
        "unit_of_measurement": "%", "suggested_display_precision": 1,
        "icon": "mdi:slope-uphill"}),
    Entity("sensor", "distance", {
        "name": "Distance", "state_topic": TELEMETRY,
        "value_template": _number_template("distance_m", 0), "device_class": "distance",
        # Restarts at 0 with each session; total_increasing reads a drop as a reset.
        "state_class": "total_increasing", "unit_of_measurement": "m",
        "suggested_display_precision": 0}),
    Entity("sensor", "elapsed", {
        "name": "Elapsed", "state_topic": TELEMETRY,
        "value_template": _number_template("elapsed_s", 0), "device_class": "duration",
        "unit_of_measurement": "s", "suggested_display_precision": 0}),
    # The moving heart rate is telemetry's (every reading); the rest of its picture is the
    # retained state's (shown there at once when it changes).
    Entity("sensor", "heart_rate", {
        "name": "Heart rate", "state_topic": TELEMETRY,
        "value_template": _number_template("hr_bpm", 0), "state_class": "measurement",
        "unit_of_measurement": "bpm", "icon": "mdi:heart-pulse"}),
    Entity("sensor", "hr_source", _enum(
        "Heart rate source", STATE, "hr_source", HR_SOURCES, "mdi:heart-cog")),
    Entity("sensor", "hr_quality", _enum(
        "Heart rate quality", STATE, "hr_quality", HR_QUALITIES, "mdi:heart-flash")),
    Entity("sensor", "hr_zone_low", _zone(0, "Heart rate zone low", "mdi:heart-minus")),
    Entity("sensor", "hr_zone_high", _zone(1, "Heart rate zone high", "mdi:heart-plus")),
    Entity("binary_sensor", "hr_unreliable", {
        "name": "Heart rate unreliable", "state_topic": STATE,
        "value_template": _HR_UNRELIABLE_TEMPLATE, "payload_on": "ON", "payload_off": "OFF",
        "device_class": "problem", "icon": "mdi:heart-broken"}),
    Entity("binary_sensor", "latched", {
        "name": "E-stop latched", "state_topic": STATE, "value_template": _LATCHED_TEMPLATE,
        "payload_on": "ON", "payload_off": "OFF", "device_class": "problem",
        "icon": "mdi:alert-octagon"}),
    Entity("button", "stop", _button("Stop", CommandKind.STOP, {}, "mdi:stop")),
    Entity("button", "estop", _button("Emergency stop", CommandKind.ESTOP,
                                      {"reason": "home-assistant"}, "mdi:alert-octagon")),
    Entity("button", "pause", _button("Pause", CommandKind.PAUSE, {}, "mdi:pause")),
    Entity("button", "resume", _button("Resume", CommandKind.RESUME, {}, "mdi:play")),
)  # fmt: skip


def _program_select(programs: list[str]) -> Entity:
    """Starts one of ``programs`` (checked by discovery: they go into its templates)."""
    return Entity("select", "program", {
        "name": "Program",
        "command_topic": Topic.command(CommandKind.START),
        "command_template": _START_COMMAND_TEMPLATE,
        "options": programs,
        "state_topic": STATE,
        "value_template": _choice_template("program", programs),
        "qos": 1,
        "retain": False,
        "icon": "mdi:play-box-multiple",
    })  # fmt: skip


def entities(programs: list[str]) -> list[Entity]:
    """Every entity of one treadmill; the program select only with programs to offer (a
    select needs at least one option; with none there is nothing to start)."""
    return [*ENTITIES, _program_select(programs)] if programs else list(ENTITIES)


#: Every (component, key) discovery can publish, the select included (for removal).
ALL_KEYS: Final = tuple((e.component, e.key) for e in entities(["x"]))
