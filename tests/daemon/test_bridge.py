"""The MQTT contract as pure code: command parsing, payload shapes, the token bucket."""

from __future__ import annotations

import json

import pytest

from treadctl.daemon import bridge
from treadctl.daemon.bridge import CommandInvalid, Topics, parse_command
from treadctl.daemon.ratelimit import TokenBucket

MAX = 16384


def test_topics() -> None:
    t = Topics("treadctl", "lane-1")
    assert t.state == "treadctl/lane-1/state" and t.commands == "treadctl/lane-1/cmd/#"
    assert t.gym_estop == "treadctl/all/cmd/estop"
    assert t.command_of("treadctl/lane-1/cmd/set") == "set"
    assert t.command_of("treadctl/lane-2/cmd/set") is None


def test_valid_commands() -> None:
    c = parse_command("start", b'{"program": "quick-demo", "request_id": "r1"}', MAX)
    assert c.program == "quick-demo" and c.request_id == "r1"
    c = parse_command("start", json.dumps({"program": {"name": "x"}}).encode(), MAX)
    assert c.program == {"name": "x"} and c.request_id is None
    assert parse_command("set", b'{"speed_kmh": 4, "request_id": 7}', MAX).speed_kmh == 4.0
    assert parse_command("stop", b"", MAX).kind == "stop"  # mosquitto_pub -n
    assert parse_command("reset", b'{"reason": " ok "}', MAX).reason == "ok"
    assert parse_command("estop", b"{}", MAX).reason is None


@pytest.mark.parametrize(
    ("kind", "payload", "needle"),
    [
        ("start", b"", "invalid JSON"),
        ("start", b"{}", "program: required"),
        ("start", b'{"program": ""}', "program"),
        ("start", b'{"program": "x", "extra": 1}', "unknown field 'extra'"),
        ("set", b'{"speed_kmh": NaN}', "invalid JSON"),
        ("set", b'{"speed_kmh": 1e999}', "finite"),
        ("set", b'{"speed_kmh": null}', "must be a number"),
        ("reset", b"{}", "reason"),
        ("reset", json.dumps({"reason": "x" * 500}).encode(), "longer"),
        ("stop", b'{"request_id": true}', "request_id"),
        ("stop", b'{"request_id": "' + b"x" * 200 + b'"}', "request_id"),
        ("pause", b"\xff\xfe", "invalid JSON"),
        ("stop", b"x" * (MAX + 1), "too large"),
        ("warp", b"{}", "unknown command"),
    ],
)
def test_invalid_commands(kind: str, payload: bytes, needle: str) -> None:
    with pytest.raises(CommandInvalid) as err:
        parse_command(kind, payload, MAX)
    assert needle in err.value.message


def test_request_id_survives_a_later_error() -> None:
    with pytest.raises(CommandInvalid) as err:
        parse_command("set", b'{"speed_kmh": "x", "request_id": "keep"}', MAX)
    assert err.value.request_id == "keep"


@pytest.mark.parametrize("payload", [b"", b"garbage", b"\x00" * 10, b"x" * 100_000, b"[]",
                                     b'{"reason": 3}', b'{"reason": "fire", "request_id": 1}'])
def test_estop_details_never_raise(payload: bytes) -> None:
    reason, rid = bridge.estop_details(payload, MAX)
    if payload.startswith(b'{"reason": "fire"'):
        assert (reason, rid) == ("fire", 1)


