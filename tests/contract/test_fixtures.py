"""The committed contract fixtures are what the Python side produces today.

The JS side (js/tests/contract.test.js) decodes the same files; together the two tests pin
the wire formats and the style rules on both sides. After an intended change run
``PYTHONPATH=$PWD python tests/contract/generate.py`` and commit the fixtures.
"""

from __future__ import annotations

import base64
import json

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
        c = m["content"]
        for buf, want in zip(m["buffers"], m["decoded"]["buffers"]):
            arr = np.frombuffer(_bytes(buf), dtype=np.dtype(c["dtype"]).newbyteorder("<")).reshape(c["shape"])
            assert want["shape"] == list(arr.shape) and want["dtype"] == c["dtype"]
            np.testing.assert_array_equal(arr.astype(np.float64).ravel(), want["values"])
            checked += 1
    assert checked >= 4


def test_every_reply_carries_its_request_id(built):
    for m in built["messages.json"]["messages"]:
        want = m["request"]["id"] if m["request"] else None
        assert m["content"]["id"] == want, m["name"]


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
