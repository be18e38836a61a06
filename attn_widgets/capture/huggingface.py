"""Capture attention (and its gradient) from a `transformers` model.

One forward pass with ``output_attentions=True`` and one ``torch.autograd.grad`` call
over every layer's attention tensor: no per-layer backward, no weight gradients.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from .._checks import _adopt, check_dense_size
from ..trace import AttentionTrace, looks_causal
from ._common import _callable_target, _check_index, _select_sequence, _torch
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
    """Token strings for ``ids``: ``convert_ids_to_tokens`` (transformers), ``id_to_token``
    (a ``tokenizers.Tokenizer``), else the ids themselves as text."""
    ids = [int(i) for i in ids]
    if callable(getattr(tokenizer, "convert_ids_to_tokens", None)):
        raw = tokenizer.convert_ids_to_tokens(ids)
    elif callable(getattr(tokenizer, "id_to_token", None)):
        raw = [tokenizer.id_to_token(i) for i in ids]
        raw = [str(i) if t is None else t for i, t in zip(ids, raw)]
    else:
        return [str(i) for i in ids]
    out = []
    for t in raw:
        t = str(t)
        # Byte-level BPE (GPT-2) and sentencepiece mark a leading space with a symbol.
        t = t.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\\n")
        out.append(t)
    return out


def _resolve_target(
    kind: str, outputs: Any, target: Any, position: int, tokenizer: Any, config: Any = None, label: str | None = None
):
    """Return (scalar tensor, description)."""
    if callable(target):
        return _callable_target(target, outputs, label=label)
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


def _check_model(model: Any) -> None:
    """A transformers model (an ``nn.Module`` with ``get_input_embeddings``), before anything runs."""
    torch = _torch()
    if model is None or isinstance(model, (str, bytes)) or not isinstance(model, torch.nn.Module):
        hint = (
            " (a name or path: load it first, e.g. AutoModel.from_pretrained(name, attn_implementation='eager'))"
            if isinstance(model, (str, bytes)) else ""
        )
        raise TypeError(
            f"model: expected a transformers model (torch.nn.Module with get_input_embeddings), "
            f"received {'None' if model is None else type(model).__name__}{hint}"
        )
    # A wrapper that carries the transformers config (and forwards to the model) is fine.
    if not callable(getattr(model, "get_input_embeddings", None)) and getattr(model, "config", None) is None:
        raise TypeError(
            f"model: expected a transformers model (with get_input_embeddings() and a config), received "
            f"{type(model).__name__}; for plain PyTorch attention modules use attn_widgets.trace_torch(), "
            "or pass precomputed weights to AttentionTrace.from_tensors()"
        )


def _check_int_arg(value: Any, name: str, low: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int or None, received {value!r} ({type(value).__name__})")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an int >= {low} or None, received {value}")
    return int(value)


def _vocab_size(model: Any) -> int | None:
    getter = getattr(model, "get_input_embeddings", None)
    try:
        emb = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        emb = None
    n = getattr(emb, "num_embeddings", None)
    if n is None:
        n = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(n) if isinstance(n, (int, np.integer)) else None


def _check_input_ids(ids: Any, model: Any) -> None:
    """Integer ``[T]`` / ``[B, T]`` ids inside the model's vocabulary, checked before the forward pass."""
    torch = _torch()
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"input_ids: expected integer token ids, received dtype {str(ids.dtype).replace('torch.', '')}")
    if ids.ndim not in (1, 2):
        raise ValueError(f"input_ids: expected shape [T] or [B, T], received {tuple(ids.shape)}")
    vocab = _vocab_size(model)
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or (vocab is not None and hi >= vocab):
            raise ValueError(
                f"input_ids: expected ids in [0, {vocab if vocab is not None else 'vocab'}) for "
                f"{type(model).__name__}'s embedding, received min {lo}, max {hi} (was the text "
                "tokenized with this model's tokenizer?)"
            )