@pytest.mark.parametrize(
    ("payload", "reason", "rid", "warning"),
    [
        (b"", None, None, None),
        (b"{}", None, None, None),
        (json.dumps({"reason": " runner\n fell ", "request_id": "e1"}).encode(), "runner fell",
         "e1", None),
        (b'"runner fell"', "runner fell", None, None),
        (b"runner fell", "runner fell", None, "not JSON"),
        (b'{"reason": 5, "request_id": "e2"}', "5", "e2", "expected a string, got number"),
        (b'{"reason": true, "request_id": 3}', "true", 3, "got boolean"),
        (b'{"reason": ["a"], "request_id": "e3"}', '["a"]', "e3", "got array"),
        (b'{"reason": "x", "request_id": "e4", "who": 1}', "x", "e4", "unknown field 'who'"),
        (b'{"reason": "x", "request_id": [1]}', "x", None, "request_id"),
        (b"[1, 2]", None, None, "JSON array"),
        (b"\xff\xfe garbage {", None, None, "not UTF-8"),
        (b"x" * (MAX + 1), None, None, "too large"),
        (b"[" * 10_000, None, None, "not understood"),
    ],
)
def test_parse_estop_keeps_what_it_can_and_says_what_it_did(
        payload: bytes, reason: str | None, rid: object, warning: str | None) -> None:
    """An e-stop payload never refuses (it has stopped already): the reason is coerced,
    the request id kept, and every deviation named in ``warnings`` for the ack."""
    details = bridge.parse_estop(payload, MAX)
    assert (details.reason, details.request_id) == (reason, rid), details
    if warning is None:
        assert details.warnings == ()
    else:
        assert any(warning in w for w in details.warnings), details


def test_parse_estop_cuts_a_long_reason() -> None:
    details = bridge.parse_estop(json.dumps({"reason": "y" * 500}).encode(), MAX)
    assert details.reason is not None and len(details.reason) == bridge.MAX_REASON_CHARS
    assert any("longer than" in w for w in details.warnings)


def test_events_drop_the_controller_clock() -> None:
    """``t_s`` is the controller's monotonic clock: meaningless to a back-end."""
    ev = json.loads(bridge.event_payload({"type": "segment", "t_s": 812.5, "segment": 2}, "T"))
    assert ev == {"type": "segment", "segment": 2, "request_id": None, "ts": "T"}


def test_payload_shapes() -> None:
    snap = {"state": "running", "latched": False, "reason": None, "program": "p", "segment": 1,
            "direction": "reverse", "target_speed_kmh": 3.0, "speed_kmh": 2.9,
            "incline_pct": 0.0, "session_id": "s", "distance_m": 5.0, "elapsed_s": 3.0,
            "hr_bpm": None, "phase": None}
    st = json.loads(bridge.state_payload(snap, "T"))
    assert list(st) == [*bridge.STATE_FIELDS, "ts"] and st["ts"] == "T"
    tel = json.loads(bridge.telemetry_payload(snap, "T"))
    assert set(tel) == {"ts", *bridge.TELEMETRY_FIELDS}
    ev = json.loads(bridge.event_payload({"type": "segment"}, "T"))
    assert ev == {"type": "segment", "request_id": None, "ts": "T"}
    assert bridge.iso_utc().endswith("Z")


def test_token_bucket() -> None:
    b = TokenBucket(2.0, burst=2)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert not b.take(0.4) and b.take(0.5)


def test_estop_copies_pair_the_copies_from_two_connections() -> None:
    from treadctl.daemon.service import EstopCopies

    t = EstopCopies()
    assert not t.is_second_copy(b"", "estop", 0.0)
    assert t.is_second_copy(b"", "lane", 0.01)  # its copy via the lane connection: not acked again
    assert not t.is_second_copy(b"", "estop", 0.2)  # a new e-stop with the same payload: acked
    assert not t.is_second_copy(b"", "estop", 0.3)  # and another one
    assert t.is_second_copy(b"", "lane", 0.31) and t.is_second_copy(b"", "lane", 0.32)
    assert not t.is_second_copy(b"x", "lane", 0.33)  # another payload
    assert not t.is_second_copy(b"", "lane", 5.0)  # long after: a new e-stop


def test_a_disconnected_state_does_not_claim_a_speed() -> None:
    """With the link down the belt's speed is unknown: ``speed_kmh`` is null, not 0 (the
    field is still there, docs/mqtt.md)."""
    import json as _json

    from treadctl.daemon.bridge import disconnected_state

    state = _json.loads(disconnected_state("link lost"))
    assert "speed_kmh" in state and state["speed_kmh"] is None, state
    assert state["state"] == "disconnected"
