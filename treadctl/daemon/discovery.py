"""Home Assistant MQTT discovery for treadctl treadmills.

This module owns the discovery messages only: pure functions from a treadmill id and its
program names to ``(topic, JSON payload)`` pairs. What each entity reads or sends is the
table in :mod:`treadctl.daemon.ha_entities`; here it becomes one retained config message
per entity (topic, unique id, device, origin, availability), after checking what it is
given. The MQTT bridge publishes them (QoS :data:`DISCOVERY_QOS`, retained), publishes them
again when Home Assistant announces itself on :func:`birth_topic`, and publishes
:func:`removal_messages` (empty retained payloads) for a treadmill that leaves the config.

One Home Assistant *device* per treadmill. Availability follows ``<base>/<id>/status``
(``online`` / ``offline``, the daemon's Last Will), so every entity shows "unavailable"
when the daemon is gone.

There is deliberately **no reset button**. A latch is cleared by a deliberate act
of staff who can see the machine (or by the gym back-end, which owns that
procedure), never by a tap on a dashboard that may be in another room: EN 957-6
says a stop device never resets automatically and IEC 60204-1 that a reset must
not be able to restart the machine, and a one-tap reset next to a one-tap
program start would make both of those easy to defeat from afar.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

from treadctl import __version__
from treadctl.daemon.ha_entities import (
    ALL_KEYS,
    COMMAND_SUFFIXES,
    HR_QUALITIES,
    HR_SOURCES,
    STATES,
    Topic,
    entities,
)

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

# Home Assistant's discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config,
# node_id and object_id limited to this alphabet.
_TOPIC_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
# Program names go verbatim into the select's command template and a Jinja list
# literal; these characters would need escaping there, so they are refused.
_BAD_PROGRAM_CHARS_RE: Final = re.compile(r'["\\{}%\x00-\x1f\x7f]')


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


# --- messages -----------------------------------------------------------------------------


def _resolved(config: dict[str, Any], root: str) -> dict[str, Any]:
    """An entity's config with its contract topics in full (``<base>/<id>/...``)."""
    return {k: f"{root}/{v.name}" if isinstance(v, Topic) else v for k, v in config.items()}


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
    for entity in entities(offered):
        object_id = f"{safe_id}_{entity.key}"
        payload = {
            **_resolved(entity.config, root),
            "unique_id": f"{node_id}_{object_id}",
            "availability": availability,
            "device": device,
            "origin": origin,
        }
        messages.append(
            (
                _discovery_topic(prefix, entity.component, node_id, object_id),
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
        for component, key in ALL_KEYS
    ]
