"""Decode every payload in tests/vectors/ftms_vectors.json; compare with hand-checked values.

Each vector is decoded twice: by the strict FTMS 1.0 decoder (the default) and by the
tolerant one (``strict=False``, what the controller reads). ``expected`` is what both give;
``expected_error`` is the strict decoder's error, and ``expected_tolerant`` (when present)
the tolerant reading of a payload that deviates from FTMS 1.0.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from treadctl.ftms import FTMSDecodeError, decode_characteristic, to_jsonable

VECTORS_FILE = Path(__file__).resolve().parent.parent / "vectors" / "ftms_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))["vectors"]
HAND_MADE = "hand-made from the spec"
DEVIATION_KINDS = {"step-count", "short-record", "status-trailing-bytes"}


def test_vector_file_is_well_formed() -> None:
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "duplicate vector ids"
    real = [v for v in VECTORS if v["source"] != HAND_MADE]
    assert len(real) >= 10, "keep a useful number of payloads from real devices"
    for v in VECTORS:
        assert v["characteristic"] and bytes.fromhex(v["hex"]) is not None
        assert v["hand_check"], v["id"]
        assert isinstance(v["capture"], bool), v["id"]
        assert ("expected" in v) != ("expected_error" in v), v["id"]
        assert "expected_tolerant" not in v or "expected_error" in v, v["id"]
        if v["source"] == HAND_MADE:
            assert not v["capture"], v["id"]
        else:
            # Every vector that is not hand-made names where it came from, inside the
            # public record (a URL or a repository path), never a file outside this tree.
            assert "url" in v or ("repo" in v and "path" in v and "commit" in v), v["id"]
            assert v.get("url", "https://").startswith("https://"), v["id"]


def test_real_captures_cover_the_deviations() -> None:
    """Captured payloads (not fixtures, not hand-made) for the deviations they exist for."""
    seen = {
        d
        for v in VECTORS
        if v["capture"]
        for d in v.get("expected_tolerant", {}).get("deviations", [])
    }
    assert {"step-count", "status-trailing-bytes"} <= seen


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    quirks = vector.get("quirks", {})
    char = vector["characteristic"]
    if "expected" in vector:
        for strict in (True, False):
            value = decode_characteristic(char, data, strict=strict, **quirks)
            assert to_jsonable(value) == vector["expected"], f"strict={strict}"
        return
    with pytest.raises(FTMSDecodeError) as info:
        decode_characteristic(char, data, **quirks)
    assert info.value.reason == vector["expected_error"]["reason"]
    assert re.search(vector["expected_error"]["match"], str(info.value))
    if "expected_tolerant" not in vector:
        with pytest.raises(FTMSDecodeError):
            decode_characteristic(char, data, strict=False, **quirks)
        return
    value = decode_characteristic(char, data, strict=False, **quirks)
    got = to_jsonable(value)
    assert got == vector["expected_tolerant"]
    assert set(got["deviations"]) <= DEVIATION_KINDS
    # The instantaneous speed is the first field: the tolerant reading never moves it.
    if char == "treadmill-data" and not data[0] & 1:
        assert got["speed_kmh"] == int.from_bytes(data[2:4], "little") / 100
