"""Build an AttentionTrace from a TransformerLens activation cache (optional extra ``lens``).

Nothing here imports ``transformer_lens``: a cache is read through its mapping interface,
so an ``ActivationCache`` and a plain ``{name: tensor}`` dict both work.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from ..trace import AttentionTrace, looks_causal
from ._common import _check_batch_index

__all__ = ["from_transformer_lens"]

_PATTERN = re.compile(r"^blocks\.(\d+)\.attn\.hook_pattern$")


def _cache_keys(cache: Any) -> list[str]:
    keys = getattr(cache, "keys", None)
    if not callable(keys):
        raise TypeError(
            f"cache: expected a TransformerLens ActivationCache or a dict of tensors, "
            f"received {type(cache).__name__}"
        )
    return [str(k) for k in keys()]


def _layer(cache: Any, key: str, batch_index: int) -> np.ndarray:
    value = cache[key]
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 4:
        _check_batch_index(batch_index, arr.shape[0])
        arr = arr[batch_index]
    if arr.ndim != 3:
        raise ValueError(
            f"cache[{key!r}]: expected [batch, head, query, key] or [head, query, key], "
            f"received shape {arr.shape}"
        )
    return arr


def from_transformer_lens(
    cache: Any,
    tokens: Sequence[str],
    *,
    batch_index: int = 0,
    target: str | None = None,
    causal: bool | None = None,
    special_mask: Any = None,
    model_name: str | None = None,
) -> AttentionTrace:
    """An :class:`AttentionTrace` from the ``blocks.{l}.attn.hook_pattern`` entries of a cache.

    Parameters
    ----------
    cache
        ``ActivationCache`` from ``model.run_with_cache(...)`` (batched or with
        ``remove_batch_dim=True``), or any mapping with the same keys.
    tokens
        The query token strings, e.g. ``model.to_str_tokens(text)``.
    target
        Description of the gradients, if the cache holds them. Gradients are read from
        ``blocks.{l}.attn.hook_pattern_grad`` when present for every layer, as the caching
        hooks store them with ``incl_bwd=True``::

            cache, fwd, bwd = model.get_caching_hooks(
                lambda n: n.endswith("hook_pattern"), incl_bwd=True)
            with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
                model(ids)[0, -1, token_id].backward()
            trace = from_transformer_lens(cache, model.to_str_tokens(ids))
    causal
        ``None``: the model's ``cfg.attention_dir == "causal"`` when the cache knows its
        model, else detected from the weights.
    """
    keys = _cache_keys(cache)
    layers = sorted((int(m.group(1)), k) for k in keys if (m := _PATTERN.match(k)))
    if not layers:
        raise ValueError(
            "cache: no 'blocks.{layer}.attn.hook_pattern' entries; run the model with "
            "run_with_cache() (without a names_filter that drops the attention patterns)"
        )
    numbers = [n for n, _ in layers]
    if numbers != list(range(len(numbers))):
        raise ValueError(f"cache: attention patterns for layers {numbers}; expected 0..{len(numbers) - 1} without gaps")
    attn = np.stack([_layer(cache, k, batch_index) for _, k in layers])

    grads = None
    grad_keys = [k + "_grad" for _, k in layers]
    present = [k in keys for k in grad_keys]
    if all(present):
        grads = np.stack([_layer(cache, k, batch_index) for k in grad_keys])
    elif any(present):
        missing = [k for k, p in zip(grad_keys, present) if not p]
        raise ValueError(f"cache: gradients for some layers only; missing {missing[:3]}")
    if grads is not None and target is None:
        target = "gradient cached with the activations (target not given)"

    model = getattr(cache, "model", None)
    cfg = getattr(model, "cfg", None)
    if causal is None:
        direction = getattr(cfg, "attention_dir", None)
        causal = direction == "causal" if direction is not None else looks_causal(attn)
    if model_name is None:
        model_name = str(getattr(cfg, "model_name", "") or "")
    return AttentionTrace(
        tokens=tuple(tokens),
        attentions=attn,
        gradients=grads,
        target=target if grads is not None else None,
        causal=bool(causal),
        special_mask=special_mask,
        model_name=model_name,
        meta={"kind": "transformer_lens"},
    )
