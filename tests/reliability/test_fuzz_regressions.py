"""Replay the committed fuzz corpus (``fuzz/corpus/<target>/``) and the generated seeds
through every fuzz target with the same oracles as ``python -m fuzz``; plus a short
hypothesis pass over random bytes per target.

The oracles (see :mod:`fuzz.targets`): only ``FTMSDecodeError`` escapes the FTMS codec and
decoded values re-encode to themselves; ``FrameDecoder.feed`` never raises and returns
exactly the CRC- and length-valid frames of the stream whatever the chunking, with
consistent counters; only ``CommandInvalid`` escapes ``parse_command`` and
``estop_details`` never raises; a command the daemon lane refuses changes neither the
controller nor the simulator's wire log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import seeds, targets

NAMES = tuple(targets.TARGETS)


def _inputs(name: str) -> list[bytes]:
    return [p.read_bytes() for p in seeds.corpus_files(name)] + seeds.SEEDS[name]()


@pytest.fixture(scope="module")
def lane() -> Iterator[targets.LaneHarness]:
    h = targets.LaneHarness()
    try:
        yield h
    finally:
        h.close()
        asyncio.set_event_loop(None)


def _runner(name: str, lane: targets.LaneHarness | None) -> Callable[[bytes], None]:
    if name == "lane":
        assert lane is not None

        def run(data: bytes) -> None:
            kind, payload = targets.mqtt_input(data)
            lane.feed(kind, payload)

        return run
    return targets.TARGETS[name].run


@pytest.mark.parametrize("name", NAMES)
def test_corpus_replays_clean(name: str, request: pytest.FixtureRequest) -> None:
    h = request.getfixturevalue("lane") if name == "lane" else None
    run = _runner(name, h)
    inputs = _inputs(name)
    assert inputs
    for data in inputs:
        run(data)


def test_corpus_is_committed_and_small() -> None:
    for name in NAMES:
        files = seeds.corpus_files(name)
        assert 0 < len(files) <= 400, (name, len(files))
        assert all(f.stat().st_size <= targets.TARGETS[name].max_len for f in files)


def test_lane_saw_every_outcome(lane: targets.LaneHarness) -> None:
    """The lane replay really exercised refusals, accepted commands and e-stops."""
    for data in _inputs("lane"):
        _runner("lane", lane)(data)
    assert lane.stats["errors"] > 0 and lane.stats["acks"] > 0 and lane.stats["estops"] > 0


def test_oracles_catch_a_wrong_frame() -> None:
    """The framing oracle is not vacuous: a decoder that returns a frame for a corrupted run
    is caught."""
    from treadctl.transport import framing

    good = framing.encode_frame(framing.Frame(framing.FrameType.WRITE, 0x2AD9, b"\x07", 1))
    bad = bytearray(good)
    bad[3] ^= 0x01
    targets.fuzz_framing(bytes(bad) + b"\x00")  # dropped: fine
    original = framing.FrameDecoder._parse

    def lenient(self: framing.FrameDecoder, chunk: bytes) -> framing.Frame | None:
        return original(self, chunk) or framing.Frame(framing.FrameType.WRITE, 0x2AD9, b"\x07")

    framing.FrameDecoder._parse = lenient  # type: ignore[method-assign]
    try:
        with pytest.raises(targets.OracleError):
            targets.fuzz_framing(bytes(bad) + b"\x00")
    finally:
        framing.FrameDecoder._parse = original  # type: ignore[method-assign]


_FAST = settings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ["ftms", "framing", "mqtt"])
@_FAST
@given(data=st.binary(max_size=300))
def test_random_bytes(name: str, data: bytes) -> None:
    targets.TARGETS[name].run(data)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_random_lane_commands(lane: targets.LaneHarness, data: bytes) -> None:
    _runner("lane", lane)(data)