def _position_limit(model: Any) -> int | None:
    """How many positions a model with a learned position table has; None for rotary / relative ones."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if getattr(config, "rope_scaling", None) is not None or getattr(config, "rope_parameters", None) is not None:
        return None  # rotary: no table to index past; long inputs run (quality aside)
    if hasattr(config, "rope_theta") or hasattr(config, "rotary_dim") or hasattr(config, "rotary_pct"):
        return None
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"):
        limit -= 2  # positions start after the padding index
    return limit


_LONG_ADVICE = (
    "split the text, or capture a long-context model with attn_widgets.trace_lazy(...), which also "
    "keeps memory small at thousands of tokens."
)


def _check_positions(model: Any, n_tokens: int, advice: str = _LONG_ADVICE) -> None:
    """Refuse more tokens than the model's learned position table holds (rotary models have none)."""
    limit = _position_limit(model)
    if limit is not None and n_tokens > limit:
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        raise ValueError(
            f"text: {n_tokens} tokens, but {name} has {limit} positions (config.max_position_embeddings / "
            f"n_positions). Pass max_length={limit} (or less) to truncate, {advice}"
        )


def _check_dense_capture(model: Any, n_tokens: int, gradients: bool) -> None:
    """Refuse a capture whose ``[L, H, T, T]`` arrays would not fit, from the config alone."""
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    if isinstance(layers, int) and isinstance(heads, int) and layers > 0 and heads > 0:
        # Peak of the capture: the returned arrays plus the graph's copy of the weights.
        check_dense_size(layers, heads, n_tokens, n_tokens, gradients=gradients, overhead=1.5, what="text")


def _model_inputs(model: Any, inputs: dict) -> dict:
    """Only the inputs the model's ``forward`` accepts and means.

    A tokenizer of another family (the BERT tokenizer of ``tiny_gpt2``) returns
    ``token_type_ids``; GPT-2 accepts them and embeds them with its *word* embeddings,
    which shifts every position. Models without segment embeddings do not get them."""
    import inspect

    out = dict(inputs)
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        out = {k: v for k, v in out.items() if k in params}
    config = getattr(model, "config", None)
    if "token_type_ids" in out and not (getattr(config, "type_vocab_size", 0) or 0) > 0:
        del out["token_type_ids"]
    return out


def _call_tokenizer(tokenizer: Any, texts: Any, text_pair: Any, max_length: int | None) -> dict:
    """Tokenize with a transformers tokenizer, a ``tokenizers.Tokenizer`` or a minimal callable."""
    if not callable(tokenizer) and callable(getattr(tokenizer, "encode", None)):
        # tokenizers.Tokenizer: encode(text, pair) -> Encoding with ids, type ids and a special mask.
        if not isinstance(texts, str):
            raise TypeError("tokenizer: a tokenizers.Tokenizer encodes one text at a time; pass a string")
        encoding = tokenizer.encode(texts, text_pair) if text_pair is not None else tokenizer.encode(texts)
        enc = {"input_ids": list(encoding.ids)}
        for key, attr in (("token_type_ids", "type_ids"), ("special_tokens_mask", "special_tokens_mask")):
            values = getattr(encoding, attr, None)
            if values is not None and len(values) == len(encoding.ids):
                enc[key] = list(values)
    elif callable(tokenizer):
        args = (texts,) if text_pair is None else (texts, text_pair)
        kwargs = dict(
            return_tensors="pt", padding=True, truncation=max_length is not None, max_length=max_length,
            return_special_tokens_mask=True,
        )
        try:
            enc = tokenizer(*args, **kwargs)
        except TypeError:
            # A minimal callable (text -> {"input_ids": ...}) that takes no keyword arguments.
            enc = tokenizer(*args)
    else:
        raise TypeError(
            f"tokenizer: expected a callable tokenizer (transformers) or a tokenizers.Tokenizer, "
            f"received {type(tokenizer).__name__}"
        )
    sequence_ids = None
    if text_pair is not None and callable(getattr(enc, "sequence_ids", None)) and "token_type_ids" not in enc:
        try:
            sequence_ids = enc.sequence_ids(0)
        except Exception:  # slow tokenizers have no alignment
            sequence_ids = None
    if not hasattr(enc, "keys"):
        enc = {"input_ids": enc}  # a callable returning the ids themselves
    if "input_ids" not in enc:
        raise TypeError(
            f"tokenizer: calling {type(tokenizer).__name__} returned {type(enc).__name__} with keys "
            f"{sorted(enc.keys())}; expected a mapping with 'input_ids'"
        )
    enc = {k: v for k, v in dict(enc).items() if v is not None}
    if sequence_ids is not None:
        # Segment of each token; special tokens (None) belong to the segment they close.
        seg, current = [], 0
        for sid in sequence_ids:
            current = current if sid is None else int(sid)
            seg.append(current)
        enc["_segment_ids"] = [seg]
    return enc


