"""Capture encoder-decoder models (T5, BART, ...): encoder, decoder and cross attention.

One forward pass with ``output_attentions=True`` (eager attention switched on for the
capture and restored after) and one ``torch.autograd.grad`` call over every layer of
all three stacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..trace import AttentionTrace
from ._common import _attention_grads, _callable_target, _check_index, _torch
from .contrib import compute_contributions, recording
from .huggingface import (
    _display_tokens,
    _eval_mode,
    _get_attn_impl,
    _model_device,
    _to_cpu_numpy,
    eager_attention,
)

__all__ = ["Seq2SeqTrace", "trace_seq2seq"]


@dataclass(frozen=True)
class Seq2SeqTrace:
    """The three attention traces of one encoder-decoder pass.

    ``encoder``: source x source (square, bidirectional). ``decoder``: decoder input x
    decoder input (square, causal). ``cross``: decoder queries x encoder keys
    (``cross.tokens`` are the decoder tokens, ``cross.key_tokens`` the source tokens).
    All gradients, when present, are of the same scalar target.
    """

    encoder: AttentionTrace
    decoder: AttentionTrace
    cross: AttentionTrace

    @property
    def target(self) -> str | None:
        return self.decoder.target

    @property
    def source_tokens(self) -> tuple[str, ...]:
        return self.encoder.tokens

    @property
    def decoder_tokens(self) -> tuple[str, ...]:
        return self.decoder.tokens

    def __iter__(self):
        return iter((self.encoder, self.decoder, self.cross))

    def __repr__(self) -> str:
        grad = f", gradients of {self.target!r}" if self.target else ""
        return (
            f"Seq2SeqTrace({self.encoder.model_name}: encoder {self.encoder.n_layers}x"
            f"{self.encoder.n_heads} over {self.encoder.n_tokens} source tokens, decoder "
            f"{self.decoder.n_layers}x{self.decoder.n_heads} over {self.decoder.n_tokens} "
            f"decoder tokens{grad})"
        )


def _ids_from(tokenizer: Any, value: Any, what: str, *, text_target: bool, max_length: int | None):
    """Return (ids LongTensor [T], special bool array [T] or None) for one sequence."""
    torch = _torch()
    special = None
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{what}: received an empty string; there is nothing to attend to")
        if tokenizer is None:
            raise ValueError(f"tokenizer: a tokenizer is needed to encode {what} text; or pass input ids")
        kw = dict(
            return_tensors="pt",
            truncation=max_length is not None,
            max_length=max_length,
            return_special_tokens_mask=True,
        )
        enc = tokenizer(text_target=value, **kw) if text_target else tokenizer(value, **kw)
        ids = enc["input_ids"][0]
        if "special_tokens_mask" in enc:
            special = enc["special_tokens_mask"][0].bool().numpy()
    elif hasattr(value, "keys") and "input_ids" in value:
        ids = torch.as_tensor(value["input_ids"])
        mask = value.get("attention_mask")
        if ids.ndim == 2:
            if ids.shape[0] != 1:
                raise ValueError(f"{what}: expected one sequence, received a batch of {ids.shape[0]}")
            ids = ids[0]
            mask = None if mask is None else torch.as_tensor(mask)[0]
        if mask is not None:
            ids = ids[torch.as_tensor(mask).bool().cpu()]  # crop padding
    else:
        try:
            ids = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"{what}: expected a string, a sequence of token ids or a tokenized dict, "
                f"received {type(value).__name__}"
            ) from exc
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1:
            raise ValueError(f"{what}: expected one sequence of token ids, received shape {tuple(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{what}: no tokens")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"{what}: token ids must be integers, received dtype {ids.dtype}")
    ids = ids.long().cpu()
    if special is None and tokenizer is not None:
        special = np.asarray(
            tokenizer.get_special_tokens_mask(ids.tolist(), already_has_special_tokens=True), dtype=bool
        )
    return ids, special


def _decoder_start(model: Any) -> int:
    config = getattr(model, "config", None)
    for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id"):
        value = getattr(config, name, None)
        if value is None and config is not None and hasattr(config, "get_text_config"):
            value = getattr(config.get_text_config(decoder=True), name, None)
        if value is not None:
            return int(value)
    raise ValueError(
        "target_text: cannot build decoder inputs: the config has no decoder_start_token_id, "
        "bos_token_id or pad_token_id"
    )


def _shift_right(model: Any, labels):
    """Decoder inputs for teacher forcing: the labels shifted right by the start token."""
    torch = _torch()
    prep = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if callable(prep):
        try:
            return prep(labels=labels[None])[0].cpu()
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            pass
    start = _decoder_start(model)
    return torch.cat([torch.tensor([start], dtype=torch.long), labels[:-1]])


def _eos_id(model: Any, tokenizer: Any) -> int | None:
    eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None and tokenizer is not None:
        eos = getattr(tokenizer, "eos_token_id", None) or getattr(tokenizer, "sep_token_id", None)
    return None if eos is None else int(eos)


def _greedy(model: Any, src_ids, device, max_new_tokens: int, eos: int | None):
    """Greedy decoding, no gradients: returns the generated label ids (without the start)."""
    torch = _torch()
    start = _decoder_start(model)
    dec = torch.tensor([[start]], dtype=torch.long, device=device)
    src = src_ids[None].to(device)
    out_ids: list[int] = []
    with torch.no_grad():
        encoder_outputs = None
        get_encoder = getattr(model, "get_encoder", None)
        if callable(get_encoder):
            encoder_outputs = get_encoder()(input_ids=src, return_dict=True)
        for _ in range(max_new_tokens):
            if encoder_outputs is not None:
                out = model(encoder_outputs=encoder_outputs, decoder_input_ids=dec, use_cache=False)
            else:
                out = model(input_ids=src, decoder_input_ids=dec, use_cache=False)
            nxt = int(out.logits[0, -1].argmax())
            out_ids.append(nxt)
            if eos is not None and nxt == eos:
                break
            dec = torch.cat([dec, torch.tensor([[nxt]], dtype=torch.long, device=device)], dim=1)
    return torch.tensor(out_ids, dtype=torch.long)


def _has_lm_head(model: Any) -> bool:
    getter = getattr(model, "get_output_embeddings", None)
    try:
        return callable(getter) and getter() is not None
    except (NotImplementedError, AttributeError):
        return False


def _check_stack(model: Any, name: str, tensors: Any) -> tuple:
    if not tensors or any(a is None for a in tensors):
        raise ValueError(
            f"attentions: {type(model).__name__} returned no {name} weights "
            f"(attention implementation {_get_attn_impl(model)!r}). attn_widgets switches "
            "transformers models to eager attention for the capture; this model did not honour "
            "it. Load it with attn_implementation='eager'."
        )
    return tuple(tensors)


def trace_seq2seq(
    model: Any,
    tokenizer: Any,
    source: Any,
    target_text: Any = None,
    target: Any = None,
    gradients: bool = True,
    *,
    position: int | None = None,
    max_new_tokens: int = 20,
    max_length: int | None = None,
    contributions: bool = False,
) -> Seq2SeqTrace:
    """Capture encoder, decoder and cross attention (and their gradients) of a seq2seq model.

    Parameters
    ----------
    model, tokenizer
        A `transformers` encoder-decoder model (``T5ForConditionalGeneration``,
        ``BartForConditionalGeneration``, bare ``T5Model`` / ``BartModel``, ...) and its
        tokenizer. ``tokenizer`` may be ``None`` when ``source`` and ``target_text`` are
        token ids; tokens are then shown as their ids.
    source
        Encoder input: a string, a sequence / tensor of token ids, or a tokenized dict with
        ``input_ids`` (and ``attention_mask``, whose padding is cropped).
    target_text
        Decoder output to teacher-force: a string (tokenized with ``text_target=``), or
        label ids. The decoder *inputs* are these labels shifted right by the decoder
        start token, as in training. ``None``: greedy-decode up to ``max_new_tokens``
        tokens (models with an LM head), or just the start token (bare models).
    target
        What the gradients are taken of. ``None``: the logit of the label token at decoder
        ``position`` (default: last), i.e. the token the decoder should produce there; for
        a bare model, the norm of the mean-pooled decoder last hidden state. An int picks
        a vocabulary index at ``position``; a callable ``outputs -> scalar tensor`` is used
        as is.
    gradients
        False skips the backward pass.
    contributions
        Also record, in the same forward pass, what the contribution methods need for the
        **encoder** (T5 and BART): ``encoder.value_norms`` ``[L, H, T]``,
        ``encoder.mixed_norms`` and ``encoder.contributions`` ``[L, T, T]`` (see
        :mod:`attn_widgets.capture.contrib`), so ``s2s.encoder`` works with ``value_norm``
        and ``alti``. The decoder and cross-attention have none (ALTI of a decoder fed by
        cross-attention is not defined here).

    Returns
    -------
    Seq2SeqTrace
        ``.encoder`` (source x source), ``.decoder`` (decoder x decoder, causal) and
        ``.cross`` (decoder x source, ``key_tokens`` = source tokens). Each ``meta`` has
        ``kind``, the target ``position`` and the ``labels`` ids; ``cross.meta`` also has
        ``key_special_mask`` (the source tokens' special mask).
    """
    torch = _torch()
    src_ids, src_special = _ids_from(tokenizer, source, "source", text_target=False, max_length=max_length)
    has_lm_head = _has_lm_head(model)
    device = _model_device(model)

    labels = None
    label_desc = "label token"
    if target_text is not None:
        labels, _ = _ids_from(tokenizer, target_text, "target_text", text_target=True, max_length=max_length)
        dec_ids = _shift_right(model, labels)
    elif has_lm_head:
        with _eval_mode(model):
            labels = _greedy(model, src_ids, device, int(max_new_tokens), _eos_id(model, tokenizer))
        label_desc = "generated token"
        dec_ids = _shift_right(model, labels)
    else:
        dec_ids = torch.tensor([_decoder_start(model)], dtype=torch.long)
    dec_special = None
    if tokenizer is not None:
        dec_special = np.asarray(
            tokenizer.get_special_tokens_mask(dec_ids.tolist(), already_has_special_tokens=True), dtype=bool
        )

    n_dec = int(dec_ids.numel())
    if position is None:
        position = n_dec - 1
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise TypeError(f"position: expected an int, received {position!r}")
    if not -n_dec <= position < n_dec:
        raise ValueError(f"position: expected -{n_dec} <= position < {n_dec} (decoder tokens), received {position}")
    position = int(position) % n_dec

    inputs = {
        "input_ids": src_ids[None].to(device),
        "attention_mask": torch.ones(1, src_ids.numel(), dtype=torch.long, device=device),
        "decoder_input_ids": dec_ids[None].to(device),
    }
    if not isinstance(contributions, bool):
        raise TypeError(f"contributions: expected a bool, received {contributions!r}")
    with eager_attention(model), _eval_mode(model), torch.enable_grad(), recording(model, contributions) as rec:
        outputs, stacks = _forward_seq2seq(model, inputs, gradients)
        enc_a, dec_a, cross_a = stacks
        # One forward for everything: the hooks saw the encoder blocks of the latest pass.
        contrib = compute_contributions(rec.blocks(), enc_a) if rec is not None else {}
        if gradients:
            y, desc = _seq2seq_target(outputs, target, position, labels, label_desc, tokenizer)
            grads = _attention_grads(y, enc_a + dec_a + cross_a)
            n_e, n_d = len(enc_a), len(dec_a)
            g_enc = _to_cpu_numpy(grads[:n_e])
            g_dec = _to_cpu_numpy(grads[n_e : n_e + n_d])
            g_cross = _to_cpu_numpy(grads[n_e + n_d :])
        else:
            desc, g_enc, g_dec, g_cross = None, None, None, None
    a_enc, a_dec, a_cross = (_to_cpu_numpy(s) for s in stacks)

    src_list, dec_list = src_ids.tolist(), dec_ids.tolist()
    if tokenizer is not None:
        src_tokens = tuple(_display_tokens(tokenizer, src_list))
        dec_tokens = tuple(_display_tokens(tokenizer, dec_list))
    else:
        src_tokens, dec_tokens = tuple(map(str, src_list)), tuple(map(str, dec_list))
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    common = dict(target=desc, model_name=str(name))
    meta = {"position": position, "labels": None if labels is None else tuple(labels.tolist())}
    encoder = AttentionTrace(
        tokens=src_tokens, attentions=a_enc, gradients=g_enc, causal=False,
        special_mask=src_special, token_ids=tuple(src_list), meta={"kind": "seq2seq_encoder", **meta}, **common,
        **contrib,
    )
    decoder = AttentionTrace(
        tokens=dec_tokens, attentions=a_dec, gradients=g_dec, causal=True,
        special_mask=dec_special, token_ids=tuple(dec_list), meta={"kind": "seq2seq_decoder", **meta}, **common,
    )
    cross = AttentionTrace(
        tokens=dec_tokens, key_tokens=src_tokens, attentions=a_cross, gradients=g_cross, causal=False,
        special_mask=dec_special, token_ids=tuple(dec_list),
        meta={
            "kind": "seq2seq_cross",
            "key_special_mask": None if src_special is None else tuple(bool(x) for x in src_special),
            **meta,
        },
        **common,
    )
    return Seq2SeqTrace(encoder=encoder, decoder=decoder, cross=cross)


def _forward_seq2seq(model: Any, inputs: dict, need_grad: bool):
    outputs = model(**inputs, output_attentions=True, return_dict=True, use_cache=False)
    stacks = _stacks(model, outputs)
    if need_grad and not all(a.requires_grad for s in stacks for a in s):
        # Frozen weights: feed embeddings that require grad so every stack joins the graph.
        enc_emb = model.get_input_embeddings()
        dec_emb = enc_emb
        get_decoder = getattr(model, "get_decoder", None)
        if callable(get_decoder):
            getter = getattr(get_decoder(), "get_input_embeddings", None)
            try:
                dec_emb = getter() if callable(getter) else getattr(get_decoder(), "embed_tokens", enc_emb)
            except (NotImplementedError, AttributeError):
                dec_emb = enc_emb
        embeds = enc_emb(inputs["input_ids"]).detach().requires_grad_(True)
        dec_embeds = dec_emb(inputs["decoder_input_ids"]).detach().requires_grad_(True)
        outputs = model(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"], decoder_inputs_embeds=dec_embeds,
            output_attentions=True, return_dict=True, use_cache=False,
        )
        stacks = _stacks(model, outputs)
    return outputs, stacks


def _stacks(model: Any, outputs: Any):
    return (
        _check_stack(model, "encoder attention", getattr(outputs, "encoder_attentions", None)),
        _check_stack(model, "decoder attention", getattr(outputs, "decoder_attentions", None)),
        _check_stack(model, "cross-attention", getattr(outputs, "cross_attentions", None)),
    )


def _seq2seq_target(outputs: Any, target: Any, position: int, labels: Any, label_desc: str, tokenizer: Any):
    if callable(target):
        return _callable_target(target, outputs)
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        row = logits[0, position]
        if target is None:
            if labels is not None and position < labels.numel():
                idx, what = int(labels[position]), label_desc
            else:
                idx, what = int(row.argmax()), "predicted token"
        else:
            idx, what = _check_index(target, row.shape[-1], "target (vocabulary index)"), "token"
        tok = _display_tokens(tokenizer, [idx])[0] if tokenizer is not None else str(idx)
        return row[idx], f"logit of {what} {tok!r} (id {idx}) at decoder position {position}"
    if target is not None:
        raise ValueError(
            "target: an integer target needs a model with logits (an LM head); this model has none. "
            "Pass target=callable(outputs) -> scalar tensor instead."
        )
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise ValueError(
            "target: could not choose a default target: the output has neither logits nor "
            "last_hidden_state. Pass target=callable(outputs) -> scalar tensor."
        )
    return hidden[0].mean(dim=0).norm(), "norm of the mean-pooled decoder last hidden state"
