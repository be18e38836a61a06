"""The panels' SVG button: the ``get_svg`` request answered with the widget's ``to_svg()``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets import figures as F
from attn_widgets import _wire

from .test_state import Sent, custom, make_trace

SVG = "{http://www.w3.org/2000/svg}"


def _panels(trace):
    return {
        "matrix": aw.AttentionMatrix(trace, layer=1, head=2),
        "heatmap": aw.AttentionHeatmap(trace, layer=1, head=0, token=2),
        "flow": aw.AttentionFlow(trace, method="rollout", keep=0.9, token=3),
    }


def _ask_svg(w, req_id="svg-1"):
    sent = Sent(w)
    custom(w, {"type": "get_svg", "id": req_id})
    assert len(sent.messages) == 1
    return sent.last


@pytest.mark.parametrize("kind", ["matrix", "heatmap", "flow"])
def test_get_svg_replies_with_the_panels_svg(kind):
    trace = make_trace(3, 4, 6, seed=2)
    w = _panels(trace)[kind]
    reply, buffers = _ask_svg(w)
    assert reply["type"] == "svg" and reply["id"] == "svg-1"
    assert len(buffers) == 1 and reply["bytes"] == len(buffers[0])
    text = bytes(buffers[0]).decode("utf-8")
    assert text == w.to_svg()  # the same figure as save_svg(), for the current selection
    root = ET.fromstring(text)
    assert root.tag == SVG + "svg"
    labels = {e.text for e in root.iter(SVG + "text")}
    if kind == "matrix":
        assert {f"L{l}" for l in range(3)} <= labels
    else:
        assert {F.printable(t) for t in trace.tokens} <= labels


def test_get_svg_follows_the_selection(minilm_trace):
    w = aw.AttentionHeatmap(minilm_trace, layer=0, head=0)
    first = bytes(_ask_svg(w)[1][0])
    w.select(layer=3, head="mean", token=4)
    second = bytes(_ask_svg(w, "svg-2")[1][0])
    assert first != second
    assert second.decode() == w.to_svg()


def test_get_svg_over_the_cap_is_an_error_not_a_crash(monkeypatch):
    w = aw.AttentionHeatmap(make_trace())
    monkeypatch.setattr(_wire, "MAX_MESSAGE_BYTES", 100)
    reply, buffers = _ask_svg(w, 7)
    assert reply["type"] == "error" and reply["id"] == 7 and buffers == []
    assert "message cap" in reply["message"] and "save_svg" in reply["message"]


def test_get_svg_failure_is_reported_on_the_request(monkeypatch):
    w = aw.AttentionMatrix(make_trace())

    def broken(**_kw):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(w, "to_svg", broken)
    reply, _ = _ask_svg(w, "r9")
    assert reply == {"type": "error", "id": "r9", "message": "RuntimeError: no figure today"}


def test_every_panel_answers_get_svg():
    tr = make_trace(2, 3, 4)
    for w in _panels(tr).values():
        assert "get_svg" in w._handlers
    # A compare flow (two graphs) too.
    other = aw.AttentionTrace.from_tensors(np.asarray(tr.attentions)[:, ::-1].copy(), list(tr.tokens))
    f = aw.AttentionFlow(tr, compare=other, method="attention", keep=1.0)
    reply, buffers = _ask_svg(f)
    assert reply["type"] == "svg"
    ET.fromstring(bytes(buffers[0]))
