"""Capture attention (and its gradient) from a `transformers` model.

One forward pass with ``output_attentions=True`` and one ``torch.autograd.grad`` call
over every layer's attention tensor: no per-layer backward, no weight gradients.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from ..trace import AttentionTrace, looks_causal
from ._common import _attention_grads, _callable_target, _check_index, _select_sequence, _torch
from .contrib import compute_contributions, recording

__all__ = ["trace", "eager_attention", "model_kind"]


def _get_attn_impl(model: Any) -> Any:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


@contextlib.contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Temporarily switch a transformers model to eager attention, which returns weights.

    sdpa and flash attention compute the same outputs without materialising the
    weights, so ``output_attentions=True`` yields nothing. The model's own setting is
    restored afterwards, also when the forward pass raises.
    """
    original = _get_attn_impl(model)
    if original is None or original == "eager":
        yield
        return
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
        try:
            yield
        finally:
            setter(original)
    else:
        model.config._attn_implementation = "eager"
        try:
            yield
        finally:
            model.config._attn_implementation = original


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def model_kind(model: Any) -> str:
    """'causal_lm', 'seq_cls' or 'encoder', from the model class and its config."""
    name = type(model).__name__
    arch = " ".join(getattr(getattr(model, "config", None), "architectures", None) or [])
    if "ForSequenceClassification" in name:
        return "seq_cls"
    if "CausalLM" in name or "LMHeadModel" in name:
        return "causal_lm"
    if getattr(getattr(model, "config", None), "is_decoder", False):
        return "causal_lm" if hasattr(model, "lm_head") else "decoder"
    if "CausalLM" in arch and not name.endswith("Model"):
        return "causal_lm"
    return "encoder"


def _model_device(model: Any):
    """Where the inputs go: the input embedding's device (the first piece of a model split
    with ``device_map``), else the first parameter not on the meta device, else CPU."""
    torch = _torch()
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            weight = getattr(getter(), "weight", None)
        except (NotImplementedError, AttributeError):
            weight = None
        if weight is not None and weight.device.type != "meta":
            return weight.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _to_cpu_numpy(tensors: Sequence[Any], batch_index: int = 0) -> np.ndarray:
    """Stack one sequence of each layer's tensor, moving each layer to CPU on its own.

    With a model split across devices (``device_map``) every layer's tensor lives on
    its layer's device; moving them one by one never gathers all layers on one
    accelerator, and the dtype cast happens on the CPU copy.
    """
    return np.stack([t[batch_index].detach().cpu().float().numpy() for t in tensors])


def _display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    raw = tokenizer.convert_ids_to_tokens(list(ids))
    out = []
    for t in raw:
        t = str(t)
        # Byte-level BPE (GPT-2) and sentencepiece mark a leading space with a symbol.
        t = t.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\\n")
        out.append(t)
    return out


def _resolve_target(kind: str, outputs: Any, target: Any, position: int, tokenizer: Any, config: Any = None):
    """Return (scalar tensor, description)."""
    if callable(target):
        return _callable_target(target, outputs)
    logits = getattr(outputs, "logits", None)
    if kind == "causal_lm" and logits is not None:
        row = logits[0, position]
        if target is None:
            idx = int(row.argmax())
            what = "predicted next token"
        else:
            idx = _check_index(target, row.shape[-1], "target (vocabulary index)")
            what = "next token"
        tok = _display_tokens(tokenizer, [idx])[0] if tokenizer is not None else str(idx)
        return row[idx], f"logit of {what} {tok!r} (id {idx}) at position {position}"
    if kind == "seq_cls" and logits is not None:
        row = logits[0]
        if target is None:
            idx = int(row.argmax())
            what = "predicted class"
        else:
            idx = _check_index(target, row.shape[-1], "target (class index)")
            what = "class"
        label = getattr(config, "id2label", None) or {}
        name = label.get(idx, str(idx))
        return row[idx], f"logit of {what} {name!r}"
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        hs = getattr(outputs, "hidden_states", None)
        hidden = hs[-1] if hs else None
    if hidden is None:
        raise ValueError(
            "target: could not choose a default target: the model output has neither logits nor "
            "last_hidden_state. Pass target=callable(outputs) -> scalar tensor."
        )
    if target is not None:
        raise ValueError(
            f"target: an integer target needs a model with logits; this {kind} model has none. "
            "Pass target=callable(outputs) -> scalar tensor instead."
        )
    pooled = hidden[0].mean(dim=0)
    return pooled.norm(), "norm of the mean-pooled last hidden state"


