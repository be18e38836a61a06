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


def _check_batch_index(batch_index: Any, n_batch: int) -> int:
    """``batch_index`` as an index in ``[0, n_batch)`` (negative ones count from the end)."""
    if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
        raise TypeError(f"batch_index: expected an int, received {batch_index!r}")
    if not -n_batch <= batch_index < n_batch:
        raise ValueError(f"batch_index: expected -{n_batch} <= batch_index < {n_batch}, received {batch_index}")
    # Normalised here: a raw -1 would slice [-1:0], an empty batch.
    return int(batch_index) % n_batch


def _callable_name(target: Any) -> str:
    """A short name for a callable target: its ``__name__`` (of the wrapped function for a
    ``functools.partial``), the class name for a callable object, ``lambda`` for a lambda."""
    func = getattr(target, "func", target)  # functools.partial
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if not isinstance(name, str) or not name:
        name = type(func).__name__
    name = name.split(".")[-1] if "<locals>" in name else name
    if name == "<lambda>":
        return "lambda"
    # A name is a label, not a paragraph: headers show it on one line.
    return name if len(name) <= 40 else name[:39] + "\u2026"


def _callable_target(target: Any, outputs: Any, arg: str = "outputs", label: str | None = None):
    """``target(outputs)`` as a 0-d tensor in the autograd graph, and its description.

    The description is ``label`` when given, else ``custom target <name>`` (see
    :func:`_callable_name`)."""
    torch = _torch()
    name = _callable_name(target)
    try:
        y = target(outputs)
    except Exception as exc:
        raise ValueError(
            f"target: the target callable {name!r} raised {type(exc).__name__}: {exc}. It is called as "
            f"target({arg}) with the model's output object and must return a scalar tensor."
        ) from exc
    if not isinstance(y, torch.Tensor) or y.numel() != 1:
        raise ValueError(
            "target: a callable target must return a scalar tensor, "
            f"received {type(y).__name__}{tuple(y.shape) if isinstance(y, torch.Tensor) else ''}"
        )
    if not (y.dtype.is_floating_point or y.dtype.is_complex):
        raise TypeError(
            f"target: a callable target must return a floating point scalar (gradients are taken of it), "
            f"received a {y.dtype} tensor from {name!r}; an argmax or an index is not differentiable"
        )
    if not y.requires_grad:
        raise ValueError(
            f"target: the scalar returned by {name!r} is not connected to the model (requires_grad=False: "
            "a constant, or detached with .detach() / .item() / torch.no_grad()); return an expression of "
            f"the {arg} tensors so its gradient can be taken"
        )
    if label is not None:
        return y.reshape(()), str(label)
    return y.reshape(()), f"custom target {name}({arg})"


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
    batch_index = _check_batch_index(batch_index, enc["input_ids"].shape[0])
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
    if special is None and callable(getattr(tokenizer, "get_special_tokens_mask", None)):
        special = torch.tensor(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), dtype=torch.bool)
    return sel, ids, special
