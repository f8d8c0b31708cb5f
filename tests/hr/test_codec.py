"""The Heart Rate Measurement codec (treadctl/hr/codec.py): captured and hand-made vectors
(tests/vectors/hr_vectors.json), round trips and never-raises properties, the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadctl.cli import main
from treadctl.hr.codec import (
    HeartRateCodecError,
    HeartRateMeasurement,
    decode_heart_rate_measurement,
    encode_heart_rate_measurement,
)

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "hr_vectors.json").read_text()
)["vectors"]


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector(vec: dict) -> None:
    data = bytes.fromhex(vec["hex"])
    assert vec["source"]
    if vec.get("capture"):
        assert "http" in vec["source"] or "github" in vec["source"], "a capture cites its source"
    else:
        assert vec["source"] == "hand-made from the spec"
    if "expected_error" in vec:
        with pytest.raises(HeartRateCodecError, match=vec["expected_error"]):
            decode_heart_rate_measurement(data)
        return
    m = decode_heart_rate_measurement(data)
    got = m.to_jsonable()
    for key, value in vec["expected"].items():
        assert got[key] == value, key
    assert encode_heart_rate_measurement(m) == data


def test_captures_are_present() -> None:
    assert sum(1 for v in VECTORS if v.get("capture")) >= 5


def test_rr_seconds_and_contact() -> None:
    m = decode_heart_rate_measurement(bytes.fromhex("164d1603"))
    assert m.rr_intervals_s == (790 / 1024,)
    assert m.in_contact is True
    assert decode_heart_rate_measurement(b"\x04\x00").in_contact is False
    assert decode_heart_rate_measurement(b"\x00\x48").in_contact is None


measurements = st.builds(
    HeartRateMeasurement,
    bpm=st.integers(0, 255),
    uint16=st.booleans(),
    contact_supported=st.booleans(),
    contact_detected=st.booleans(),
    energy_expended_kj=st.none() | st.integers(0, 0xFFFF),
    rr_intervals=st.lists(st.integers(0, 0xFFFF), max_size=9).map(tuple),
    rr_present=st.booleans(),
    reserved_flags=st.sampled_from([0, 0x20, 0x40, 0x80, 0xE0]),
).map(lambda m: m if not m.rr_intervals else HeartRateMeasurement(**{**m.__dict__,
                                                                      "rr_present": True}))


@given(measurements)
def test_encode_decode_round_trip(m: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(encode_heart_rate_measurement(m)) == m


@given(st.binary(max_size=40))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        m = decode_heart_rate_measurement(data)
    except HeartRateCodecError:
        return
    # Whatever decodes re-encodes to the very same bytes and renders as JSON.
    assert encode_heart_rate_measurement(m) == data
    json.dumps(m.to_jsonable())


@pytest.mark.parametrize(
    "m, match",
    [
        (HeartRateMeasurement(bpm=256), "uint8"),
        (HeartRateMeasurement(bpm=-1, uint16=True), "uint16"),
        (HeartRateMeasurement(bpm=70, energy_expended_kj=70000), "energy"),
        (HeartRateMeasurement(bpm=70, rr_intervals=(1, 65536)), "RR"),
    ],
)
def test_encode_refuses_what_does_not_fit(m: HeartRateMeasurement, match: str) -> None:
    with pytest.raises(HeartRateCodecError, match=match):
        encode_heart_rate_measurement(m)


def test_cli_decode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hr", "decode", "(0x) 16-4E-1B-03-12-03"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["heart_rate_bpm"] == 78 and out["rr_intervals"] == [795, 786]
    assert out["sensor_contact"] == "detected"


def test_cli_bad_value_is_a_one_line_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "treadctl", "hr", "decode", "164d16"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"treadctl: error: cannot decode 164d16: .*\n", proc.stderr)
