"""Every byte vector built from the manuals' tables (tests/vectors/<protocol>_vectors.json,
constructed from the documented format, not captures) decodes to its message and the
message encodes back to the same bytes; the invalid ones are refused with ProtocolError."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from treadctl.protocols import ProtocolError, bertec, biodex, trackmaster, woodway

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
MODULES: dict[str, ModuleType] = {
    "biodex": biodex, "woodway": woodway, "trackmaster": trackmaster, "bertec": bertec,
}  # fmt: skip


def _doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / f"{name}_vectors.json").read_text())
    return doc


def _codec(mod: ModuleType, way: str) -> tuple[Any, Any]:
    if way == "host":
        return mod.encode_command, mod.decode_command
    if mod is bertec:
        return bertec.encode_feedback, bertec.decode_feedback
    return mod.encode_reply, mod.decode_reply


def _cases(key: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, v) for name in MODULES for v in _doc(name)[key]]


@pytest.mark.parametrize("name", MODULES)
def test_every_file_names_its_source_and_says_constructed(name: str) -> None:
    doc = _doc(name)
    assert doc["protocol"] == name
    assert "constructed from the documented format" in doc["provenance"]
    assert doc["source"]
    assert all(v["source"] for v in doc["vectors"])


def _id(key: str) -> Any:
    return lambda x: x if isinstance(x, str) else x[key]


@pytest.mark.parametrize(("name", "vec"), _cases("vectors"), ids=_id("name"))
def test_vector_round_trip(name: str, vec: dict[str, Any]) -> None:
    mod = MODULES[name]
    encode, decode = _codec(mod, vec["way"])
    data = bytes.fromhex(vec["hex"])
    expected = getattr(mod, vec["type"])(**vec["fields"])
    assert decode(data) == expected
    assert encode(expected) == data


@pytest.mark.parametrize(("name", "vec"), _cases("invalid"), ids=_id("why"))
def test_invalid_bytes_are_refused(name: str, vec: dict[str, Any]) -> None:
    _, decode = _codec(MODULES[name], vec["way"])
    with pytest.raises(ProtocolError):
        decode(bytes.fromhex(vec["hex"]))


def test_trackmaster_encoder_refuses_what_the_machine_would_answer_be() -> None:
    for vec in _doc("trackmaster")["refused_by_encoder"]:
        with pytest.raises(ProtocolError):
            trackmaster.encode_command(getattr(trackmaster, vec["type"])(**vec["fields"]))


@pytest.mark.parametrize(
    "msg",
    [
        woodway.SetSpeed(300),  # above pyWoodway's 29.9 mph: refused, never clamped
        woodway.SetSpeed(-5),
        woodway.SetElevation(10000),
        biodex.SetValue(biodex.Code.SET_SPEED, 1000),
        biodex.SetValue(biodex.Code.SET_ELEVATION, 100),
        trackmaster.SetValue(trackmaster.Code.SET_SPEED, 10000),
    ],
)
def test_out_of_range_values_are_refused_before_encoding(msg: Any) -> None:
    mod = {woodway.SetSpeed: woodway, woodway.SetElevation: woodway}.get(type(msg))
    mod = mod or (biodex if isinstance(msg, biodex.SetValue) else trackmaster)
    with pytest.raises(ProtocolError):
        mod.encode_command(msg)


def test_bertec_refuses_out_of_int16_and_negative_accel() -> None:
    for cmd in (bertec.Command(40000, 0, 500, 500), bertec.Command(100, 100, -1, 500),
                bertec.Command(100, 100, 500, 500, incline=-10)):
        with pytest.raises(ProtocolError):
            bertec.encode_command(cmd)


def test_woodway_zero_speed_is_forward_not_reverse() -> None:
    # pyWoodway encodes 0.0 as reverse ('3'); here the direction is explicit.
    assert woodway.encode_command(woodway.SetSpeed(0)) == bytes.fromhex("a3 30 30 30 30")


def test_biodex_status_flags() -> None:
    s = biodex.decode_reply(bytes.fromhex("a7 00 40 00"))
    assert isinstance(s, biodex.Status) and s.lanyard_pulled and not s.hardware_fault
    s = biodex.decode_reply(bytes.fromhex("a7 20 00 00"))
    assert isinstance(s, biodex.Status) and s.hardware_fault
    s = biodex.decode_reply(bytes.fromhex("a7 00 80 00"))
    assert isinstance(s, biodex.Status) and s.comm_fault
    s = biodex.decode_reply(bytes.fromhex("a7 10 00 00"))  # one UART error: not a danger
    assert isinstance(s, biodex.Status) and not (s.comm_fault or s.hardware_fault)


def test_stream_decoders_resync_after_garbage() -> None:
    dec = biodex.reply_decoder()
    out = dec.feed(bytes.fromhex("13 37 84 a0 30 3a a0 30 32 35"))
    assert out == [biodex.Ack(biodex.Code.SET_DIRECTION), biodex.Value(biodex.Request.SPEED, 25)]
    assert dec.garbage_bytes == 5
    tm = trackmaster.reply_decoder()
    assert tm.feed(b"\x00\xd0") == [] and tm.feed(b"\x32\xb3") == [
        trackmaster.BeltStatus(0x32), trackmaster.Ack(trackmaster.Code.SET_SPEED)]
    bt = bertec.feedback_decoder()
    frame = bertec.encode_feedback(bertec.Feedback(700, 700))
    assert bt.feed(b"\x01\x02" + frame[:10]) == [] and bt.feed(frame[10:] + frame) == [
        bertec.Feedback(700, 700), bertec.Feedback(700, 700)]