def trace(
    model: Any,
    tokenizer: Any,
    text: str | Any,
    target: Any = None,
    *,
    position: int | None = None,
    batch_index: int = 0,
    gradients: bool = True,
    max_length: int | None = None,
    contributions: bool = False,
) -> AttentionTrace:
    """Run ``model`` on ``text`` and capture every layer's attention and its gradient.

    Parameters
    ----------
    model, tokenizer
        A `transformers` model and its tokenizer. sdpa / flash attention is switched to
        eager for the capture and restored afterwards; train mode likewise.
    text
        A string, a list of strings (``batch_index`` picks one; padding is cropped), or
        an already tokenized ``BatchEncoding`` / dict with ``input_ids``.
    target
        What the gradients are taken of. ``None`` picks by model type: causal LM -> logit
        of the predicted next token at ``position`` (default: last); sequence
        classification -> predicted class logit; bare encoder -> norm of the mean-pooled
        last hidden state. An int selects a vocabulary / class index; a callable
        ``outputs -> scalar tensor`` is used as is.
    gradients
        Set False to skip the backward pass.
    contributions
        Also record, in the same forward pass, what the contribution methods need: the
        trace's ``value_norms`` ``[L, H, T]``, ``mixed_norms`` ``[L, T, T]`` and ALTI
        ``contributions`` ``[L, T, T]`` (see :mod:`attn_widgets.capture.contrib`; BERT /
        RoBERTa, GPT-2 and Llama-style models).
    """
    torch = _torch()
    if tokenizer is None and isinstance(text, str):
        raise ValueError("tokenizer: a tokenizer is needed to encode text")
    if isinstance(text, str):
        if not text.strip():
            raise ValueError("text: received an empty string; there is nothing to attend to")
        texts: Any = text
    elif isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
        if any(not t.strip() for t in text):
            raise ValueError("text: the batch contains an empty string")
        texts = list(text)
    else:
        texts = None

    if texts is not None:
        enc = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_special_tokens_mask=True,
        )
    elif hasattr(text, "keys") and "input_ids" in text:
        enc = dict(text)
    else:
        raise TypeError(
            f"text: expected a string, a list of strings or a tokenized batch, received {type(text).__name__}"
        )
    enc = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in enc.items()}
    if enc["input_ids"].ndim == 1:
        enc = {k: v.unsqueeze(0) for k, v in enc.items()}
    # One sequence at a time: select it, then crop its padding.
    sel, ids, special = _select_sequence(enc, batch_index, tokenizer)

    device = _model_device(model)
    sel = {k: v.to(device) for k, v in sel.items()}
    kind = model_kind(model)
    n_tokens = len(ids)
    if position is None:
        position = n_tokens - 1
    if not -n_tokens <= position < n_tokens:
        raise ValueError(f"position: expected -{n_tokens} <= position < {n_tokens}, received {position}")
    position = position % n_tokens

    with eager_attention(model), _eval_mode(model), torch.enable_grad(), recording(model, contributions) as rec:
        outputs, attentions = _forward(model, sel, gradients)
        contrib = {} if rec is None else compute_contributions(rec.blocks(), attentions)
        if gradients:
            y, desc = _resolve_target(
                kind, outputs, target, position, tokenizer, getattr(model, "config", None)
            )
            grad_np = _to_cpu_numpy(_attention_grads(y, attentions))
        else:
            desc, grad_np = None, None
    attn_np = _to_cpu_numpy(attentions)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    causal = kind in ("causal_lm", "decoder") or looks_causal(attn_np)
    return AttentionTrace(
        tokens=tuple(_display_tokens(tokenizer, ids)) if tokenizer is not None else tuple(map(str, ids)),
        attentions=attn_np,
        gradients=grad_np,
        target=desc,
        causal=causal,
        special_mask=None if special is None else special.cpu().numpy().astype(bool),
        model_name=str(name),
        token_ids=tuple(ids),
        meta={"kind": kind, "position": position},
        **contrib,
    )


def _forward(model: Any, inputs: dict, need_grad: bool):
    """Forward with attention weights; make sure they are in the autograd graph."""
    outputs = model(**inputs, output_attentions=True, return_dict=True)
    attentions = getattr(outputs, "attentions", None)
    _check_attentions(model, attentions)
    if need_grad and not all(a.requires_grad for a in attentions):
        # Frozen weights (requires_grad=False everywhere): feed embeddings that require
        # grad so the attention tensors join the graph. Costs a second forward, rarely.
        emb_layer = model.get_input_embeddings()
        embeds = emb_layer(inputs["input_ids"]).detach().requires_grad_(True)
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        outputs = model(inputs_embeds=embeds, **rest, output_attentions=True, return_dict=True)
        attentions = outputs.attentions
        _check_attentions(model, attentions)
    return outputs, tuple(attentions)


def _check_attentions(model: Any, attentions: Any) -> None:
    if not attentions or any(a is None for a in attentions):
        impl = _get_attn_impl(model)
        raise ValueError(
            f"attentions: {type(model).__name__} returned no attention weights "
            f"(attention implementation {impl!r}). attn_widgets switches transformers models "
            "to eager attention for the capture; this model did not honour it. Load it with "
            "attn_implementation='eager' or build the trace with AttentionTrace.from_tensors()."
        )
