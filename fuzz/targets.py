"""The fuzz targets and their oracles, as plain functions of one ``bytes`` input.

Each target is deterministic in its input (no atheris, no randomness), so any input the
fuzzer found replays byte-for-byte in the test suite. A target returns normally when the
input was handled as documented and raises anything else (an :class:`OracleError` when an
oracle caught a wrong result, or whatever unexpected exception escaped the code under test).

Targets (``TARGETS``):

``ftms``
    byte 0 picks one of the codec's decoders (with its quirk options) or
    ``decode_characteristic`` by name/UUID; the rest is the value. Only ``FTMSDecodeError``
    may escape; a value that decodes must render with ``to_jsonable`` + ``json.dumps`` and
    re-encode to bytes that decode to the same value. The tolerant decoders
    (``strict=False``) are checked against the strict ones instead: a value without
    ``deviations`` is exactly what the strict decoder gives, the speed is the record's first
    field, fields listed as ``missing`` are None.
``framing``
    the input is a byte stream, cut into chunks by a schedule taken from its last bytes.
    ``FrameDecoder.feed`` never raises; chunked and one-shot decoding give the same frames and
    counters; the frames are exactly the valid frames of an independent reference parser
    (each one re-encodes to the zero-delimited run it came from, so it passed CRC and length);
    ``frames + dropped`` equals the number of complete non-empty runs.
``mqtt``
    byte 0 picks the command kind; the payload is either the raw rest or (high bit of byte 0)
    a JSON object built from the rest. ``parse_command`` raises only ``CommandInvalid`` and
    what it returns is well-typed; ``estop_details`` never raises.
``lane``
    the same payloads through the real daemon command path (``Lane.estop_now`` for
    ``cmd/estop``, ``Lane.on_message`` alone for ``cmd/stop``, which it runs at once,
    ``Lane.on_message`` + ``Lane.execute`` for the rest) against a
    controller on the in-process simulator in virtual time: a command answered with an
    ``error`` event (parse error, wrong state, out-of-range value) leaves the controller
    snapshot, the latch and the simulator's ``wire_log`` unchanged; an e-stop always
    latches and is acked once.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import math
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fuzz.hr import fuzz_hr
from treadctl import ftms
from treadctl.daemon import bridge, mqtt
from treadctl.daemon.ratelimit import TokenBucket
from treadctl.transport import framing


class OracleError(AssertionError):
    """An oracle saw a result the documentation rules out."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise OracleError(message)


