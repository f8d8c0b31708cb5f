"""Property tests: every encodable message round-trips; the stream decoders never raise
anything, whatever the bytes and however they are cut, and find valid messages after garbage."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from treadctl.protocols import ProtocolError, bertec, biodex, trackmaster, woodway

int16 = st.integers(-32768, 32767)

biodex_host = st.one_of(
    st.sampled_from([biodex.Command(c) for c in (biodex.Code.START, biodex.Code.STOP,
                     biodex.Code.FIRMWARE_VERSION, biodex.Code.WHO_ARE_YOU)]),
    st.builds(biodex.SetValue, st.just(biodex.Code.SET_SPEED), st.integers(0, 999)),
    st.builds(biodex.SetValue, st.just(biodex.Code.SET_ELEVATION), st.integers(0, 99)),
    st.builds(biodex.SetValue, st.just(biodex.Code.SET_TIME), st.integers(0, 9999)),
    st.builds(biodex.SetDirection, st.booleans()),
    st.builds(biodex.Read, st.sampled_from(list(biodex.Request))),
)
biodex_device = st.one_of(
    st.builds(biodex.Ack, st.sampled_from([c for c in biodex.Code if c < 0x90])),
    st.just(biodex.Nack()),
    st.builds(biodex.Identity, st.sampled_from(sorted(biodex.IDENTITIES))),
    st.builds(biodex.FirmwareVersion, st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                              max_size=32)),
    st.builds(biodex.Value, st.just(biodex.Request.SPEED), st.integers(0, 999)),
    st.builds(biodex.Value, st.just(biodex.Request.DISTANCE), st.integers(0, 9999)),
    st.builds(biodex.Direction, st.booleans()),
    st.builds(biodex.Status, st.integers(0, 127), st.integers(0, 255), st.integers(0, 255)),
)
woodway_host = st.one_of(
    st.builds(woodway.Command, st.sampled_from(sorted(woodway._SIMPLE))),
    st.builds(woodway.SetSpeed, st.integers(0, 299), st.booleans()),
    st.builds(woodway.SetElevation, st.integers(0, 9999)),
)
woodway_device = st.one_of(
    st.builds(woodway.Ack, st.sampled_from(woodway._ACKED)),
    st.builds(woodway.Fault, st.sampled_from(list(woodway.Error))),
    st.builds(woodway.State, st.integers(0, 255)),
    st.builds(woodway.Speed, st.integers(0, 299), st.booleans()),
    st.builds(woodway.Elevation, st.integers(0, 9999)),
    st.builds(woodway.Firmware, st.integers(0, 2**32 - 1)),
)
tm_host = st.one_of(
    st.builds(trackmaster.Command, st.sampled_from([c for c in trackmaster.Code
                                                    if c not in trackmaster._PARAM_DIGITS])),
    st.builds(trackmaster.SetValue, st.just(trackmaster.Code.SET_SPEED), st.integers(0, 9999)),
    st.builds(trackmaster.SetValue, st.just(trackmaster.Code.SET_ELEVATION),
              st.integers(0, 1999).map(lambda n: n * 5)),
    st.builds(trackmaster.SetValue, st.just(trackmaster.Code.SET_STAGE), st.integers(0, 99)),
    st.builds(trackmaster.Request, st.sampled_from(list(trackmaster.Status))),
)
tm_device = st.one_of(
    st.builds(trackmaster.Ack, st.sampled_from(list(trackmaster.Code))),
    st.builds(trackmaster.Refused, st.booleans()),
    st.builds(trackmaster.BeltStatus, st.sampled_from([0x31, 0x32, 0x33])),
    st.builds(trackmaster.Value, st.just(trackmaster.Status.ACTUAL_SPEED), st.integers(0, 9999)),
    st.builds(trackmaster.Value, st.just(trackmaster.Status.STAGE), st.integers(0, 99)),
)
bertec_cmd = st.builds(bertec.Command, int16, int16, st.integers(0, 32767), st.integers(0, 32767),
                       st.integers(0, 32767), int16, int16, st.integers(0, 32767),
                       st.integers(0, 32767))
bertec_fb = st.builds(bertec.Feedback, int16, int16, int16, int16, int16, st.just(0))

CODECS: list[tuple[Any, Any, Any, Any]] = [
    (biodex_host, biodex.encode_command, biodex.decode_command, biodex.command_decoder),
    (biodex_device, biodex.encode_reply, biodex.decode_reply, biodex.reply_decoder),
    (woodway_host, woodway.encode_command, woodway.decode_command, woodway.command_decoder),
    (woodway_device, woodway.encode_reply, woodway.decode_reply, woodway.reply_decoder),
    (tm_host, trackmaster.encode_command, trackmaster.decode_command,
     trackmaster.command_decoder),
    (tm_device, trackmaster.encode_reply, trackmaster.decode_reply, trackmaster.reply_decoder),
    (bertec_cmd, bertec.encode_command, bertec.decode_command, bertec.command_decoder),
    (bertec_fb, bertec.encode_feedback, bertec.decode_feedback, bertec.feedback_decoder),
]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_round_trip(data: st.DataObject) -> None:
    for strategy, encode, decode, _ in CODECS:
        msg = data.draw(strategy)
        assert decode(encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(st.data(), st.binary(max_size=200), st.lists(st.integers(1, 40), max_size=10))
def test_stream_decoder_never_raises_and_finds_messages_after_garbage(
    data: st.DataObject, garbage: bytes, cuts: list[int]
) -> None:
    for strategy, encode, decode, make in CODECS:
        msgs = data.draw(st.lists(strategy, min_size=1, max_size=5))
        wire = b"".join(encode(m) for m in msgs)
        dec = make()
        stream = garbage + wire
        got: list[Any] = []
        i = 0
        for n in cuts:
            got += dec.feed(stream[i : i + n])
            i += n
        got += dec.feed(stream[i:])
        for m in got:  # whatever came out is a message (maybe one treadctl never sends)
            with contextlib.suppress(ProtocolError):
                assert decode(encode(m)) == m
        # Garbage may swallow the start, never the end: the last message always arrives
        # once a fresh decoder is fed the wire alone.
        assert make().feed(wire) == msgs


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=128))
def test_single_decoders_raise_only_protocol_error(data: bytes) -> None:
    for _, _, decode, _ in CODECS:
        with contextlib.suppress(ProtocolError):  # anything else fails the test
            decode(data)
