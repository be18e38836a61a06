"""Capture plain PyTorch models built on ``torch.nn.MultiheadAttention`` via forward hooks.

``nn.MultiheadAttention`` returns per-head weights only when called with
``need_weights=True, average_attn_weights=False``; ``nn.TransformerEncoderLayer`` calls it
with ``need_weights=False``. During the capture a forward pre-hook rewrites those
arguments, a forward hook records the weights and hands the caller exactly what it asked
for (``None`` or head-averaged weights), and all hooks are removed afterwards, also when
the forward pass raises.

Fast paths: in eval mode without autograd, ``nn.TransformerEncoderLayer`` may run the
fused ``torch._transformer_encoder_layer_fwd`` kernel, which never calls ``self_attn``
(so no hook would fire), ``nn.TransformerEncoder`` may turn padded batches into nested
tensors, and ``nn.MultiheadAttention`` has its own fused path. The capture (1) turns them
off with ``torch.backends.mha.set_fastpath_enabled(False)`` (a process-wide flag, restored
afterwards; not thread-safe with respect to other threads running such models at the same
moment), (2) runs in eval mode with autograd on and the parameters requiring grad (both
of which the fast paths refuse), and (3) has hooks on ``self_attn`` (which recent PyTorch
versions also check). Outputs are the same up to float rounding.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np

from ..trace import AttentionTrace, looks_causal
from ._common import _callable_target, _check_batch_index, _torch

__all__ = ["trace_torch"]

# nn.MultiheadAttention.forward's positional parameters after (query, key, value).
_MHA_ARGS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    torch = _torch()
    mha = getattr(torch.backends, "mha", None)
    getter = getattr(mha, "get_fastpath_enabled", None)
    setter = getattr(mha, "set_fastpath_enabled", None)
    if getter is None or setter is None:  # pragma: no cover - torch < 2.1
        yield
        return
    was = getter()
    setter(False)
    try:
        yield
    finally:
        setter(was)


@contextlib.contextmanager
def _capture_mode(model: Any) -> Iterator[None]:
    """Eval mode (no dropout on the weights) and every float parameter requiring grad, so
    the attention weights are in the autograd graph even for a frozen model. Only
    ``d y / d weights`` is ever computed, so no parameter gradient is produced; the flags
    are restored afterwards."""
    was_training = bool(getattr(model, "training", False))
    switched = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    for p in switched:
        p.requires_grad_(True)
    if was_training:
        model.eval()
    try:
        yield
    finally:
        for p in switched:
            p.requires_grad_(False)
        if was_training:
            model.train()


def _first_tensor(output: Any):
    torch = _torch()
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "values") and callable(output.values):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise ValueError(
        f"target: cannot choose a default target: the model returned {type(output).__name__} "
        "with no tensor in it. Pass target=callable(output) -> scalar tensor."
    )


def _grad_source(w: Any):
    """The tensor ``nn.MultiheadAttention`` actually multiplied with V.

    ``F.multi_head_attention_forward`` returns ``weights.view(B, H, Tq, Tk)`` of the
    ``[B*H, Tq, Tk]`` softmax output it used; the returned view is *not* on the path to the
    output, so the gradient must be taken w.r.t. its base (same elements, same order).
    """
    base = getattr(w, "_base", None)
    if base is not None and base.numel() == w.numel() and base.is_contiguous() and w.is_contiguous():
        return base
    return w


def trace_torch(
    model: Any,
    inputs: Any,
    tokens: Sequence[str],
    target: Any = None,
    gradients: bool = True,
    modules: Sequence[Any] | None = None,
    *,
    batch_index: int = 0,
    key_tokens: Sequence[str] | None = None,
    padding_mask: Any = None,
    causal: bool | None = None,
    special_mask: Any = None,
    model_name: str | None = None,
) -> AttentionTrace:
    """Capture per-head attention (and its gradient) from ``nn.MultiheadAttention`` layers.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``. It is called as ``model(*inputs)`` for a tuple,
        ``model(**inputs)`` for a dict, else ``model(inputs)``.
    tokens
        The ``Tq`` query token strings of the selected sequence (after cropping padding).
    target
        ``None``: the norm of the model output (its first tensor). For a batch this is the
        norm over the whole batch; as sequences do not interact, the gradient for the
        selected sequence is that of its own output norm times a positive constant.
        A callable ``output -> scalar tensor`` is used as is.
    modules
        The attention modules to record, in layer order. Default: every
        ``nn.MultiheadAttention`` in ``model.modules()``. Layers are recorded in *call*
        order (a module called twice gives two layers); all must give maps of the same
        shape, so pick ``modules=`` for models that mix self- and cross-attention.
    batch_index
        Which sequence of a batch to keep.
    key_tokens
        For cross-attention modules whose keys are another sequence (``[.., Tq, Tk]``).
    padding_mask
        Optional bool ``[B, T]`` (or ``[T]``), True at padding (the ``key_padding_mask``
        convention); padded queries of the selected sequence are cropped, and for
        self-attention (no ``key_tokens``) the padded keys too.
    causal
        ``None`` detects it from the weights (all zero above the diagonal).

    Notes
    -----
    Fused fast paths are switched off during the capture (see the module docstring), the
    model runs in eval mode, and frozen parameters temporarily require grad so the weights
    are in the graph; everything is restored afterwards. All layers' gradients come from
    one ``torch.autograd.grad`` call.
    """
    torch = _torch()
    nn = torch.nn
    if modules is None:
        mods = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
        if not mods:
            raise ValueError(
                f"modules: found no torch.nn.MultiheadAttention in {type(model).__name__}; "
                "pass modules=[...] (nn.MultiheadAttention instances) or build the trace with "
                "AttentionTrace.from_tensors()"
            )
    else:
        mods = list(modules)
        if not mods:
            raise ValueError("modules: received an empty list")
        bad = [type(m).__name__ for m in mods if not isinstance(m, nn.MultiheadAttention)]
        if bad:
            raise TypeError(
                f"modules: trace_torch hooks torch.nn.MultiheadAttention only, received {bad[0]}"
            )

    captured: list = []
    pending: dict[int, list] = {}

    def pre_hook(module, args, kwargs):
        args = list(args)
        kwargs = dict(kwargs)
        for name, value in zip(_MHA_ARGS, args[3:]):
            kwargs[name] = value
        args = args[:3]
        pending.setdefault(id(module), []).append(
            (kwargs.get("need_weights", True), kwargs.get("average_attn_weights", True))
        )
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = False
        if kwargs.get("is_causal") and kwargs.get("attn_mask") is None:
            # The weights path needs an explicit mask for a causal hint.
            q, k = args[0], args[1]
            seq_dim = 1 if (q.dim() == 3 and module.batch_first) else 0
            tq, tk = q.shape[seq_dim], k.shape[seq_dim]
            kwargs["attn_mask"] = torch.ones(tq, tk, dtype=torch.bool, device=q.device).triu(1)
            kwargs["is_causal"] = False
        return tuple(args), kwargs

    def post_hook(module, args, kwargs, output):
        out, weights = output
        captured.append(weights)
        need, average = pending[id(module)].pop()
        if not need:
            return out, None
        return out, (weights.mean(dim=-3) if average else weights)

    handles = []
    try:
        with _no_fastpath(), _capture_mode(model), torch.enable_grad():
            for m in mods:
                handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
            if isinstance(inputs, dict):
                output = model(**inputs)
            elif isinstance(inputs, tuple):
                output = model(*inputs)
            else:
                output = model(inputs)
            for h in handles:
                h.remove()
            handles.clear()
            if not captured:
                raise ValueError(
                    "attentions: none of the hooked nn.MultiheadAttention modules ran during the "
                    "forward pass; pass the modules the model really calls with modules=[...]"
                )
            shapes = {tuple(w.shape) for w in captured}
            if len(shapes) != 1:
                raise ValueError(
                    f"attentions: the {len(captured)} captured layers have different shapes "
                    f"{sorted(shapes)}; pass modules=[...] with layers of one kind (e.g. only the "
                    "self-attention or only the cross-attention modules)"
                )
            sel = [w if w.dim() == 4 else w.unsqueeze(0) for w in captured]
            _check_batch_index(batch_index, sel[0].shape[0])
            if gradients:
                if callable(target):
                    y, desc = _callable_target(target, output, "output")
                elif target is None:
                    y = _first_tensor(output).float().norm()
                    desc = "norm of the model output"
                else:
                    raise TypeError(f"target: expected None or a callable, received {target!r}")
                sources = [_grad_source(w) for w in captured]
                grads = torch.autograd.grad(y, sources, allow_unused=True)
                if all(g is None for g in grads):
                    raise ValueError(
                        "gradients: the target does not depend on any captured attention weights"
                    )
                grads = [
                    torch.zeros_like(s) if g is None else g.reshape(s.shape)
                    for s, g in zip(sel, grads)
                ]
                grad_np = np.stack([g[batch_index].detach().cpu().float().numpy() for g in grads])
            else:
                desc, grad_np = None, None
    finally:
        for h in handles:
            h.remove()
    attn_np = np.stack([w[batch_index].detach().cpu().float().numpy() for w in sel])

    if padding_mask is not None:
        pad = padding_mask
        pad = np.asarray(pad.detach().cpu() if hasattr(pad, "detach") else pad).astype(bool)
        if pad.ndim == 2:
            pad = pad[batch_index]
        if pad.ndim != 1:
            raise ValueError(f"padding_mask: expected [B, T] or [T], received shape {np.shape(padding_mask)}")
        keep = ~pad
        tq, tk = attn_np.shape[-2:]
        if keep.shape[0] != tq or (key_tokens is None and keep.shape[0] != tk):
            raise ValueError(
                f"padding_mask: expected {tq} positions (the queries"
                f"{'' if key_tokens is not None else ' and keys'}), received {keep.shape[0]}"
            )
        if not keep.any():
            raise ValueError("padding_mask: the selected sequence is all padding")
        attn_np = attn_np[:, :, keep]
        grad_np = None if grad_np is None else grad_np[:, :, keep]
        if key_tokens is None:  # self-attention: padded keys go too (their weight is 0)
            attn_np = attn_np[..., keep]
            grad_np = None if grad_np is None else grad_np[..., keep]
        attn_np = np.ascontiguousarray(attn_np)
        grad_np = None if grad_np is None else np.ascontiguousarray(grad_np)

    if causal is None:
        causal = key_tokens is None and looks_causal(attn_np)
    return AttentionTrace(
        tokens=tuple(tokens),
        key_tokens=None if key_tokens is None else tuple(key_tokens),
        attentions=attn_np,
        gradients=grad_np,
        target=desc,
        causal=bool(causal),
        special_mask=special_mask,
        model_name=model_name or type(model).__name__,
        meta={"kind": "torch", "n_modules": len(mods)},
    )