class Bytes:
    """Consume an input as small integers and byte strings (a tiny FuzzedDataProvider that
    needs no atheris, so structured inputs replay in the tests)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.take(self.left())


# --------------------------------------------------------------------------- ftms

_Decode = Callable[[bytes], object]
_Encode = Callable[[Any], bytes]

def _td(pace: ftms.PaceFormat, signed: bool) -> tuple[_Decode, _Encode]:
    def decode(d: bytes) -> object:
        return ftms.decode_treadmill_data(d, pace_format=pace, signed_speed=signed)

    def encode(v: Any) -> bytes:
        return ftms.encode_treadmill_data(v, pace_format=pace, signed_speed=signed)

    return decode, encode


def _cp(signed: bool) -> tuple[_Decode, _Encode]:
    def decode(d: bytes) -> object:
        return ftms.decode_control_point(d, signed_speed=signed)

    def encode(v: Any) -> bytes:
        return ftms.encode_control_point(v, signed_speed=signed)

    return decode, encode


def _ms(signed: bool) -> tuple[_Decode, _Encode]:
    def decode(d: bytes) -> object:
        return ftms.decode_machine_status(d, signed_speed=signed)

    def encode(v: Any) -> bytes:
        return ftms.encode_machine_status(v, signed_speed=signed)

    return decode, encode


def _by_name(key: str, **quirks: Any) -> _Decode:
    def decode(d: bytes) -> object:
        return ftms.decode_characteristic(key, d, **quirks)

    return decode


_PAIRS: list[tuple[str, _Decode, _Encode | None]] = []
for _pace in ftms.treadmill_data.PACE_FORMATS:
    for _signed in (False, True):
        _PAIRS.append((f"treadmill-data pace={_pace} signed={_signed}", *_td(_pace, _signed)))
for _signed in (False, True):
    _PAIRS.append((f"control-point signed={_signed}", *_cp(_signed)))
    _PAIRS.append((f"machine-status signed={_signed}", *_ms(_signed)))
_PAIRS += [
    ("control-point-response", ftms.decode_control_point_response,
     ftms.encode_control_point_response),
    ("training-status", ftms.decode_training_status, ftms.encode_training_status),
    ("feature", ftms.decode_feature, ftms.encode_feature),
    ("speed-range", ftms.decode_speed_range, ftms.encode_speed_range),
    ("inclination-range", ftms.decode_inclination_range, ftms.encode_inclination_range),
    ("belt-direction", ftms.decode_belt_direction, ftms.encode_belt_direction),
]
# decode_characteristic by tool name and by UUID spelling, with and without quirks.
for _name, _uuid in ftms.CHARACTERISTICS.items():
    for _key in (_name, f"0x{_uuid:04x}", ftms.full_uuid(_uuid)):
        _PAIRS.append((f"decode_characteristic({_key!r})", _by_name(_key), None))
    _PAIRS.append((f"decode_characteristic({_name!r}, quirks)",
                   _by_name(_name, pace_format="uint16-s-per-km", signed_speed=True), None))



_TD_DEVIATIONS = frozenset({"step-count", "short-record"})


def _td_tolerant(pace: ftms.PaceFormat, signed: bool) -> _Decode:
    def decode(d: bytes) -> object:
        td = ftms.decode_treadmill_data(d, pace_format=pace, signed_speed=signed, strict=False)
        _check(set(td.deviations or ()) <= _TD_DEVIATIONS, f"unknown deviations {td.deviations}")
        if not d[0] & 1:
            raw = int.from_bytes(d[2:4], "little", signed=signed)
            _check(td.speed_kmh == raw / 100, f"speed {td.speed_kmh} is not the first field")
        for name in td.missing or ():
            _check(getattr(td, name) is None, f"missing {name} has a value")
        if not td.deviations:
            strict = ftms.decode_treadmill_data(d, pace_format=pace, signed_speed=signed)
            _check(strict == td, f"tolerant {td!r} != strict {strict!r}")
        else:
            try:
                ftms.decode_treadmill_data(d, pace_format=pace, signed_speed=signed)
            except ftms.FTMSDecodeError:
                pass
            else:
                _check(False, f"strict accepts {d.hex()} that used {td.deviations}")
        return td

    return decode


def _ms_tolerant(signed: bool) -> _Decode:
    def decode(d: bytes) -> object:
        status = ftms.decode_machine_status(d, signed_speed=signed, strict=False)
        deviations = getattr(status, "deviations", None)
        try:
            strict = ftms.decode_machine_status(d, signed_speed=signed)
        except ftms.FTMSDecodeError as exc:
            _check(deviations == ("status-trailing-bytes",) and exc.reason == "trailing",
                   f"strict refuses {d.hex()} ({exc}) but tolerant names {deviations}")
        else:
            _check(strict == status and not deviations, f"{status!r} != strict {strict!r}")
        return status

    return decode


# The tolerant decoders last, so the selector bytes of the earlier ones stay as they were
# (modulo the longer list).
for _pace in ftms.treadmill_data.PACE_FORMATS:
    for _signed in (False, True):
        _PAIRS.append((f"treadmill-data tolerant pace={_pace} signed={_signed}",
                       _td_tolerant(_pace, _signed), None))
for _signed in (False, True):
    _PAIRS.append((f"machine-status tolerant signed={_signed}", _ms_tolerant(_signed), None))
for _name in ("treadmill-data", "machine-status"):
    _PAIRS.append((f"decode_characteristic({_name!r}, strict=False)",
                   lambda d, _n=_name: ftms.decode_characteristic(_n, d, strict=False), None))

#: Decoder names in selector order (byte 0 of an ``ftms`` input, modulo this length).
FTMS_DECODERS: tuple[str, ...] = tuple(name for name, _, _ in _PAIRS)


def fuzz_ftms(data: bytes) -> None:
    if not data:
        return
    name, decode, encode = _PAIRS[data[0] % len(_PAIRS)]
    value = data[1:]
    try:
        decoded = decode(value)
    except ftms.FTMSDecodeError as exc:
        _check(bool(str(exc)) and exc.reason is not None, f"{name}: empty FTMSDecodeError")
        return
    json.dumps(ftms.to_jsonable(decoded))
    if encode is not None:
        again = decode(encode(decoded))
        _check(again == decoded, f"{name}: {decoded!r} re-encodes to {again!r}")


# --------------------------------------------------------------------------- framing


def _reference_frame(run: bytes) -> framing.Frame | None:
    """An independent reading of one zero-delimited run (docs/framing.md), or None."""
    if len(run) > framing.MAX_WIRE_LEN:
        return None
    raw = bytearray()
    i = 0
    while i < len(run):
        code = run[i]
        if code == 0 or i + code > len(run):
            return None
        raw += run[i + 1 : i + code]
        i += code
        if code != 0xFF and i < len(run):
            raw.append(0)
    if len(raw) < 7:
        return None
    ftype, seq, uuid, length = struct.unpack_from("<BBHB", raw)
    if len(raw) != 5 + length + 2 or ftype not in {int(t) for t in framing.FrameType}:
        return None
    # binascii's CRC-CCITT with init 0xFFFF is CRC-16/CCITT-FALSE: an independent CRC.
    if int.from_bytes(raw[-2:], "little") != binascii.crc_hqx(bytes(raw[:-2]), 0xFFFF):
        return None
    return framing.Frame(framing.FrameType(ftype), uuid, bytes(raw[5 : 5 + length]), seq)


def _chunks(stream: bytes, schedule: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    k = 0
    while pos < len(stream):
        size = 1 + (schedule[k % len(schedule)] if schedule else len(stream))
        out.append(stream[pos : pos + size])
        pos += size
        k += 1
    return out


def fuzz_framing(data: bytes) -> None:
    # The last byte says how many trailing bytes form the chunking schedule.
    n = data[-1] % 8 if data else 0
    stream, schedule = (data[: -1 - n], data[-1 - n : -1]) if data else (b"", b"")

    chunked = framing.FrameDecoder()
    frames: list[framing.Frame] = []
    for chunk in _chunks(stream, schedule):
        frames += chunked.feed(chunk)
    whole = framing.FrameDecoder()
    frames_whole = whole.feed(stream)

    _check(frames == frames_whole, "chunking changed the frames")
    _check(chunked.counters == whole.counters,
           f"chunking changed the counters: {chunked.counters} vs {whole.counters}")

    runs = stream.split(b"\x00")[:-1]  # the last run is not delimited yet
    complete = [r for r in runs if r]
    expected = [f for f in map(_reference_frame, complete) if f is not None]
    _check(frames == expected, f"decoder frames {frames} != reference {expected}")
    c = whole.counters
    _check(c.frames == len(frames), "counters.frames != frames returned")
    _check(c.frames + c.dropped == len(complete),
           f"frames {c.frames} + dropped {c.dropped} != complete runs {len(complete)}")
    delimited = set(complete)
    for f in frames:
        # Re-encoding gives back exactly the run it was read from: CRC and length held.
        _check(framing.encode_frame(f)[1:-1] in delimited, f"{f} is not a run of the input")
    _check(c.bytes_discarded <= len(stream), "more bytes discarded than fed")


# --------------------------------------------------------------------------- mqtt

#: Command kinds in selector order; the last is not a command (must be refused).
MQTT_KINDS: tuple[str, ...] = (*bridge.COMMANDS, "fly")
MAX_PAYLOAD = 4096
_KEYS = ("program", "request_id", "speed_kmh", "incline_pct", "reason", "colour", "")
_WORDS = ("quick-demo", "reverse-walk-intro", "walk", "", " ", "x" * 201, "/etc/passwd")


def _json_value(b: Bytes, depth: int) -> Any:
    tag = b.u8() % 12
    if tag == 0:
        return None
    if tag == 1:
        return bool(b.u8() & 1)
    if tag == 2:
        return int.from_bytes(b.take(2), "little", signed=True)
    if tag == 3:
        return struct.unpack("<d", b.take(8).ljust(8, b"\0"))[0]
    if tag == 4:
        return (b.u8() - 64) / 10
    if tag == 5:
        return _WORDS[b.u8() % len(_WORDS)]
    if tag == 6:
        return b.take(b.u8() % 24).decode("utf-8", "replace")
    if tag == 7 and depth < 3:
        return [_json_value(b, depth + 1) for _ in range(b.u8() % 4)]
    if tag == 8 and depth < 3:
        return _json_object(b, depth + 1)
    if tag == 9:
        return 10 ** (b.u8() % 40) * (1 if b.u8() & 1 else -1)
    if tag == 10:
        return "x" * (b.u8() * 2)
    return math.inf if b.u8() & 1 else math.nan


def _json_object(b: Bytes, depth: int) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for _ in range(b.u8() % 5):
        k = b.u8()
        key = _KEYS[k % len(_KEYS)] if k < 200 else b.take(k % 8).decode("utf-8", "replace")
        obj[key] = _json_value(b, depth)
    return obj


def mqtt_input(data: bytes) -> tuple[str, bytes]:
    """The (command kind, payload) an ``mqtt``/``lane`` input stands for."""
    if not data:
        return MQTT_KINDS[0], b""
    kind = MQTT_KINDS[(data[0] & 0x7F) % len(MQTT_KINDS)]
    if data[0] & 0x80:
        # Structured: a JSON object (NaN/Infinity allowed: json.dumps writes them).
        return kind, json.dumps(_json_object(Bytes(data[1:]), 0)).encode()
    return kind, data[1:]


def _check_command(kind: str, cmd: bridge.Command) -> None:
    _check(cmd.kind == kind, f"parsed {cmd.kind!r} from cmd/{kind}")
    rid = cmd.request_id
    _check(rid is None or (isinstance(rid, str) and len(rid) <= bridge.MAX_REQUEST_ID_CHARS)
           or (isinstance(rid, int) and not isinstance(rid, bool)), f"bad request_id {rid!r}")
    for value in (cmd.speed_kmh, cmd.incline_pct):
        _check(value is None or (isinstance(value, float) and math.isfinite(value)),
               f"bad number {value!r}")
    if kind == "set":
        _check(cmd.speed_kmh is not None or cmd.incline_pct is not None, "empty set")
    if kind == "start":
        _check(isinstance(cmd.program, str | dict) and cmd.program != "", "bad program")
    if kind == "reset" or cmd.reason is not None:
        r = cmd.reason
        _check(isinstance(r, str) and r == r.strip() and 0 < len(r) <= bridge.MAX_REASON_CHARS,
               f"bad reason {r!r}")


def fuzz_mqtt(data: bytes) -> None:
    kind, payload = mqtt_input(data)
    for k in {kind, "estop"}:
        try:
            cmd = bridge.parse_command(k, payload, MAX_PAYLOAD)
        except bridge.CommandInvalid as exc:
            _check(exc.kind == k and bool(exc.message), "CommandInvalid without kind/message")
            continue
        _check(k in bridge.COMMANDS, f"unknown command {k!r} accepted")
        _check_command(k, cmd)
    reason, rid = bridge.estop_details(payload, MAX_PAYLOAD)
    _check(reason is None or isinstance(reason, str), "estop_details reason")
    _check(rid is None or isinstance(rid, str | int), "estop_details request_id")


# --------------------------------------------------------------------------- lane


class LaneHarness:
    """One daemon lane (``treadctl.daemon.service.Lane``) on the in-process simulator, in
    virtual time, with no broker: replies are recorded instead of published."""

    #: Inputs between two virtual-time steps (sessions start, ramp, stop and end).
    STEP_EVERY = 64

    def __init__(self) -> None:
        from treadctl.clock import WarpEventLoop
        from treadctl.daemon.config import parse_config
        from treadctl.daemon.service import Daemon, Lane

        self.loop = WarpEventLoop()
        asyncio.set_event_loop(self.loop)
        self._tmp = tempfile.TemporaryDirectory(prefix="treadctl-fuzz-")
        config = parse_config({
            "mqtt": {"host": "127.0.0.1", "port": 1883},
            "daemon": {"data_dir": self._tmp.name},
            "treadmill": [{"id": "lane-1", "device": "sim://?seed=1",
                           "profile": "treadctl-reference"}],
        })
        self.daemon = Daemon(config, notify=lambda _state: True)
        self.lane = Lane(self.daemon, config.treadmills[0])
        # The fuzzer sends far faster than any broker would: no token bucket here (the
        # rate limit answers with an error event, which the oracle would accept anyway).
        self.lane.bucket = TokenBucket(1e12)
        self.replies: list[dict[str, Any]] = []
        self.lane.reply = self._record  # type: ignore[method-assign]
        self.loop.run_until_complete(self.lane.open_link())
        self.count = 0
        self._last_estop: bytes | None = None
        self.stats: dict[str, int] = {"errors": 0, "acks": 0, "estops": 0}

    def _record(self, event: dict[str, Any], properties: Any) -> None:
        self.replies.append(event)

    def close(self) -> None:
        self.loop.run_until_complete(self.lane.close_link())
        self.loop.close()
        self._tmp.cleanup()

    def _observe(self) -> tuple[Any, ...]:
        ctrl = self.lane.controller
        assert ctrl is not None
        sim = ctrl.transport.sim  # type: ignore[attr-defined]
        return (ctrl.snapshot, ctrl.latch.latched, len(sim.wire_log), self.lane.machine.trip)

    def feed(self, kind: str, payload: bytes, retain: bool = False) -> None:
        lane = self.lane
        if kind == "estop":
            self.loop.run_until_complete(self._estop(payload))
        elif kind == "stop":
            self.loop.run_until_complete(self._stop(payload, retain))
        else:
            # on_message is synchronous and needs no running loop: the common case (a
            # refused payload) is checked right here, with nothing else running in between.
            msg = mqtt.Message(f"{lane.topics.prefix}/cmd/{kind}", payload, 1, retain, 1, None)
            before = self._observe()
            n = len(self.replies)
            lane.on_message(msg)
            if len(self.replies) > n:
                _check(len(self.replies) == n + 1, "more than one reply")
                _check(self.replies[-1]["type"] == "error", f"early reply {self.replies[-1]}")
                _check(self._observe() == before, f"rejected cmd/{kind} {payload[:80]!r} "
                       "changed the controller or the wire")
                self.stats["errors"] += 1
            else:
                _check(lane.queue.qsize() == 1, "command neither answered nor queued")
                cmd = lane.queue.get_nowait().command
                self.loop.run_until_complete(self._execute(cmd, payload))
        self.count += 1
        if self.count % self.STEP_EVERY == 0:
            self.loop.run_until_complete(asyncio.sleep(1.5))

    async def _stop(self, payload: bytes, retain: bool) -> None:
        # cmd/stop is neither rate limited nor queued: ``on_message`` starts it at once (a
        # task), so it needs the running loop; a refused one is answered right there.
        lane = self.lane
        msg = mqtt.Message(f"{lane.topics.prefix}/cmd/stop", payload, 1, retain, 1, None)
        before = self._observe()
        n = len(self.replies)
        lane.on_message(msg)
        running = lane.stop_task if lane.stop_task and not lane.stop_task.done() else None
        if running is None:
            _check(len(self.replies) == n + 1 and self.replies[-1]["type"] == "error",
                   f"cmd/stop {payload[:80]!r} neither started nor refused once")
            _check(self._observe() == before, f"rejected cmd/stop {payload[:80]!r} changed "
                   "the controller or the wire")
            self.stats["errors"] += 1
            return
        _check(lane.queue.qsize() == 0, "cmd/stop was queued")
        await running
        _check(len(self.replies) == n + 1, "cmd/stop not answered exactly once")
        self.stats["acks" if self.replies[-1]["type"] == "ack" else "errors"] += 1

    async def _estop(self, payload: bytes) -> None:
        # The service's path for cmd/estop (paho's per-topic callback): the latch acts on
        # the topic alone, the ack (deferred) reads the payload afterwards.
        lane = self.lane
        n = len(self.replies)
        lane.estop_now(payload, None)
        ctrl = lane.controller
        _check(ctrl is not None and ctrl.latch.latched, "e-stop did not latch")
        await asyncio.sleep(0)
        if len(self.replies) == n:
            # The daemon acks a repeat of the same e-stop message (the same publish seen via
            # two connections) once; it still stopped again.
            _check(payload == self._last_estop, "e-stop not acked")
            self.stats["estops_deduplicated"] = self.stats.get("estops_deduplicated", 0) + 1
        else:
            _check(len(self.replies) == n + 1 and self.replies[-1]["type"] == "ack",
                   "e-stop not acked exactly once")
        self._last_estop = payload
        self.stats["estops"] += 1

    async def _execute(self, cmd: bridge.Command, payload: bytes) -> None:
        """What ``Lane.run_commands`` does with a queued command, with the oracle around it
        (inside one task step: nothing else runs between the two observations)."""
        from treadctl.control.controller import ControlError
        from treadctl.programs import ProgramError

        lane = self.lane
        kind = cmd.kind
        before = self._observe()
        coro = lane.execute(cmd)
        try:
            coro.send(None)
        except StopIteration:
            self.stats["acks"] += 1
            return
        except (ControlError, ProgramError):
            # What run_commands turns into an error event: must not have changed anything.
            _check(self._observe() == before, f"refused cmd/{kind} {payload[:80]!r} changed "
                   "the controller or the wire")
            self.stats["errors"] += 1
            return
        except Exception as exc:
            finding = known_finding(cmd, exc)
            if finding is None:
                raise
            # run_commands answers these with an "internal error" event: still nothing moved.
            _check(self._observe() == before, f"cmd/{kind} failing with {exc!r} changed "
                   "the controller or the wire")
            self.stats[finding] = self.stats.get(finding, 0) + 1
            return
        coro.close()
        raise OracleError(f"cmd/{kind} awaited in execute (expected a synchronous command)")


def known_finding(cmd: bridge.Command, exc: Exception) -> str | None:
    """Findings of the fuzz run that are reported but not yet fixed; each names itself so the
    run's stats count it. None = a new crash. (The first finding, a long program name raising
    OSError in load_builtin, is fixed: the name is checked before any file is touched.)"""
    return None


_LANE: LaneHarness | None = None


def lane_harness() -> LaneHarness:
    global _LANE
    if _LANE is None:
        _LANE = LaneHarness()
    return _LANE


def fuzz_lane(data: bytes) -> None:
    kind, payload = mqtt_input(data)
    lane_harness().feed(kind, payload)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    #: Maximum input length handed to libFuzzer (-max_len).
    max_len: int


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("ftms", fuzz_ftms, 64),
        Target("framing", fuzz_framing, 320),
        Target("mqtt", fuzz_mqtt, 1024),
        Target("lane", fuzz_lane, 512),
        Target("hr", fuzz_hr, 64),  # fuzz/hr.py
    )
}
