"""MethodAgreement (kernel side): the table it syncs is flows.method_agreement's, for the
selected token, linked to the Explorer's selection; pair / methods validation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets.flows import method_agreement
from attn_widgets.widgets import agreement as agreement_mod

from .test_state import update

SENTENCE = "The cat sat on the mat because it was warm."


@pytest.fixture(scope="module")
def ctrace(minilm):
    model, tok = minilm
    return aw.trace(model, tok, SENTENCE, contributions=True)


def table_matrix(w):
    return np.array([[np.nan if x is None else x for x in row] for row in w.table["matrix"]])


def test_table_is_method_agreement_for_the_token(ctrace):
    w = aw.MethodAgreement(ctrace)
    assert w.methods == list(aw.flows.paths.METHODS) and w.status == "ready"
    assert w.table["token"] == 0  # no token selected: [CLS] of an encoder
    w.token = 4
    ref = method_agreement(ctrace, 4)
    assert w.table["token"] == 4 and w.table["methods"] == list(ref.methods)
    np.testing.assert_allclose(table_matrix(w), ref.matrix, atol=1e-6)
    np.testing.assert_allclose(np.array(w.table["scores"]), ref.scores, atol=1e-6)
    update(w, {"pair": ["attention", "alti"]})  # the view's cell click
    assert w.pair == ["attention", "alti"]


def test_validation(ctrace, minilm_trace):
    w = aw.MethodAgreement(ctrace, methods=["alti", "attention"], token=2)
    assert w.table["methods"] == ["alti", "attention"]
    assert aw.MethodAgreement(ctrace, pair=["attention", "alti"]).pair == ["attention", "alti"]
    with pytest.raises(traitlets.TraitError, match="pair: expected"):
        w.pair = ["alti", "flow"]
    with pytest.raises(traitlets.TraitError, match="contributions=True"):
        aw.MethodAgreement(minilm_trace, methods=["attention", "alti"])
    bare = aw.MethodAgreement(minilm_trace)
    assert "alti" not in bare.methods and bare.table["methods"] == bare.methods


def test_explorer_links_the_token(minilm_trace):
    ex = aw.Explorer(minilm_trace)
    assert ex.agreement in ex.panels and ex.agreement in ex._grid.children
    ex.select(token=5)
    assert ex.agreement.token == 5 and ex.agreement.table["token"] == 5
    np.testing.assert_allclose(table_matrix(ex.agreement), method_agreement(minilm_trace, 5).matrix, atol=1e-6)


def test_long_texts_compute_off_the_thread(ctrace, monkeypatch):
    monkeypatch.setattr(agreement_mod, "SYNC_TOKENS", 4)
    w = aw.MethodAgreement(ctrace, token=3)
    deadline = time.monotonic() + 60
    while w.status != "ready" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.status == "ready" and w.table["token"] == 3
    np.testing.assert_allclose(table_matrix(w), method_agreement(ctrace, 3).matrix, atol=1e-6)
