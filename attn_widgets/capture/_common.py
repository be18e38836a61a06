"""Plumbing shared by the capture modules: torch import, argument checks, callable targets."""

from __future__ import annotations

from typing import Any

import numpy as np


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "attn_widgets.trace needs PyTorch. Install the build you want, e.g. "
            "`pip install torch`, or build traces with AttentionTrace.from_tensors()."
        ) from exc
    return torch


def _check_index(target: Any, n: int, what: str) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"{what}: expected an int or a callable, received {target!r}")
    if not -n <= int(target) < n:
        raise ValueError(f"{what}: expected -{n} <= target < {n}, received {target}")
    return int(target) % n


def _check_batch_index(batch_index: int, n_batch: int) -> None:
    if not -n_batch <= batch_index < n_batch:
        raise ValueError(f"batch_index: expected -{n_batch} <= batch_index < {n_batch}, received {batch_index}")


def _callable_target(target: Any, outputs: Any, arg: str = "outputs"):
    """``target(outputs)`` as a 0-d tensor, and its description ``custom target name(arg)``."""
    torch = _torch()
    y = target(outputs)
    if not isinstance(y, torch.Tensor) or y.numel() != 1:
        raise ValueError(
            "target: a callable target must return a scalar tensor, "
            f"received {type(y).__name__}{tuple(y.shape) if isinstance(y, torch.Tensor) else ''}"
        )
    return y.reshape(()), f"custom target {getattr(target, '__name__', 'callable')}({arg})"


def _attention_grads(y: Any, attentions: Any) -> list:
    """``d y / d`` each attention tensor in one backward call; zeros where ``y`` does not depend on it."""
    torch = _torch()
    grads = torch.autograd.grad(y, attentions, allow_unused=True)
    return [torch.zeros_like(a) if g is None else g for a, g in zip(attentions, grads)]


def _select_sequence(enc: dict, batch_index: int, tokenizer: Any):
    """One sequence of a tokenized batch ``enc`` (tensors ``[B, T]``), its padding cropped.

    Returns ``(inputs, ids, special)``: the inputs of that sequence (``[1, T']``), its token
    ids and its special-token mask (from ``enc["special_tokens_mask"]``, which is taken out of
    ``enc``, else from the tokenizer; None without either)."""
    torch = _torch()
    _check_batch_index(batch_index, enc["input_ids"].shape[0])
    if enc["input_ids"].shape[1] == 0:
        raise ValueError("text: tokenization produced no tokens")
    special = enc.pop("special_tokens_mask", None)
    sel = {k: v[batch_index : batch_index + 1] for k, v in enc.items() if isinstance(v, torch.Tensor)}
    if "attention_mask" in sel:
        keep = sel["attention_mask"][0].bool()
        if not keep.any():
            raise ValueError("text: the selected sequence is all padding")
        sel = {k: v[:, keep] if v.ndim == 2 and v.shape[1] == keep.shape[0] else v for k, v in sel.items()}
        if special is not None:
            special = special[batch_index][keep.cpu()]
    elif special is not None:
        special = special[batch_index]
    ids = sel["input_ids"][0].tolist()
    if special is None and tokenizer is not None:
        special = torch.tensor(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), dtype=torch.bool)
    return sel, ids, special
