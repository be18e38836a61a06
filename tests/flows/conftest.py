"""Fixtures for the flow tests: real MiniLM / GPT-2 traces of real text."""

from __future__ import annotations

import pytest

SENTENCE = "The cat sat on the mat because it was warm."

# Jane Austen, Pride and Prejudice (1813), chapter 1, public domain.
PARAGRAPH = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that "
    "he is considered the rightful property of some one or other of their daughters."
)


@pytest.fixture(scope="session")
def minilm_long(minilm):
    """Real MiniLM trace of a real paragraph, cropped to 64 tokens, with gradients."""
    import attn_widgets as aw

    model, tok = minilm
    tr = aw.trace(model, tok, PARAGRAPH, max_length=64)
    assert tr.n_tokens == 64
    return tr


@pytest.fixture(scope="session")
def gpt2_trace(gpt2):
    import attn_widgets as aw

    model, tok = gpt2
    tr = aw.trace(model, tok, "The cat sat on the mat because it was warm.")
    assert tr.causal
    return tr
