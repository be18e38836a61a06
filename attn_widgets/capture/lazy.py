"""Capture queries and keys (not attention weights) from a `transformers` model.

:func:`trace_lazy` runs one forward pass **without** ``output_attentions`` and records,
for every self-attention call, the ``query`` and ``key`` tensors the attention function
receives (after rotary embeddings, in the layout ``[B, H, T, d]``), the scaling, the
mask, and any soft-capping. It hooks transformers' attention dispatch
(``ALL_ATTENTION_FUNCTIONS``, the interface every modern model - GPT-2, BERT, Llama,
Mistral, Qwen, ... - calls with exactly these tensors): for the duration of the capture
the model runs sdpa (memory-efficient, never materialising ``[H, T, T]``), and the
``"sdpa"`` entry is wrapped by a recorder that only records calls from this model's
modules in this thread. The model's attention implementation and the dispatch table are
restored afterwards, also when the forward raises.

The result is a :class:`~attn_widgets.LazyTrace`: at T = 4096 on a 32 x 32 model with
head size 8, 256 MiB of queries and keys instead of 64 GiB of maps.

Gradients are out of scope here: the forward runs under ``torch.no_grad()`` and the
trace has none. Use :func:`attn_widgets.trace` for gradient-based flows (short texts).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Sequence

import numpy as np

from ..lazy import LazyTrace
from ._common import _select_sequence, _torch
from .huggingface import (
    _check_input_ids,
    _check_model,
    _display_tokens,
    _eval_mode,
    _get_attn_impl,
    _model_device,
    _model_inputs,
    _check_positions,
    model_kind,
)

__all__ = ["trace_lazy", "long_context_model", "LazyCaptureError"]


class LazyCaptureError(RuntimeError):
    """The model's attention could not be recorded as queries and keys."""


@contextlib.contextmanager
def _attn_implementation(model: Any, name: str) -> Iterator[str]:
    """Temporarily switch a transformers model to attention implementation ``name``."""
    original = _get_attn_impl(model)
    if original is None or original == name:
        yield original or name
        return
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter(name)
        try:
            yield name
        finally:
            setter(original)
    else:
        model.config._attn_implementation = name
        try:
            yield name
        finally:
            model.config._attn_implementation = original


class _Recorder:
    """Wraps one attention function; records (q, k, mask, scaling, extras) per call."""

    def __init__(self, original, modules: set[int], batch_index: int, dtype) -> None:
        self.original = original
        self.modules = modules
        self.thread = threading.get_ident()
        self.batch_index = batch_index
        self.dtype = dtype
        self.calls: list[dict] = []

    def __call__(self, module, query, key, value, attention_mask, *args, **kwargs):
        if id(module) in self.modules and threading.get_ident() == self.thread:
            self.record(module, query, key, attention_mask, kwargs)
        return self.original(module, query, key, value, attention_mask, *args, **kwargs)

    def record(self, module, query, key, mask, kwargs) -> None:
        name = type(module).__name__
        if getattr(module, "is_cross_attention", False) or query.shape[2] != key.shape[2]:
            return  # cross-attention (encoder-decoder) or cached decoding: not self-attention maps
        for unsupported in ("position_bias", "s_aux", "sinks"):
            if kwargs.get(unsupported) is not None:
                raise LazyCaptureError(
                    f"{name}: attention with {unsupported!r} (additive biases / sinks) is not supported "
                    "by trace_lazy; use attn_widgets.trace() on a shorter text"
                )
        b = self.batch_index if query.shape[0] > 1 else 0
        # One copy each (below), straight into C-contiguous [H, T, d] of the storage dtype;
        # never a view of the model's own buffers.
        q = query[b].detach().to("cpu", dtype=_torch().float32)
        k = key[b].detach().to("cpu", dtype=_torch().float32)
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        allowed = None
        if mask is not None:
            m = mask[b if mask.shape[0] > 1 else 0]
            if m.ndim == 3 and m.shape[0] == 1:
                m = m[0]  # [1, Tq, Tk] -> [Tq, Tk]: one mask for all heads
            if m.ndim != 2:
                raise LazyCaptureError(f"{name}: per-head attention masks {tuple(mask.shape)} are not supported")
            if m.dtype.is_floating_point:
                big = m < _min_half(m)
                if bool((m[~big] != 0).any()):
                    raise LazyCaptureError(
                        f"{name}: the additive attention mask carries biases (not just 0 / -inf); "
                        "trace_lazy only records masks, use attn_widgets.trace() instead"
                    )
                m = ~big
            allowed = m.to("cpu", dtype=_torch().bool).numpy().copy()
        self.calls.append(
            {
                "module": name,
                "q": np.array(q.numpy(), dtype=self.dtype, order="C", copy=True),
                "k": np.array(k.numpy(), dtype=self.dtype, order="C", copy=True),
                "scaling": float(scaling),
                "softcap": kwargs.get("softcap"),
                "causal": bool(is_causal) and mask is None and query.shape[2] > 1,
                "allowed": allowed,
            }
        )


