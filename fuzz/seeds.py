"""Seed inputs for every target: the FTMS test vectors, encoded frames, valid MQTT payloads.

The seeds are generated (not committed) so they follow the code; the committed corpus under
``fuzz/corpus/<target>/`` holds what the fuzzer found on top of them, minimized.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fuzz import protocol_targets as _native
from fuzz import targets as _targets
from fuzz.hr import hr_seeds
from fuzz.targets import FTMS_DECODERS, MQTT_KINDS
from treadctl import ftms
from treadctl.daemon import bridge
from treadctl.transport.framing import Frame, FrameType, encode_frame

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors" / "ftms_vectors.json"
CORPUS = Path(__file__).resolve().parent / "corpus"


def ftms_seeds() -> list[bytes]:
    doc = json.loads(VECTORS.read_text())
    out: list[bytes] = []
    for vec in doc["vectors"]:
        value = bytes.fromhex(vec["hex"])
        char = vec["characteristic"]
        for i, name in enumerate(FTMS_DECODERS):
            if name.split(" ")[0] == char or f"'{char}'" in name:
                out.append(bytes([i]) + value)
    return out


def _frames() -> list[Frame]:
    td = ftms.encode_treadmill_data(ftms.TreadmillData(speed_kmh=5.0, inclination_pct=1.0,
                                                       ramp_angle_deg=0.5,
                                                       total_distance_m=120))
    return [
        Frame(FrameType.NOTIFY, ftms.TREADMILL_DATA, td, 7),
        Frame(FrameType.NOTIFY, ftms.BELT_DIRECTION, b"\x01", 8),
        Frame(FrameType.NOTIFY, ftms.CONTROL_POINT, b"\x80\x00\x01", 9),
        Frame(FrameType.WRITE, ftms.CONTROL_POINT, b"\x02\xf4\x01", 1),
        Frame(FrameType.WRITE, ftms.CONTROL_POINT, b"\x00", 0),
        Frame(FrameType.WRITE_RESPONSE, ftms.CONTROL_POINT, b"\x00", 1),
        Frame(FrameType.READ, ftms.FEATURE, b"", 2),
        Frame(FrameType.READ_RESPONSE, ftms.FEATURE, b"\x00" + bytes(8), 2),
        Frame(FrameType.KEEPALIVE, 0, b"", 3),
        Frame(FrameType.NOTIFY, 0xFFFF, bytes(range(255)), 255),
    ]


def framing_seeds() -> list[bytes]:
    frames = [encode_frame(f) for f in _frames()]
    out = [f + b"\x00" for f in frames]  # one frame, schedule byte 0 (no chunking bytes)
    out.append(b"".join(frames) + b"\x03\x05\x02")  # all of them, chunked 4/6/... bytes
    out.append(b"\x13\x37garbage" + frames[0] + frames[1][:5] + frames[2] + b"\x01")
    flipped = bytearray(frames[0])
    flipped[4] ^= 0x10
    out.append(bytes(flipped) + frames[3] + b"\x00")
    return out


def mqtt_seeds() -> list[bytes]:
    payloads: dict[str, list[object]] = {
        "start": [{"program": "quick-demo", "request_id": "r1"},
                  {"program": {"name": "w", "segments": [
                      {"duration_s": 60, "speed_kmh": 3.0, "direction": "forward"}]}}],
        "stop": [{}, {"request_id": 5}],
        "pause": [{"request_id": "p"}],
        "resume": [{}],
        "set": [{"speed_kmh": 4.0}, {"incline_pct": 1.0, "request_id": "s"},
                {"speed_kmh": 3.5, "incline_pct": 0.5}],
        "estop": [{"reason": "test"}, {}],
        "reset": [{"reason": "cleared by staff", "request_id": "x"}],
        "heartbeat": [{}],
    }
    out: list[bytes] = []
    # Every command of the registry gets seeds, hand-made bodies or not: each field it
    # accepts set to a plausible value, and the empty payload (a new command is fuzzed from
    # its SPECS entry alone).
    for kind in bridge.CommandKind:
        fields = sorted(bridge.SPECS[kind].fields)
        generic = {f: _PLAUSIBLE.get(f, "x") for f in fields}
        k = MQTT_KINDS.index(kind.value)
        for body in [*payloads.get(kind.value, []), generic]:
            out.append(bytes([k]) + json.dumps(body).encode())
        out.append(bytes([k]))  # empty payload
    return out


#: A plausible value per payload field, for the generic seed of every command.
_PLAUSIBLE: dict[str, object] = {
    "request_id": "g1", "program": "quick-demo", "speed_kmh": 3.0, "incline_pct": 0.5,
    "reason": "seed", "by": "staff", "hr_device": "sim-hr://strap",
}


SEEDS = {"ftms": ftms_seeds, "framing": framing_seeds, "mqtt": mqtt_seeds, "lane": mqtt_seeds,
         "hr": hr_seeds}
_native.register(_targets, SEEDS)  # biodex, woodway, bertec, trackmaster (fuzz/protocol_targets.py)


def write_seeds(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for data in seeds:
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(seeds)


def corpus_files(target: str) -> list[Path]:
    d = CORPUS / target
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
