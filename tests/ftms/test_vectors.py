"""Decode every payload in tests/vectors/ftms_vectors.json; compare with hand-checked values."""

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


def test_vector_file_is_well_formed() -> None:
    ids = [v["id"] for v in VECTORS]
    assert len(ids) == len(set(ids)), "duplicate vector ids"
    real = [v for v in VECTORS if v["source"] != HAND_MADE]
    assert len(real) >= 10, "keep a useful number of payloads from real devices"
    for v in VECTORS:
        assert v["characteristic"] and bytes.fromhex(v["hex"]) is not None
        assert v["hand_check"], v["id"]
        assert ("expected" in v) != ("expected_error" in v), v["id"]
        if v["source"] != HAND_MADE:
            # Every non-hand-made vector names where it came from.
            assert "url" in v or ("repo" in v and "path" in v), v["id"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    quirks = vector.get("quirks", {})
    if "expected_error" in vector:
        with pytest.raises(FTMSDecodeError) as info:
            decode_characteristic(vector["characteristic"], data, **quirks)
        assert info.value.reason == vector["expected_error"]["reason"]
        assert re.search(vector["expected_error"]["match"], str(info.value))
        return
    value = decode_characteristic(vector["characteristic"], data, **quirks)
    assert to_jsonable(value) == vector["expected"]