def _as_encoding(enc: dict) -> dict:
    torch = _torch()
    out = {}
    for k, v in enc.items():
        if not isinstance(v, torch.Tensor):
            try:
                v = torch.as_tensor(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{k}: expected an array of token ids, received {type(v).__name__}") from exc
        out[k] = v
    return out


def _segments(segment_ids: Sequence[int]) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` runs of equal segment id."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(segment_ids) + 1):
        if i == len(segment_ids) or segment_ids[i] != segment_ids[start]:
            runs.append((start, i))
            start = i
    return runs


def _default_special(tokens: Sequence[str]) -> Any:
    from ..trace import DEFAULT_SPECIAL_TOKENS

    mask = [t.strip() in DEFAULT_SPECIAL_TOKENS for t in tokens]
    return np.array(mask, dtype=bool) if any(mask) else None


def trace(
    model: Any,
    tokenizer: Any,
    text: str | Any,
    target: Any = None,
    *,
    text_pair: str | None = None,
    position: int | None = None,
    batch_index: int | None = None,
    gradients: bool = True,
    max_length: int | None = None,
    label: str | None = None,
    contributions: bool = False,
) -> AttentionTrace:
    """Run ``model`` on ``text`` and capture every layer's attention and its gradient.

    Parameters
    ----------
    model, tokenizer
        A `transformers` model and its tokenizer. sdpa / flash attention is switched to
        eager for the capture and restored afterwards; train mode likewise. The tokenizer
        may also be a ``tokenizers.Tokenizer`` or any callable ``text -> {"input_ids": ...}``
        (token strings then come from ``id_to_token`` or are the ids as text), or None when
        ``text`` is already tokenized.
    text
        A string; a list of strings with ``batch_index`` picking one (padding is cropped);
        an already tokenized ``BatchEncoding`` / dict with ``input_ids``; or input ids
        (``[T]`` / ``[B, T]`` list, array or tensor).
    target
        What the gradients are taken of. ``None`` picks by model type: causal LM -> logit
        of the predicted next token at ``position`` (default: last); sequence
        classification -> predicted class logit; bare encoder -> norm of the mean-pooled
        last hidden state. An int selects a vocabulary / class index; a callable
        ``outputs -> scalar tensor`` is used as is.
    text_pair
        The second sentence of a pair (BERT-style ``[CLS] a [SEP] b [SEP]``). The segment of
        each token is kept in ``trace.meta["segment_ids"]`` and the runs in
        ``trace.meta["segments"]`` (``[(start, stop), ...]``).
    batch_index
        Which sequence of a batch (list of strings, ``[B, T]`` ids) to capture; required
        when there is more than one.
    gradients
        Set False to skip the backward pass.
    contributions
        Also record, in the same forward pass, what the contribution methods need: the
        trace's ``value_norms`` ``[L, H, T]``, ``mixed_norms`` ``[L, T, T]`` and ALTI
        ``contributions`` ``[L, T, T]`` (see :mod:`attn_widgets.capture.contrib`; BERT /
        RoBERTa, GPT-2 and Llama-style models).
    max_length
        Truncate to this many tokens (an int >= 1).
    label
        Description of the target in titles (default: from the model, or the callable's name).

    Before the model runs, the token count is checked against the model's positions and
    the size of the ``[L, H, T, T]`` arrays against the memory available; the capture
    copies each layer to the CPU as float32 as it goes, and the trace records the model's
    dtype in ``meta["dtype"]``.
    """
    torch = _torch()
    _check_model(model)
    if not isinstance(gradients, (bool, np.bool_)):
        raise TypeError(f"gradients: expected True or False, received {gradients!r}")
    max_length = _check_int_arg(max_length, "max_length", low=1)
    position = _check_int_arg(position, "position")
    if label is not None and not isinstance(label, str):
        raise TypeError(f"label: expected a string or None, received {type(label).__name__}")
    if isinstance(target, str):
        raise TypeError(
            f"target: received the string {target!r}; a target is None, an int (vocabulary / class index) "
            f"or a callable. For a sentence pair pass text_pair={target!r}."
        )
    if text_pair is not None:
        if not isinstance(text_pair, str):
            raise TypeError(f"text_pair: expected a string, received {type(text_pair).__name__}")
        if not isinstance(text, str):
            raise TypeError("text_pair: needs text to be a single string (the first sentence)")
        if not text_pair.strip():
            raise ValueError("text_pair: received an empty string")
    if tokenizer is None and isinstance(text, str):
        raise ValueError("tokenizer: a tokenizer is needed to encode text")
    if isinstance(text, str):
        if not text.strip():
            raise ValueError("text: received an empty string; there is nothing to attend to")
        texts: Any = text
    elif isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
        if any(not t.strip() for t in text):
            raise ValueError("text: the batch contains an empty string")
        if len(text) > 1 and batch_index is None:
            raise ValueError(
                f"text: received a {type(text).__name__} of {len(text)} strings. For a sentence pair pass "
                "trace(model, tok, first, text_pair=second); for a batch pass batch_index= to choose "
                "the sequence to capture (one trace is one sequence)."
            )
        texts = list(text)
    else:
        texts = None

    if texts is not None:
        enc = _call_tokenizer(tokenizer, texts, text_pair, max_length)
    elif hasattr(text, "keys") and "input_ids" in text:
        enc = dict(text)
    elif hasattr(text, "shape") or (isinstance(text, (list, tuple)) and text):
        enc = {"input_ids": text}
    else:
        raise TypeError(
            f"text: expected a string, a list of strings, input ids or a tokenized batch, received {type(text).__name__}"
        )
    enc = _as_encoding(enc)
    _check_input_ids(enc["input_ids"], model)
    if enc["input_ids"].ndim == 1:
        enc = {k: v.unsqueeze(0) if v.ndim == 1 else v for k, v in enc.items()}
    if max_length is not None and enc["input_ids"].shape[1] > max_length:
        # Tokenizers that ignore max_length (minimal callables, tokenizers.Tokenizer, pre-tokenized input).
        enc = {k: v[:, :max_length] if v.ndim == 2 else v for k, v in enc.items()}
    n_batch = int(enc["input_ids"].shape[0])
    if batch_index is None:
        if n_batch > 1:
            raise ValueError(
                f"batch_index: the input is a batch of {n_batch} sequences; pass batch_index= to choose "
                "the one to capture (one trace is one sequence)"
            )
        batch_index = 0
    # One sequence at a time: select it, then crop its padding.
    sel, ids, special = _select_sequence(enc, batch_index, tokenizer)
    segment_ids = sel.pop("_segment_ids", None)
    if segment_ids is None and (text_pair is not None or "token_type_ids" in sel):
        types = sel.get("token_type_ids")
        if types is not None and (text_pair is not None or int(types.max()) > 0):
            segment_ids = types
    n_tokens = len(ids)
    if position is None:
        position = n_tokens - 1
    if not -n_tokens <= position < n_tokens:
        raise ValueError(f"position: expected -{n_tokens} <= position < {n_tokens}, received {position}")
    position = position % n_tokens
    _check_positions(model, n_tokens)
    _check_dense_capture(model, n_tokens, bool(gradients))

    tokens = _display_tokens(tokenizer, ids) if tokenizer is not None else [str(i) for i in ids]
    if special is None and tokenizer is not None:
        special = _default_special(tokens)
    device = _model_device(model)
    kind = model_kind(model)
    sel = _model_inputs(model, {k: v.to(device) for k, v in sel.items()})
    # Called inside torch.inference_mode(): gradients need a normal autograd context, and
    # tensors made under inference mode cannot be saved for backward: clone them out of it.
    leave_inference = bool(gradients) and torch.is_inference_mode_enabled()
    grad_mode = torch.inference_mode(False) if leave_inference else contextlib.nullcontext()
    with grad_mode, eager_attention(model), _eval_mode(model), torch.enable_grad(), \
            recording(model, bool(contributions)) as rec:
        if leave_inference:
            sel = {k: v.clone() for k, v in sel.items()}
        attn_np, grad_np, desc, dtype, contrib = _capture(
            model, sel, gradients, kind, target, position, tokenizer, label, rec
        )
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    causal = kind in ("causal_lm", "decoder") or looks_causal(attn_np)
    meta: dict = {"kind": kind, "position": position, "dtype": dtype}
    if segment_ids is not None:
        seg = [int(v) for v in (segment_ids[0].tolist() if hasattr(segment_ids, "tolist") else segment_ids[0])]
        meta["segment_ids"] = tuple(seg)
        meta["segments"] = _segments(seg)
    return AttentionTrace(
        tokens=tuple(tokens),
        attentions=_adopt(attn_np),
        gradients=None if grad_np is None else _adopt(grad_np),
        target=desc,
        causal=causal,
        special_mask=None if special is None else np.asarray(special.cpu() if hasattr(special, "cpu") else special).astype(bool),
        model_name=str(name),
        token_ids=tuple(ids),
        meta=meta,
        **contrib,
    )


def _capture(model, inputs, gradients, kind, target, position, tokenizer, label, rec=None):
    """Forward (and backward), each layer copied into preallocated float32 CPU arrays as it comes.

    Peak memory is the returned arrays plus the autograd graph's own weights: no stacked
    copies, no tuple of all gradients at once (each layer's gradient is copied out by a
    tensor hook during the backward pass and then freed), the graph freed as it is walked.
    """
    torch = _torch()
    try:
        outputs, attentions = _forward(model, inputs, gradients)
    except RuntimeError as exc:
        if "Inference tensors" in str(exc):
            raise ValueError(
                "model: its parameters were created under torch.inference_mode(), so no gradient can be "
                "taken through them; load the model outside inference_mode, or pass gradients=False"
            ) from exc
        raise
    shapes = {tuple(a.shape[1:]) for a in attentions}
    if len(shapes) != 1:
        raise ValueError(f"attentions: layers have different shapes {sorted(shapes)}")
    n_layers = len(attentions)
    dtype = str(attentions[0].dtype).replace("torch.", "")
    attn_np = np.empty((n_layers,) + tuple(attentions[0].shape[1:]), dtype=np.float32)
    for k, a in enumerate(attentions):
        torch.from_numpy(attn_np[k]).copy_(a[0].detach())  # one layer at a time: device -> CPU, cast
    # Contribution methods read the recorded block inputs and values (no graph needed).
    contrib = {} if rec is None else compute_contributions(rec.blocks(), attentions)
    if not gradients:
        return attn_np, None, None, dtype, contrib
    y, desc = _resolve_target(kind, outputs, target, position, tokenizer, getattr(model, "config", None), label)
    if label is not None:
        desc = label
    # Zeros stay where y does not depend on a layer. np.zeros (calloc) touches no page until
    # a hook writes it; np.zeros_like would write the whole array now.
    grad_np = np.zeros(attn_np.shape, dtype=np.float32)
    done = [False] * n_layers

    def _hook(k):
        def hook(g):
            torch.from_numpy(grad_np[k]).copy_(g[0].detach())
            done[k] = True

        return hook

    handles = [a.register_hook(_hook(k)) for k, a in enumerate(attentions) if a.requires_grad]
    # Gradients are asked for the first layer only: the walk from y down to it passes
    # every later layer's weights, whose hooks copy their gradient out on the way.
    root = attentions[0]
    del outputs, attentions
    try:
        (g0,) = torch.autograd.grad(y, [root], allow_unused=True)
        if g0 is not None and not done[0]:
            torch.from_numpy(grad_np[0]).copy_(g0[0].detach())
    finally:
        for h in handles:
            h.remove()
    return attn_np, grad_np, desc, dtype, contrib


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
