"""Fuzz targets of the native-protocol codecs (treadctl/protocols/): ``biodex``,
``woodway``, ``bertec``, ``trackmaster``. Registered into :data:`fuzz.targets.TARGETS` and
:data:`fuzz.seeds.SEEDS` when :mod:`fuzz.seeds` is imported (inside the worker's coverage
instrumentation, so these modules are instrumented too).

Input: byte 0 picks the direction (bit 0: host->machine or machine->host) and the chunk
size (bits 1-4); the rest is the stream. Oracles: the stream decoder never raises,
whatever the bytes and chunking; every message it returns that the encoder accepts
re-encodes and decodes to itself; the one-message decoder raises only ``ProtocolError``,
and what it accepts either re-encodes to the same bytes or is refused by the encoder
with ``ProtocolError`` (the machine's own answer to such a value is a NACK).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from treadctl.protocols import ProtocolError, bertec, biodex, trackmaster, woodway

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
MODULES: dict[str, ModuleType] = {"biodex": biodex, "woodway": woodway, "bertec": bertec,
                                  "trackmaster": trackmaster}  # fmt: skip


def _codec(mod: ModuleType, host: bool) -> tuple[Any, Any, Callable[[], Any]]:
    if host:
        return mod.encode_command, mod.decode_command, mod.command_decoder
    if mod is bertec:
        return bertec.encode_feedback, bertec.decode_feedback, bertec.feedback_decoder
    return mod.encode_reply, mod.decode_reply, mod.reply_decoder


class OracleFailure(AssertionError):
    pass


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise OracleFailure(message)


def run_protocol(name: str, data: bytes) -> None:
    if not data:
        return
    encode, decode, make = _codec(MODULES[name], host=not data[0] & 1)
    chunk = (data[0] >> 1 & 0x0F) + 1
    stream = data[1:]
    dec = make()
    out: list[Any] = []
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i : i + chunk])  # must never raise
    for msg in out:
        try:
            wire = encode(msg)
        except ProtocolError:
            continue  # decodable, but a value treadctl never sends (the machine NACKs it)
        _check(decode(wire) == msg, f"{name}: {msg!r} does not round-trip")
    try:
        msg = decode(stream)
    except ProtocolError:
        return
    try:
        again = encode(msg)
    except ProtocolError:
        return  # a value the machine would refuse: treadctl never sends it
    _check(again == stream, f"{name}: {stream.hex()} -> {msg!r} -> {again.hex()}")


def _target(name: str) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        run_protocol(name, data)

    run.__name__ = f"fuzz_{name}"
    return run


def _seeds(name: str) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        doc = json.loads((VECTORS / f"{name}_vectors.json").read_text())
        out = []
        for v in [*doc["vectors"], *doc.get("invalid", [])]:
            raw = bytes.fromhex(v["hex"])
            way = 0 if v["way"] == "host" else 1
            out += [bytes([way]) + raw, bytes([way | 0x06]) + b"\x13" + raw + raw]
        return out

    return seeds


#: (name, run, max_len) of each target.
PROTOCOL_TARGETS = [(name, _target(name), 200) for name in MODULES]
SEEDS = {name: _seeds(name) for name in MODULES}


def register(targets: Any, seeds: dict[str, Callable[[], list[bytes]]]) -> None:
    for name, run, max_len in PROTOCOL_TARGETS:
        targets.TARGETS.setdefault(name, targets.Target(name, run, max_len))
    for name, fn in SEEDS.items():
        seeds.setdefault(name, fn)