def _min_half(m):
    return _torch().finfo(m.dtype).min / 2


@contextlib.contextmanager
def _recording(model: Any, batch_index: int, dtype) -> Iterator[_Recorder]:
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("trace_lazy needs `transformers` (pip install transformers)") from exc
    modules = {id(m) for m in model.modules()}
    with _attn_implementation(model, "sdpa") as impl:
        local = ALL_ATTENTION_FUNCTIONS._local_mapping
        had = impl in local
        previous = local.get(impl)
        try:
            original = ALL_ATTENTION_FUNCTIONS[impl]
        except KeyError:
            raise LazyCaptureError(
                f"attention implementation {impl!r} is not in transformers' AttentionInterface; "
                "trace_lazy needs a model that dispatches through it (sdpa)"
            ) from None
        rec = _Recorder(original, modules, batch_index, dtype)
        ALL_ATTENTION_FUNCTIONS[impl] = rec
        try:
            yield rec
        finally:
            if had:
                local[impl] = previous
            else:
                local.pop(impl, None)


def _encode(tokenizer: Any, text: Any, max_length: int | None, add_special_tokens: bool) -> dict:
    torch = _torch()
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("tokenizer: a tokenizer is needed to encode text (or pass input ids)")
        if not text.strip():
            raise ValueError("text: received an empty string; there is nothing to attend to")
        enc = tokenizer(
            text,
            return_tensors="pt",
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=add_special_tokens,
            return_special_tokens_mask=True,
        )
        enc = dict(enc)
    elif hasattr(text, "keys") and "input_ids" in text:
        enc = dict(text)
    else:
        try:
            ids = torch.as_tensor(np.asarray(text.detach().cpu() if hasattr(text, "detach") else text))
        except (TypeError, ValueError):
            raise TypeError(
                f"text: expected a string, input ids (list / array / tensor) or a tokenized batch, "
                f"received {type(text).__name__}"
            ) from None
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"text: input ids must be integers, received dtype {ids.dtype}")
        enc = {"input_ids": ids}
    enc = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in enc.items()}
    if enc["input_ids"].ndim == 1:
        enc = {k: v.unsqueeze(0) if v.ndim == 1 else v for k, v in enc.items()}
    if enc["input_ids"].ndim != 2:
        raise ValueError(f"text: expected input ids of shape [T] or [B, T], received {tuple(enc['input_ids'].shape)}")
    if max_length is not None and enc["input_ids"].shape[1] > max_length:
        enc = {k: v[:, :max_length] if v.ndim == 2 else v for k, v in enc.items()}
    return enc


