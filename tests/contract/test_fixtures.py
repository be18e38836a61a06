"""The committed contract fixtures are what the Python side produces today.

The JS side (js/tests/contract.test.js) decodes the same files; together the two tests pin
the wire formats and the style rules on both sides. After an intended change run
``PYTHONPATH=$PWD python tests/contract/generate.py`` and commit the fixtures.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from . import generate


@pytest.fixture(scope="module")
def built():
    return generate.build()


@pytest.mark.parametrize("name", ["messages.json", "style_cases.json"])
def test_regenerating_gives_the_committed_fixtures(built, name):
    committed = (generate.FIXTURES / name).read_text(encoding="utf-8")
    assert generate.dumps(built[name]) == committed, (
        f"{name} is stale: run `PYTHONPATH=$PWD python tests/contract/generate.py` and commit it"
    )


def _bytes(b64: dict) -> bytes:
    return base64.b64decode(b64["$b64"])


def test_message_buffers_decode_to_the_recorded_values(built):
    """The fixtures are self-consistent: dtype/shape + little-endian bytes give the values."""
    checked = 0
    for m in built["messages.json"]["messages"]:
        if "decoded" not in m:
            continue
        assert len(m["buffers"]) == len(m["decoded"]["buffers"]), m["name"]
        for k, (buf, want) in enumerate(zip(m["buffers"], m["decoded"]["buffers"])):
            # Single-array replies name dtype/shape in the JSON; the thumbs messages fix them.
            if k == 0 and "dtype" in m["content"]:
                assert (m["content"]["dtype"], m["content"]["shape"]) == (want["dtype"], want["shape"])
            arr = np.frombuffer(_bytes(buf), dtype=np.dtype(want["dtype"]).newbyteorder("<"))
            np.testing.assert_array_equal(arr.astype(np.float64), want["values"])
            assert arr.size == int(np.prod(want["shape"]))
            checked += 1
    assert checked >= 4


def test_every_reply_carries_its_request_id(built):
    for m in built["messages.json"]["messages"]:
        want = m["request"].get("id") if m["request"] else None  # notices (map_ack) have none
        assert m["content"].get("id") == want, m["name"]


def test_style_cases_follow_the_spec(built):
    from attn_widgets.render.style import STYLE

    cases = built["style_cases.json"]
    light = cases["luts"]["light"]
    assert light["stops"][1:] == STYLE["colormap"]["light_stops"]
    lut = np.array(light["lut_rgb"]).reshape(256, 3)
    assert lut[0].tolist() == STYLE["themes"]["light"]["background"]
    assert lut[255].tolist() == STYLE["colormap"]["light_stops"][-1]
    assert cases["luts"]["dark"]["stops"][1:] == STYLE["colormap"]["dark_stops"]
    assert [s["alpha"] for s in cases["bucket_style"][:8]] == sorted(s["alpha"] for s in cases["bucket_style"][:8])
