"""Encoder-decoder capture (T5, BART from tiny configs): encoder, decoder and cross attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.huggingface import eager_attention

SOURCE = "the cat sat on the mat"
TARGET = "le chat est assis"


def _reference(model, tok, source, target_text):
    """Plain transformers forward under eager attention, decoder inputs built by the model."""
    src = tok(source, return_tensors="pt")
    labels = tok(text_target=target_text, return_tensors="pt")["input_ids"]
    dec = model.prepare_decoder_input_ids_from_labels(labels=labels)
    with eager_attention(model):
        out = model(
            input_ids=src["input_ids"], attention_mask=src["attention_mask"], decoder_input_ids=dec,
            output_attentions=True, return_dict=True, use_cache=False,
        )
    return src["input_ids"][0], labels[0], dec[0], out


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_shapes_tokens_and_weights_match_transformers(name, request, tok):
    model = request.getfixturevalue(name)
    tr = aw.trace_seq2seq(model, tok, SOURCE, TARGET)
    src_ids, labels, dec_ids, out = _reference(model, tok, SOURCE, TARGET)
    ts, td = len(src_ids), len(dec_ids)
    cfg = model.config
    n_enc = cfg.num_layers if name == "t5" else cfg.encoder_layers
    n_dec = cfg.num_decoder_layers if name == "t5" else cfg.decoder_layers
    h_dec = cfg.num_heads if name == "t5" else cfg.decoder_attention_heads

    assert isinstance(tr, aw.Seq2SeqTrace)
    assert tr.encoder.tokens == tuple(tok.convert_ids_to_tokens(src_ids.tolist()))
    assert tr.decoder.tokens == tuple(tok.convert_ids_to_tokens(dec_ids.tolist()))
    assert tr.decoder.token_ids == tuple(dec_ids.tolist())
    assert tr.decoder.meta["labels"] == tuple(labels.tolist())
    assert tr.encoder.shape[0] == n_enc and tr.encoder.shape[2:] == (ts, ts)
    assert tr.decoder.shape == (n_dec, h_dec, td, td)
    assert tr.cross.shape == (n_dec, h_dec, td, ts)
    assert tr.cross.tokens == tr.decoder.tokens and tr.cross.key_tokens == tr.encoder.tokens
    assert tr.cross.is_cross and tr.cross.n_tokens == td and tr.cross.n_keys == ts
    assert tr.cross.key_labels == tr.encoder.tokens and tr.encoder.key_labels == tr.encoder.tokens
    assert tr.decoder.causal and not tr.encoder.causal and not tr.cross.causal
    assert not tr.encoder.is_cross and tr.encoder.key_tokens is None
    for sub, ref in zip(tr, (out.encoder_attentions, out.decoder_attentions, out.cross_attentions)):
        np.testing.assert_allclose(sub.attentions, torch.stack(ref)[:, 0].detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(sub.attentions.sum(-1), 1.0, atol=1e-5)
    assert tr.encoder.special_mask[0] and tr.encoder.special_mask[-1] and not tr.encoder.special_mask[1:-1].any()
    assert tr.decoder.special_mask[0]  # the decoder start token ([PAD] for T5, [SEP] for BART)
    assert tr.cross.meta["key_special_mask"] == tuple(tr.encoder.special_mask.tolist())
    assert tr.target == tr.encoder.target == tr.cross.target
    assert tr.target.startswith("logit of label token '[SEP]'") and f"decoder position {td - 1}" in tr.target
    assert "encoder" in repr(tr) and "(cross)" in repr(tr.cross)


def test_gradients_match_autograd_for_every_stack(t5, tok):
    """One grad call over all three stacks == per-tensor autograd of the same scalar."""
    position = 2
    tr = aw.trace_seq2seq(t5, tok, SOURCE, TARGET, position=position)
    _, labels, _, out = _reference(t5, tok, SOURCE, TARGET)
    y = out.logits[0, position, labels[position]]
    assert f"(id {int(labels[position])}) at decoder position {position}" in tr.target
    refs = torch.autograd.grad(
        y, [out.encoder_attentions[1], out.decoder_attentions[2], out.cross_attentions[0]]
    )
    np.testing.assert_allclose(tr.encoder.gradients[1], refs[0][0].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(tr.decoder.gradients[2], refs[1][0].numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(tr.cross.gradients[0], refs[2][0].numpy(), rtol=1e-4, atol=1e-7)
    # The logit at decoder position p cannot depend on decoder queries after p.
    assert np.all(tr.decoder.gradients[:, :, position + 1 :] == 0)
    assert np.all(tr.cross.gradients[:, :, position + 1 :] == 0)
    assert np.abs(tr.cross.gradients[:, :, : position + 1]).sum() > 0
    assert np.abs(tr.encoder.gradients).sum() > 0


def test_int_and_callable_targets(bart, tok):
    tr = aw.trace_seq2seq(bart, tok, SOURCE, TARGET, target=7, position=1)
    assert tr.target.startswith("logit of token") and "(id 7) at decoder position 1" in tr.target

    def second_logit(outputs):
        return outputs.logits[0, 0, 2]

    tr = aw.trace_seq2seq(bart, tok, SOURCE, TARGET, target=second_logit)
    assert tr.target == "custom target second_logit(outputs)"
    assert np.all(tr.decoder.gradients[:, :, 1:] == 0)


def test_greedy_decoding_without_target_text(bart, tok):
    tr = aw.trace_seq2seq(bart, tok, SOURCE, max_new_tokens=4)
    labels = tr.decoder.meta["labels"]
    assert 1 <= len(labels) <= 4 and tr.decoder.n_tokens == len(labels)
    assert tr.decoder.token_ids[0] == bart.config.decoder_start_token_id
    assert tr.decoder.token_ids[1:] == labels[:-1]
    assert "logit of generated token" in tr.target
    # Greedy: every generated label is the argmax at its position.
    src = tok(SOURCE, return_tensors="pt")
    with torch.no_grad():
        logits = bart(**src, decoder_input_ids=torch.tensor([tr.decoder.token_ids])).logits[0]
    assert tuple(logits.argmax(-1).tolist()) == labels


def test_bare_model_default_target_and_no_logits(t5_config, tok):
    from transformers import T5Model

    torch.manual_seed(1)
    model = T5Model(t5_config).eval()
    tr = aw.trace_seq2seq(model, tok, SOURCE, TARGET)
    assert tr.target == "norm of the mean-pooled decoder last hidden state"
    tr1 = aw.trace_seq2seq(model, tok, SOURCE)
    assert tr1.decoder.tokens == ("[PAD]",) and tr1.cross.shape[2:] == (1, tr1.encoder.n_tokens)
    with pytest.raises(ValueError, match="integer target needs a model with logits"):
        aw.trace_seq2seq(model, tok, SOURCE, TARGET, target=3)


def test_token_ids_without_tokenizer(t5):
    tr = aw.trace_seq2seq(t5, None, torch.tensor([[101, 2000, 2001, 102]]), [2003, 2004, 102])
    assert tr.encoder.tokens == ("101", "2000", "2001", "102")
    assert tr.decoder.token_ids == (0, 2003, 2004) and tr.decoder.tokens == ("0", "2003", "2004")
    assert tr.encoder.special_mask.sum() == 0
    with pytest.raises(ValueError, match="tokenizer: a tokenizer is needed"):
        aw.trace_seq2seq(t5, None, "some text", [1, 2])


def test_padding_in_tokenized_source_is_cropped(t5, tok):
    enc = tok([SOURCE + " and more words here", SOURCE], padding=True, return_tensors="pt")
    single = {k: v[1:] for k, v in enc.items()}
    tr_pad = aw.trace_seq2seq(t5, tok, single, TARGET)
    tr = aw.trace_seq2seq(t5, tok, SOURCE, TARGET)
    assert tr_pad.encoder.tokens == tr.encoder.tokens
    np.testing.assert_allclose(tr_pad.cross.attentions, tr.cross.attentions, atol=1e-6)


def test_restores_sdpa_and_train_mode_and_frozen_weights(bart_config, tok):
    from transformers import BartForConditionalGeneration

    torch.manual_seed(2)
    model = BartForConditionalGeneration(bart_config)
    assert model.config._attn_implementation == "sdpa"
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    tr = aw.trace_seq2seq(model, tok, SOURCE, TARGET)
    assert model.config._attn_implementation == "sdpa" and model.training
    assert all(not p.requires_grad for p in model.parameters())
    # Frozen weights still give gradients for all three stacks (embeddings require grad).
    for sub in tr:
        assert np.abs(sub.gradients).sum() > 0


def test_gradients_false(t5, tok):
    tr = aw.trace_seq2seq(t5, tok, SOURCE, TARGET, gradients=False)
    assert all(sub.gradients is None and sub.target is None for sub in tr)
    assert tr.target is None


def test_seq2seq_trace_is_frozen(t5, tok):
    tr = aw.trace_seq2seq(t5, tok, SOURCE, TARGET, gradients=False)
    with pytest.raises(AttributeError):
        tr.encoder = tr.decoder  # type: ignore[misc]
    enc, dec, cross = tr
    assert enc is tr.encoder and dec is tr.decoder and cross is tr.cross
    assert tr.source_tokens == enc.tokens and tr.decoder_tokens == dec.tokens


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_contributions_for_the_encoder(name, request, tok):
    """trace_seq2seq(contributions=True) records the encoder's value norms and ALTI
    contributions in its one forward: equal to capture_contributions on the encoder alone."""
    from attn_widgets.capture.contrib import capture_contributions

    model = request.getfixturevalue(name)
    tr = aw.trace_seq2seq(model, tok, SOURCE, TARGET, contributions=True)
    plain = aw.trace_seq2seq(model, tok, SOURCE, TARGET)
    src = tok(SOURCE, return_tensors="pt")
    with eager_attention(model):
        ref = capture_contributions(model, {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"]})
    enc = tr.encoder
    for field in ("value_norms", "mixed_norms", "contributions"):
        got = getattr(enc, field)
        assert got is not None and getattr(plain.encoder, field) is None
        np.testing.assert_allclose(got, ref[field], rtol=1e-5, atol=1e-6, err_msg=field)
    np.testing.assert_array_equal(enc.attentions, plain.encoder.attentions)  # same forward otherwise
    np.testing.assert_array_equal(tr.decoder.gradients, plain.decoder.gradients)
    assert tr.decoder.contributions is None and tr.cross.contributions is None
    np.testing.assert_allclose(enc.alti()[-1].sum(-1), 1.0, atol=1e-6)
    assert enc.method_agreement(1, ["attention", "alti"]).matrix.shape == (2, 2)
    with pytest.raises(TypeError, match="contributions: expected a bool"):
        aw.trace_seq2seq(model, tok, SOURCE, TARGET, contributions="yes")
