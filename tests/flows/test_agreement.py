"""method_agreement against scipy.stats.spearmanr on real MiniLM scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata, spearmanr

import attn_widgets as aw
from attn_widgets.flows import AgreementTable, method_agreement
from attn_widgets.flows.agreement import rank_average, spearman_matrix
from attn_widgets.flows.paths import METHODS, score_matrix, token_scores

from .conftest import SENTENCE


@pytest.fixture(scope="module")
def ctrace(minilm):
    model, tok = minilm
    return aw.trace(model, tok, SENTENCE, contributions=True)


def test_matches_scipy_on_minilm(ctrace):
    for token in (0, 4):
        ag = ctrace.method_agreement(token)
        assert isinstance(ag, AgreementTable) and ag.methods == METHODS and ag.token == token
        m = len(METHODS)
        assert ag.matrix.shape == (m, m) and ag.scores.shape == (m, ctrace.n_tokens)
        for i, a in enumerate(METHODS):
            sa = token_scores(ctrace, a, token)
            np.testing.assert_allclose(ag.scores[i], sa, atol=1e-7)
            for j, b in enumerate(METHODS):
                ref = spearmanr(sa, token_scores(ctrace, b, token)).statistic
                assert ag.matrix[i, j] == pytest.approx(ref, abs=1e-9), (a, b)
        assert ag["attention", "alti"] == ag.matrix[0, METHODS.index("alti")]


def test_attention_and_alti_disagree_on_the_demo_sentence(ctrace):
    """Raw attention ranks [CLS]/[SEP] first; ALTI does not: the table shows it."""
    ag = ctrace.method_agreement(4)
    assert ag["attention", "alti"] < 0
    assert ag["attention", "rollout"] > 0.5
    a, b, rho = ag.most_disagreeing()
    assert rho == np.nanmin(ag.matrix)


def test_subset_and_errors(ctrace, minilm_trace):
    ag = method_agreement(ctrace, 2, ["alti", "attention"])
    assert ag.methods == ("alti", "attention")
    ref = spearmanr(score_matrix(ctrace, "alti")[2], score_matrix(ctrace, "attention")[2]).statistic
    assert ag.matrix[0, 1] == pytest.approx(ref, abs=1e-9)
    assert minilm_trace.method_agreement(1).methods == ("attention", "rollout", "flow", "grad_rollout", "attn_grad")
    with pytest.raises(ValueError, match=r"contributions=True"):
        minilm_trace.method_agreement(1, ["attention", "alti"])
    with pytest.raises(ValueError, match=r"method: expected one of"):
        method_agreement(ctrace, 1, ["attention", "nope"])
    with pytest.raises(ValueError, match=r"at least 2 methods"):
        method_agreement(ctrace, 1, ["attention"])
    with pytest.raises(ValueError, match=r"given twice"):
        method_agreement(ctrace, 1, ["attention", "attention"])
    with pytest.raises(ValueError, match=r"token: expected an int 0 <= token < 13, received 13"):
        method_agreement(ctrace, 13)
    with pytest.raises(KeyError, match="not in this table"):
        ag["attention", "flow"]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 5), st.integers(2, 9), st.integers(0, 10_000))
def test_spearman_matrix_random_with_ties(m, t, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, size=(m, t)).astype(float)  # many ties, some constant rows
    got = spearman_matrix(s)
    for i in range(m):
        np.testing.assert_allclose(rank_average(s[i]), rankdata(s[i]))
        for j in range(m):
            if np.ptp(s[i]) == 0 or np.ptp(s[j]) == 0:
                assert np.isnan(got[i, j])
            else:
                assert got[i, j] == pytest.approx(spearmanr(s[i], s[j]).statistic, abs=1e-12)
