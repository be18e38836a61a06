"""Capture vision transformers (ViT, DeiT, ...): tokens are [CLS] plus image patches."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..trace import AttentionTrace
from ._common import _attention_grads, _callable_target, _check_batch_index, _check_index, _torch
from .huggingface import (
    _eval_mode,
    _get_attn_impl,
    _model_device,
    _to_cpu_numpy,
    eager_attention,
)

__all__ = ["trace_image", "patch_tokens"]


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{what}: expected an int or a pair, received {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def patch_tokens(rows: int, cols: int, n_special: int = 1) -> tuple[str, ...]:
    """Token labels of a ViT sequence: the special tokens, then ``p(row,col)`` row-major."""
    names = ["[CLS]", "[DIST]"] if n_special == 2 else ["[CLS]"] + [f"[REG{i}]" for i in range(1, n_special)]
    return tuple(names[:n_special]) + tuple(f"p({r},{c})" for r in range(rows) for c in range(cols))


def _display_image(pixels: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` float pixel values -> ``H x W x 3`` uint8, min-max scaled for display."""
    img = np.asarray(pixels, dtype=np.float64)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    img = img[:3]
    lo, hi = float(img.min()), float(img.max())
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return np.ascontiguousarray((scaled * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))


def _check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image: expected an H x W x 3 array, received shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = arr * 255.0 + 0.5
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def trace_image(
    model: Any,
    pixel_values: Any,
    target: Any = None,
    gradients: bool = True,
    *,
    batch_index: int = 0,
    image: Any = None,
) -> AttentionTrace:
    """Capture every layer's attention (and gradient) of a `transformers` vision transformer.

    Parameters
    ----------
    model
        ``ViTModel``, ``ViTForImageClassification`` or a sibling (DeiT, ...) whose config has
        ``patch_size``. sdpa is switched to eager for the capture and restored after.
    pixel_values
        ``[B, C, H, W]`` or ``[C, H, W]`` tensor / array, already preprocessed (as an image
        processor returns it). ``batch_index`` picks the image of a batch. Sizes other
        than ``config.image_size`` use ``interpolate_pos_encoding=True``.
    target
        ``None``: the predicted class logit (models with logits) or, for a bare model, the
        norm of ``pooler_output`` (the [CLS] last hidden state when there is no pooler).
        An int is a class index; a callable ``outputs -> scalar tensor`` is used as is.
    image
        What ``meta["image"]`` holds for display: ``None`` derives an ``H x W x 3`` uint8
        image from ``pixel_values`` (min-max scaled, since the normalisation is unknown);
        an array (or PIL image) is stored as uint8 ``H x W x 3``; ``False`` stores ``None``.

    Returns
    -------
    AttentionTrace
        Tokens ``("[CLS]", "p(0,0)", "p(0,1)", ...)`` (row-major patches; ``[DIST]`` /
        ``[REG i]`` for extra leading tokens), ``special_mask`` True on those, and
        ``meta = {"kind": "vision", "patch_grid": (rows, cols), "patch_size": (ph, pw),
        "image": array or None, "n_special": k}``.
    """
    torch = _torch()
    config = getattr(model, "config", None)
    pv = pixel_values
    if not isinstance(pv, torch.Tensor):
        pv = torch.as_tensor(np.asarray(pv))
    if pv.ndim == 3:
        pv = pv[None]
    if pv.ndim != 4:
        raise ValueError(f"pixel_values: expected [B, C, H, W] or [C, H, W], received shape {tuple(pv.shape)}")
    batch_index = _check_batch_index(batch_index, pv.shape[0])
    pv = pv[batch_index : batch_index + 1]
    if not pv.dtype.is_floating_point:
        raise TypeError(
            f"pixel_values: expected floating point pixel values (preprocessed), received {pv.dtype}"
        )
    channels = getattr(config, "num_channels", None)
    if channels is not None and pv.shape[1] != channels:
        raise ValueError(
            f"pixel_values: the model expects {channels} channels, received shape {tuple(pv.shape)} "
            "(channels first: [B, C, H, W])"
        )
    patch = getattr(config, "patch_size", None)
    if patch is None:
        raise ValueError(f"model: {type(model).__name__} has no config.patch_size; is it a vision transformer?")
    ph, pw = _pair(patch, "patch_size")
    height, width = int(pv.shape[2]), int(pv.shape[3])
    rows, cols = height // ph, width // pw
    if rows == 0 or cols == 0:
        raise ValueError(f"pixel_values: image {height}x{width} is smaller than one {ph}x{pw} patch")

    if image is None:
        display = _display_image(pv[0].detach().cpu().float().numpy())
    elif image is False:
        display = None
    else:
        display = _check_image(image)

    kwargs: dict = {}
    size = getattr(config, "image_size", None)
    if size is not None and _pair(size, "image_size") != (height, width):
        kwargs["interpolate_pos_encoding"] = True

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    device = _model_device(model)
    with eager_attention(model), _eval_mode(model), torch.enable_grad():
        # Pixels that require grad put every attention tensor in the graph even when the
        # weights are frozen; only d y / d attentions is computed, never d y / d pixels.
        x = pv.detach().to(device=device, dtype=dtype).requires_grad_(gradients)
        outputs = model(pixel_values=x, output_attentions=True, return_dict=True, **kwargs)
        attentions = getattr(outputs, "attentions", None)
        if not attentions or any(a is None for a in attentions):
            raise ValueError(
                f"attentions: {type(model).__name__} returned no attention weights "
                f"(attention implementation {_get_attn_impl(model)!r}). attn_widgets switches "
                "transformers models to eager attention for the capture; this model did not "
                "honour it. Load it with attn_implementation='eager'."
            )
        attentions = tuple(attentions)
        if gradients:
            y, desc = _image_target(outputs, target, config)
            grad_np = _to_cpu_numpy(_attention_grads(y, attentions))
        else:
            desc, grad_np = None, None
    attn_np = _to_cpu_numpy(attentions)

    n_tokens = attn_np.shape[-1]
    n_special = n_tokens - rows * cols
    if n_special < 0:
        raise ValueError(
            f"attentions: {n_tokens} tokens is fewer than the {rows}x{cols} patch grid of a "
            f"{height}x{width} image with {ph}x{pw} patches"
        )
    special = np.zeros(n_tokens, dtype=bool)
    special[:n_special] = True
    name = getattr(config, "_name_or_path", "") or type(model).__name__
    return AttentionTrace(
        tokens=patch_tokens(rows, cols, n_special),
        attentions=attn_np,
        gradients=grad_np,
        target=desc,
        causal=False,
        special_mask=special,
        model_name=str(name),
        meta={
            "kind": "vision",
            "patch_grid": (rows, cols),
            "patch_size": (ph, pw),
            "image": display,
            "n_special": n_special,
        },
    )


def _image_target(outputs: Any, target: Any, config: Any):
    if callable(target):
        return _callable_target(target, outputs)
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        row = logits[0]
        if target is None:
            idx, what = int(row.argmax()), "predicted class"
        else:
            idx, what = _check_index(target, row.shape[-1], "target (class index)"), "class"
        label = (getattr(config, "id2label", None) or {}).get(idx, str(idx))
        return row[idx], f"logit of {what} {label!r}"
    if target is not None:
        raise ValueError(
            "target: an integer target needs a model with logits (a classification head); "
            "this model has none. Pass target=callable(outputs) -> scalar tensor instead."
        )
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is not None:
        return pooled[0].norm(), "norm of the pooled output"
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise ValueError(
            "target: could not choose a default target: the output has neither logits, "
            "pooler_output nor last_hidden_state. Pass target=callable(outputs) -> scalar tensor."
        )
    return hidden[0, 0].norm(), "norm of the [CLS] last hidden state"