def trace_lazy(
    model: Any,
    tokenizer: Any,
    text: Any,
    *,
    max_length: int | None = None,
    batch_index: int = 0,
    dtype: str = "float32",
    tokens: Sequence[str] | None = None,
    add_special_tokens: bool = True,
) -> LazyTrace:
    """Run ``model`` once and keep each layer's queries and keys: a :class:`LazyTrace`.

    For long contexts, where :func:`attn_widgets.trace` (``[L, H, T, T]`` weights and
    gradients) does not fit in memory. No ``output_attentions``: the model runs sdpa,
    and each self-attention call's ``query`` / ``key`` are copied to the CPU.

    Parameters
    ----------
    model
        A `transformers` model whose attention goes through ``ALL_ATTENTION_FUNCTIONS``
        (GPT-2, BERT, Llama, Mistral, Qwen, ...). Only its base model runs (no LM head:
        ``[T, vocab]`` logits are not needed). Train mode and the attention
        implementation are restored afterwards.
    tokenizer
        Its tokenizer, or None when ``text`` is already token ids.
    text
        A string; input ids (list, array or tensor, ``[T]`` or ``[B, T]``); or a
        tokenized ``BatchEncoding`` / dict with ``input_ids``. Padding (attention mask 0)
        of the selected sequence is cropped before the forward pass.
    max_length
        Truncate to this many tokens.
    dtype
        Storage of queries and keys, ``"float32"`` or ``"float16"``.
    tokens
        Token strings to show (default: from the tokenizer, else the ids as text).

    Gradients are not supported for lazy traces.
    """
    torch = _torch()
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected 'float32' or 'float16', received {dtype!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length: expected None or an int >= 1, received {max_length!r}")
    _check_model(model)
    enc = _encode(tokenizer, text, max_length, add_special_tokens)
    _check_input_ids(enc["input_ids"], model)
    sel, ids, special = _select_sequence(enc, batch_index, tokenizer)
    n_tokens = len(ids)
    _check_positions(
        model, n_tokens,
        "or use a model with rotary positions (Llama, Qwen, Mistral, ...; see long_context_model())",
    )
    if tokens is not None:
        tokens = list(tokens)
        if len(tokens) != n_tokens:
            raise ValueError(f"tokens: expected {n_tokens} strings for the {n_tokens} input ids, received {len(tokens)}")
    elif tokenizer is not None:
        tokens = _display_tokens(tokenizer, ids)
    else:
        tokens = [str(i) for i in ids]

    device = _model_device(model)
    base = getattr(model, "base_model", model) or model
    sel = _model_inputs(base, {k: v.to(device) for k, v in sel.items()})
    np_dtype = np.dtype(dtype)
    with _eval_mode(model), torch.no_grad(), _recording(model, 0, np_dtype) as rec:
        extra = {"use_cache": False} if _accepts_use_cache(base) else {}
        base(**sel, **extra, output_attentions=False, return_dict=True)
    calls = rec.calls
    if not calls:
        raise LazyCaptureError(
            f"{type(model).__name__}: no attention call was recorded. trace_lazy needs a transformers model "
            "that dispatches attention through ALL_ATTENTION_FUNCTIONS (sdpa); capture older architectures "
            "with attn_widgets.trace() on a shorter text"
        )
    shapes = {(c["q"].shape, c["k"].shape) for c in calls}
    if len(shapes) != 1:
        raise LazyCaptureError(f"layers recorded different query/key shapes {sorted(shapes)}; not supported")
    t = calls[0]["q"].shape[1]
    masks, causal = _compact_masks(calls, t)
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    caps = [c["softcap"] for c in calls]
    return LazyTrace(
        tokens=tokens,
        queries=[c["q"] for c in calls],
        keys=[c["k"] for c in calls],
        scaling=[c["scaling"] for c in calls],
        causal=causal,
        mask=masks,
        softcap=None if all(c is None for c in caps) else caps,
        special_mask=None if special is None else special.cpu().numpy().astype(bool),
        model_name=str(name),
        token_ids=ids,
        meta={"kind": model_kind(model), "capture": "trace_lazy", "modules": sorted({c["module"] for c in calls})},
        dtype=dtype,
        copy=False,  # the recorder's arrays are ours alone: no second copy of q / k
    )


def _accepts_use_cache(model: Any) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "use_cache" in params


def _compact_masks(calls: list[dict], t: int) -> tuple[list, bool]:
    """Per-layer masks as (causal flag, extra [T, T] masks): plain causal or full masks are
    stored as nothing; identical extra masks are stored once."""
    tril = None
    kinds = []
    for c in calls:
        a = c["allowed"]
        if a is None:
            kinds.append(("causal" if c["causal"] else "full", None))
            continue
        if a.shape != (t, t):
            raise LazyCaptureError(f"{c['module']}: attention mask of shape {a.shape}, expected ({t}, {t})")
        if a.all():
            kinds.append(("full", None))
            continue
        if tril is None:
            tril = np.tri(t, dtype=bool)
        if np.array_equal(a, tril):
            kinds.append(("causal", None))
            continue
        kinds.append(("custom", a))
    # Causal when no layer lets a query see a future key.
    causal = all(k == "causal" or (k == "custom" and not np.triu(m, 1).any()) for k, m in kinds)
    if not causal and any(k == "causal" for k, _ in kinds):
        # Mixed: encode the causal layers as explicit masks.
        if tril is None:
            tril = np.tri(t, dtype=bool)
        kinds = [("custom", tril) if k == "causal" else (k, m) for k, m in kinds]
    masks: list = []
    distinct: list[np.ndarray] = []
    for k, m in kinds:
        if k != "custom" or (causal and tril is not None and np.array_equal(m, tril)):
            masks.append(None)
            continue
        for d in distinct:
            if d is m or np.array_equal(d, m):
                m = d
                break
        else:
            distinct.append(m)
        masks.append(m)
    return masks, causal


def long_context_model(
    kind: str = "gpt2",
    n_layer: int = 32,
    n_head: int = 32,
    n_embd: int = 256,
    n_positions: int = 4096,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A config-built model with random weights for long-context demos, tests and benchmarks.

    ``kind="gpt2"`` (causal) or ``"bert"`` (bidirectional); ``n_layer`` x ``n_head``
    with hidden size ``n_embd`` and ``n_positions`` positions; the demo (MiniLM)
    tokenizer, offline. Nothing is downloaded.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = _torch()
    from transformers import AutoTokenizer, BertConfig, BertModel, GPT2Config, GPT2Model

    from .demo import _minilm_path

    tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
    tokenizer.model_max_length = max(int(tokenizer.model_max_length or 0), n_positions)
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = GPT2Config(
            vocab_size=tokenizer.vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
            n_head=n_head, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
            attn_implementation="sdpa",
        )
        model = GPT2Model(config)
    elif kind == "bert":
        config = BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=n_embd, num_hidden_layers=n_layer,
            num_attention_heads=n_head, intermediate_size=4 * n_embd, max_position_embeddings=n_positions,
            attn_implementation="sdpa",
        )
        model = BertModel(config, add_pooling_layer=False)
    else:
        raise ValueError(f"kind: expected 'gpt2' or 'bert', received {kind!r}")
    model.config._name_or_path = f"{kind}-{n_layer}x{n_head}-d{n_embd}-random"
    model.eval()
    return model, tokenizer
