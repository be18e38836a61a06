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

By default the forward runs under ``torch.no_grad()`` and the trace has no gradients.
With ``grad_rollout=True`` the capture also runs a backward pass from a target (as
:func:`attn_widgets.trace` chooses it) and walks the gradient-rollout route of the target
position down the layers *inside* it, so no ``[L, H, T, T]`` (nor ``[H, T, T]``) gradient
ever exists: with ``O_h = A_h V_h`` per head, ``d y / d A_h = (d y / d O_h) V_h^T``, so a
tensor hook on each attention call's output (fired during backward from the last layer to
the first, the order the route walks) gets ``d y / d O`` and recomputes, in row blocks of
the rows the route reaches, ``A`` from the recorded queries and keys, ``G = dO V^T``, the
layer's ``mean_h relu(G * A)`` and one step of the walk. The trace keeps the result as
``trace.grad_route`` (:class:`attn_widgets.flows.streamed.StreamedRoute`). For other
gradient flows use :func:`attn_widgets.trace` (short texts).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import types
from typing import Any, Iterator, Sequence

import numpy as np

from ..flows.route import MAX_EDGES_PER_LAYER
from ..flows.streamed import HIST_BINS, HIST_SHIFT, StreamedRoute, StreamedRouteBuilder
from ..lazy import LazyTrace
from ._common import _select_sequence, _torch
from .huggingface import (
    _resolve_target,
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
        try:
            setter(name)
        except ValueError as exc:  # e.g. Gemma 2: transformers refuses sdpa (logit soft-capping)
            raise LazyCaptureError(
                f"{type(model).__name__}: transformers cannot run this model with {name!r} attention ({exc}). "
                "trace_lazy records queries and keys from the sdpa attention function; for this model use "
                "attn_widgets.trace() (all maps in memory) on an input that fits"
            ) from exc
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

    def __init__(self, original, modules: set[int], batch_index: int, dtype, on_grad=None) -> None:
        self.original = original
        self.modules = modules
        self.thread = threading.get_ident()
        self.batch_index = batch_index
        self.dtype = dtype
        self.calls: list[dict] = []
        # grad_rollout: also keep each call's value and hook its output's gradient
        # (on_grad(layer, grad [B, T, H, d])); `active` goes False after the forward, so
        # the checkpointed layers' recomputation during backward is not recorded again.
        self.on_grad = on_grad
        self.active = True
        self.root = None  # the first recorded output: what the backward is asked for

    def __call__(self, module, query, key, value, attention_mask, *args, **kwargs):
        layer = None
        if self.active and id(module) in self.modules and threading.get_ident() == self.thread:
            layer = self.record(module, query, key, attention_mask, kwargs, value)
        out = self.original(module, query, key, value, attention_mask, *args, **kwargs)
        if layer is not None and self.on_grad is not None:
            self._hook(layer, out[0] if isinstance(out, tuple) else out, query)
            _release_freed_memory()
        return out

    def _hook(self, layer: int, output, query) -> None:
        h, t = query.shape[1], query.shape[2]
        # transformers' attention functions return [B, T, H, d] (sdpa transposes back).
        if output.ndim != 4 or tuple(output.shape[1:3]) != (t, h):
            raise LazyCaptureError(
                f"{self.calls[layer]['module']}: the attention output has shape {tuple(output.shape)}, "
                f"expected [B, T, H, d] = [B, {t}, {h}, d]; grad_rollout cannot read its gradient"
            )
        if not output.requires_grad:
            return
        if self.root is None:
            self.root = output
        output.register_hook(functools.partial(self.on_grad, layer))

    def record(self, module, query, key, mask, kwargs, value=None) -> int | None:
        name = type(module).__name__
        if getattr(module, "is_cross_attention", False) or query.shape[2] != key.shape[2]:
            return None  # cross-attention (encoder-decoder) or cached decoding: not self-attention maps
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
        call = {
            "module": name,
            "q": np.array(q.numpy(), dtype=self.dtype, order="C", copy=True),
            "k": np.array(k.numpy(), dtype=self.dtype, order="C", copy=True),
            "scaling": float(scaling),
            "softcap": kwargs.get("softcap"),
            "causal": bool(is_causal) and mask is None and query.shape[2] > 1,
            "allowed": allowed,
        }
        if self.on_grad is not None:  # float32 [Hkv, T, d], freed once its layer is walked
            call["v"] = value[b].detach().to("cpu", dtype=_torch().float32).contiguous().clone()
            if self.dtype != np.float32:  # the walk recomputes A from float32 q / k, as the model had them
                call["q32"], call["k32"] = q.numpy().copy(), k.numpy().copy()
        self.calls.append(call)
        return len(self.calls) - 1


def _min_half(m):
    return _torch().finfo(m.dtype).min / 2


@contextlib.contextmanager
def _recording(model: Any, batch_index: int, dtype, on_grad=None) -> Iterator[_Recorder]:
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
        rec = _Recorder(original, modules, batch_index, dtype, on_grad)
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
    grad_rollout: bool = False,
    target: Any = None,
    position: int | None = None,
    keep_edges: int = MAX_EDGES_PER_LAYER,
    checkpoint: bool = True,
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
    grad_rollout
        Also run a backward pass from ``target`` and walk the gradient-rollout route of
        ``position`` down the layers during it (``I + mean_h relu(G * A)`` per layer, as
        ``route_graph(trace, "grad_rollout", position)`` on an in-memory trace), kept as
        ``trace.grad_route``; nothing ``[H, T, T]`` is stored. Costs the backward pass
        plus about one head-mean map per layer.
    target
        With ``grad_rollout``: what the gradients are taken of, as in
        :func:`attn_widgets.trace`: None picks by model type (causal LM: logit of the
        predicted next token at ``position``, only that position's logits are computed;
        sequence classification: the predicted class logit; base model: the norm of the
        mean-pooled last hidden state); an int selects a vocabulary / class index; a
        callable ``outputs -> scalar tensor`` gets the full model's outputs.
    position
        With ``grad_rollout``: the output token whose route is walked (and, for a causal
        LM, whose next-token logit is the default target); default the last token,
        negative values count from the end.
    keep_edges
        With ``grad_rollout``: the strongest cross-token edges stored per layer;
        ``grad_route.route(keep)`` is exact while ``keep`` needs no more (see
        :mod:`attn_widgets.flows.streamed`).
    checkpoint
        With ``grad_rollout``: recompute each decoder layer during the backward pass
        instead of keeping its activations (transformers' ``GradientCheckpointingLayer``
        layers, in eval mode), except the fused attention kernel's output and log-sum-exp,
        which are kept (selective checkpointing, 4.5 MiB a layer): only the linear layers
        are recomputed (at T = 4096 this took the backward from 14.7 s to 10.7 s), for a
        fraction of the memory (at T = 4096 on a
        32-layer GPT-2 of width 256 the autograd graph is otherwise about 4 GiB).

    Other gradients (``[L, H, T, T]``) are not kept for lazy traces.

    Notes
    -----
    Cost of ``grad_rollout=True`` at T = 4096 on the 32 x 32-head GPT-2 of
    :func:`long_context_model` (head size 8), 2 CPU cores: about 4.6x the plain capture
    (25.8 s against 5.6 s: forward 5.9 s, backward 10.7 s -- sdpa's attention backward and
    the checkpointed layers' linear layers; their attention is kept, not recomputed --, the
    walk 9.2 s, about one softmax of every head per layer), peak resident memory 1.64 GB
    against 1.13 GB. An exact gradient needs the backward pass, itself about twice the
    forward.
    """
    torch = _torch()
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype: expected 'float32' or 'float16', received {dtype!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length: expected None or an int >= 1, received {max_length!r}")
    _check_model(model)
    if not isinstance(grad_rollout, (bool, np.bool_)):
        raise TypeError(f"grad_rollout: expected True or False, received {grad_rollout!r}")
    if not grad_rollout:
        for arg, val in (("target", target), ("position", position)):
            if val is not None:
                raise ValueError(f"{arg}: only used with grad_rollout=True, received {arg}={val!r}")
    if isinstance(target, (str, bytes)) or isinstance(target, bool) or not (
        target is None or callable(target) or isinstance(target, (int, np.integer))
    ):
        raise TypeError(f"target: expected None, an int (vocabulary / class index) or a callable, received {target!r}")
    if position is not None and (isinstance(position, bool) or not isinstance(position, (int, np.integer))):
        raise TypeError(f"position: expected an int or None, received {position!r} ({type(position).__name__})")
    if isinstance(keep_edges, bool) or not isinstance(keep_edges, (int, np.integer)) or keep_edges < 1:
        raise ValueError(f"keep_edges: expected an int >= 1, received {keep_edges!r}")
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

    if grad_rollout:
        position = n_tokens - 1 if position is None else int(position)
        if not -n_tokens <= position < n_tokens:
            raise ValueError(f"position: expected -{n_tokens} <= position < {n_tokens} (T = {n_tokens}), received {position}")
        position %= n_tokens

    device = _model_device(model)
    base = getattr(model, "base_model", model) or model
    np_dtype = np.dtype(dtype)
    route = None
    if grad_rollout:
        calls, route = _grad_capture(
            model, base, sel, device, np_dtype, target, position, tokenizer, n_tokens, int(keep_edges), bool(checkpoint)
        )
    else:
        sel = _model_inputs(base, {k: v.to(device) for k, v in sel.items()})
        with _eval_mode(model), torch.no_grad(), _recording(model, 0, np_dtype) as rec:
            extra = {"use_cache": False} if _accepts_use_cache(base) else {}
            base(**sel, **extra, output_attentions=False, return_dict=True)
        calls = rec.calls
        _check_recorded(model, calls)
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
        grad_route=route,
    )


def _check_recorded(model: Any, calls: list) -> None:
    if not calls:
        raise LazyCaptureError(
            f"{type(model).__name__}: no attention call was recorded. trace_lazy needs a transformers model "
            "that dispatches attention through ALL_ATTENTION_FUNCTIONS (sdpa); capture older architectures "
            "with attn_widgets.trace() on a shorter text"
        )


# -- the streamed gradient rollout ----------------------------------------------------------------

#: Scores per row block of the walk, all heads together (16 MiB of float32 scratch, 3 times):
#: large blocks mean few parallel regions, which matters when the cores are shared.
WALK_BLOCK_VALUES = 1 << 22
_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32: below it, a weight is zero


def _grad_capture(model, base, sel, device, np_dtype, target, position, tokenizer, n_tokens, keep_edges, checkpoint):
    """Forward with autograd, the target, and the backward pass walking the route: (calls, route)."""
    torch = _torch()
    kind = model_kind(model)
    # A causal LM's default / int target reads one row of logits: only that row is computed
    # when the model takes logits_to_keep ([T, vocab] logits are 500 MB at T = 4096).
    full = callable(target) or kind in ("causal_lm", "seq_cls")
    runner = model if full else base
    inputs = _model_inputs(runner, {k: v.to(device) for k, v in sel.items()})
    extra: dict = {"use_cache": False} if _accepts_use_cache(runner) else {}
    one_row = kind == "causal_lm" and not callable(target) and _accepts(runner, "logits_to_keep")
    if one_row:
        extra["logits_to_keep"] = n_tokens - position  # keeps positions position .. T-1
    walk = _GradWalk()
    leave_inference = torch.is_inference_mode_enabled()
    grad_mode = torch.inference_mode(False) if leave_inference else contextlib.nullcontext()
    try:
        with grad_mode, _eval_mode(model), torch.enable_grad(), _recording(model, 0, np_dtype, walk.on_grad) as rec, \
                (_checkpointed(model) if checkpoint else contextlib.nullcontext()):
            if leave_inference:
                inputs = {k: v.clone() for k, v in inputs.items()}
            if not any(p.requires_grad for p in model.parameters()) and "input_ids" in inputs:
                # Frozen weights: embeddings that require grad put the attention in the graph.
                embeds = model.get_input_embeddings()(inputs.pop("input_ids")).detach().requires_grad_(True)
                inputs["inputs_embeds"] = embeds
            try:
                outputs = runner(**inputs, **extra, output_attentions=False, return_dict=True)
            except RuntimeError as exc:
                if "nference tensors" in str(exc):
                    raise ValueError(
                        "model: its parameters were created under torch.inference_mode(), so no gradient can be "
                        "taken through them; load the model outside inference_mode, or pass grad_rollout=False"
                    ) from exc
                raise
            rec.active = False
            calls = rec.calls
            _check_recorded(model, calls)
            shapes = {(c["q"].shape, c["k"].shape) for c in calls}
            if len(shapes) != 1:
                raise LazyCaptureError(f"layers recorded different query/key shapes {sorted(shapes)}; not supported")
            if rec.root is None:
                raise ValueError(
                    f"model: the attention outputs of {type(model).__name__} are not in the autograd graph, so "
                    "grad_rollout has no gradient to walk (is the forward wrapped in torch.no_grad()?); "
                    "pass grad_rollout=False"
                )
            if one_row:
                logits = outputs.logits  # [1, T - position, V]: row 0 is `position`
                view = types.SimpleNamespace(logits=logits[:, :1].expand(1, n_tokens, logits.shape[-1]))
            else:
                view = outputs
            y, desc = _resolve_target(kind, view, target, position, tokenizer, getattr(model, "config", None), None)
            if not getattr(y, "requires_grad", False):
                raise ValueError(f"target: {desc} does not depend on the model's attention (no gradient)")
            walk.begin(calls, StreamedRouteBuilder(len(calls), n_tokens, position, keep_edges=keep_edges,
                                                   method="grad_rollout", target=desc))
            root = rec.root
            rec.root = None
            del outputs, view
            threads = torch.get_num_threads()
            if BACKWARD_THREADS and walk.threaded:
                torch.set_num_threads(int(BACKWARD_THREADS))
            try:
                (g0,) = torch.autograd.grad(y, [root], allow_unused=True)
            except _WalkStopped:  # a hook saw the worker fail: its error, not the hook's
                walk.close()
                if walk.error is not None:
                    raise walk.error from None
                raise
            finally:
                torch.set_num_threads(threads)
            del y, root
            if g0 is not None and 0 not in walk.seen:
                walk.on_grad(0, g0)
            del g0
            route = walk.end()
    finally:
        # also on errors and KeyboardInterrupt: no walk thread outlives the capture (the
        # model's attention function, hooks and checkpointing are restored by the `with`)
        walk.close()
    for c in calls:
        for name in ("v", "q32", "k32"):
            c.pop(name, None)
    return calls, route


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``), once per layer.

    A forward with autograd and the backward allocate and free tens of MB per layer around
    the small buffers that stay (checkpointed inputs, recorded q / k / v); glibc keeps the
    freed pages, and the resident size grows by about a layer's activations per layer
    (measured: 1.7 GB instead of 0.8 GB after the forward at T = 2048). Trimming costs
    about a millisecond."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _accepts(model: Any, name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


#: Checkpointed layers keep their fused attention kernel's outputs (sdpa's output and
#: log-sum-exp: 4.5 MiB per layer at T = 4096, H = 32, d = 8) instead of recomputing them:
#: at long contexts the attention is most of a layer's forward, the linear layers are cheap.
CHECKPOINT_KEEPS_ATTENTION = True


def _keep_attention_context():
    """``context_fn`` for :func:`torch.utils.checkpoint.checkpoint`: save the fused attention
    ops' outputs, recompute the rest (selective activation checkpointing); None when this
    torch has no selective checkpointing."""
    torch = _torch()
    try:
        from torch.utils.checkpoint import (
            CheckpointPolicy,
            create_selective_checkpoint_contexts,
        )
    except ImportError:  # pragma: no cover - torch < 2.4
        return None
    aten = torch.ops.aten
    keep = set()
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
        op = getattr(aten, name, None)
        if op is not None:
            keep.add(op.default)

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in keep else CheckpointPolicy.PREFER_RECOMPUTE

    return functools.partial(create_selective_checkpoint_contexts, policy)


@contextlib.contextmanager
def _checkpointed(model: Any) -> Iterator[None]:
    """Run each transformers decoder layer (``GradientCheckpointingLayer``) under non-reentrant
    activation checkpointing, in eval mode: the backward pass recomputes a layer's activations
    instead of the forward keeping them. Non-reentrant checkpointing keeps the original autograd
    graph, so tensor hooks on tensors made inside a layer still fire."""
    torch = _torch()
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # pragma: no cover - older transformers
        yield
        return
    from torch.utils.checkpoint import checkpoint

    context = _keep_attention_context() if CHECKPOINT_KEEPS_ATTENTION else None
    opts = {} if context is None else {"context_fn": context}
    patched = []
    for m in model.modules():
        if isinstance(m, GradientCheckpointingLayer) and "forward" not in m.__dict__:
            fwd = m.forward

            def run(*args, _fwd=fwd, **kwargs):
                if not torch.is_grad_enabled():
                    return _fwd(*args, **kwargs)
                return checkpoint(_fwd, *args, use_reentrant=False, **opts, **kwargs)

            m.forward = run
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward


#: Walk on a worker thread beside the backward (True) or inside the hooks, in series (False).
#: Measured at T = 4096 on the 32 x 32 GPT-2 of long_context_model, 2 CPU cores: in series
#: 25.8 s; pipelined 28.9 s (walk 1 thread, backward 2), 27.5 s (walk 2, backward 2), 29.0 s
#: (walk 1, backward 1). Both kernels scale to 2 threads (1.6x / 1.9x), so overlapping them
#: on 2 cores only time-slices the same work and adds oversubscription; off by default.
#: It may pay where the kernels stop scaling (many cores): not measured.
WALK_PIPELINE = False
#: torch intra-op threads of the walk's worker thread (set inside it: a per-thread setting).
WALK_THREADS = 1
#: torch intra-op threads of the backward while the worker walks (None: the caller's).
BACKWARD_THREADS = None
#: Layers' output gradients waiting for the worker (each an [H, T, d] float32 copy, 4 MiB at
#: T = 4096, H = 32, d = 8): the backward blocks when the walk is this far behind.
WALK_QUEUE = 2


class _WalkStopped(Exception):
    """The capture stopped the walk (the backward failed or was interrupted)."""


class _GradWalk:
    """Receives each layer's output gradient during backward and walks the route down.

    The walk step of layer ``l`` needs only ``r_{l+1}`` (the step before) and the layer's own
    q / k / v / ``dO``, not the backward of the layers below it: the hooks hand ``dO`` to one
    worker thread (a bounded queue, layers in the order they arrive) and return, so the
    backward of layer ``l - 1`` runs while layer ``l`` is walked. :meth:`end` joins the worker
    and re-raises its error; :meth:`close` (always, in a ``finally``) stops it."""

    def __init__(self, threaded: bool | None = None) -> None:
        self.calls: list[dict] | None = None
        self.builder: StreamedRouteBuilder | None = None
        self.pending: dict[int, Any] = {}
        self.seen: set[int] = set()
        self.threaded = WALK_PIPELINE if threaded is None else bool(threaded)
        self.error: BaseException | None = None
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def begin(self, calls: list[dict], builder: StreamedRouteBuilder) -> None:
        self.calls, self.builder = calls, builder
        if self.threaded:
            self._queue = queue.Queue(maxsize=max(1, int(WALK_QUEUE)))
            self._thread = threading.Thread(target=self._worker, name="attn_widgets-grad-walk", daemon=True)
            self._thread.start()

    def on_grad(self, layer: int, grad) -> None:
        torch = _torch()
        if self.error is not None:  # the walk failed: stop the backward too (end() re-raises it)
            raise _WalkStopped(f"the gradient walk failed at an earlier layer: {self.error!r}")
        self.seen.add(layer)
        # [B, T, H, d] -> this sequence's [H, T, d] float32 on the CPU (a copy: autograd may
        # reuse the gradient's buffer once the hook returns)
        g = grad[0].detach().to("cpu", dtype=torch.float32).permute(1, 0, 2).contiguous()
        if g.data_ptr() == grad.data_ptr():
            g = g.clone()
        if self._thread is None:
            self.pending[layer] = g
            self._drain(final=False)
            return
        while True:  # a bounded put that notices a failed worker instead of blocking forever
            if self.error is not None:
                raise _WalkStopped(f"the gradient walk failed: {self.error!r}")
            try:
                self._queue.put((layer, g), timeout=0.1)
                return
            except queue.Full:
                continue

    def _worker(self) -> None:
        try:
            torch = _torch()
            torch.set_num_threads(max(1, int(WALK_THREADS)))  # this thread's own setting
            while True:
                item = self._queue.get()
                if item is None or self._stop.is_set():
                    return
                layer, g = item
                self.pending[layer] = g
                del item, g
                self._drain(final=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the capture's thread
            self.error = exc
            self.pending.clear()

    def _drain(self, final: bool) -> None:
        b = self.builder
        if b is None:
            return
        while b.next_layer >= 0:
            layer = b.next_layer
            if layer in self.pending:
                _walk_layer(b, layer, self.calls[layer], self.pending.pop(layer), self._stop)
                for name in ("v", "q32", "k32"):  # needed by this step only
                    self.calls[layer].pop(name, None)
                _release_freed_memory()
            elif final:
                b.skip(layer)  # the target does not depend on this layer: G = 0, carry only
            else:
                return

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(None)  # after every layer handed over: the worker finishes them first
            self._thread.join()
            self._thread = None

    def end(self) -> StreamedRoute:
        self._join()
        if self.error is not None:
            raise self.error
        self._drain(final=True)
        return self.builder.build()

    def close(self) -> None:
        """Stop the worker (without finishing the walk) and wait for it; idempotent."""
        if self._thread is None:
            return
        self._stop.set()  # the worker stops between row blocks and ignores what is queued
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        self.pending.clear()


def _softmax_into(s, out) -> None:
    """``out = softmax(s, -1)`` into preallocated scratch (one fused pass per row; a fresh
    output would page-fault its 8 MB every block)."""
    torch = _torch()
    try:
        torch.ops.aten._softmax.out(s, -1, False, out=out)
    except (AttributeError, RuntimeError):  # pragma: no cover - an older torch
        out.copy_(torch.softmax(s, dim=-1))


def _walk_layer(builder: StreamedRouteBuilder, layer: int, call: dict, d_out, stop=None) -> None:
    """One step of the gradient-rollout walk from the layer's recorded q, k, v and ``d y / d O``.

    For the rows ``q`` the route reaches, in row blocks with all heads at once:
    ``A = softmax(scale * Q K^T [softcap] + mask)``, ``G = dO V^T`` (``d y / d A``, as ``O = A V``),
    ``E = mean_h relu(G * A)``, weighted edges ``w = r[q] * E``; the diagonal is carry (plus
    the identity's ``r``), the rest goes to the layer's accumulator. Keys shared by a group of
    query heads (GQA) are used per group without repeating them."""
    torch = _torch()
    t = builder.n_tokens
    rows = builder.rows(layer)
    r = builder.weights(layer)
    q = torch.from_numpy(call.get("q32", call["q"])).float()
    k = torch.from_numpy(call.get("k32", call["k"])).float()
    v = call["v"]
    n_heads, n_kv = q.shape[0], k.shape[0]
    group = n_heads // n_kv
    d = q.shape[-1]
    if tuple(d_out.shape) != (n_heads, t, v.shape[-1]) or v.shape[0] != n_kv:
        raise LazyCaptureError(
            f"layer {layer}: output gradient {tuple(d_out.shape)} / value {tuple(v.shape)} do not match "
            f"{n_heads} query heads, {n_kv} key heads and {t} tokens"
        )
    kt = k.transpose(1, 2)  # [Hkv, d, T]
    vt = v.transpose(1, 2)
    scale, cap = call["scaling"], call["softcap"]
    causal, allowed = call["causal"], call["allowed"]
    acc = builder.start(layer)
    cross = torch.zeros(t, dtype=torch.float64)
    carry = builder.identity(layer)  # the identity of I + E: r itself
    hc = torch.zeros(HIST_BINS, dtype=torch.int64)
    hs = torch.zeros(HIST_BINS, dtype=torch.float64)
    block = max(1, min(256, WALK_BLOCK_VALUES // (n_heads * t)))
    sbuf = torch.empty(n_heads * block * t)
    abuf = torch.empty(n_heads * block * t)
    gbuf = torch.empty(n_heads * block * t)
    rows_t = torch.from_numpy(rows)
    contiguous = rows.size and rows[-1] - rows[0] == rows.size - 1
    tri = torch.ones(block, block, dtype=torch.bool).triu_(1)
    for i0 in range(0, rows.size, block):
        if stop is not None and stop.is_set():
            raise _WalkStopped("the capture stopped the gradient walk")
        idx = rows[i0:i0 + block]
        n = idx.size
        a, last = int(idx[0]), int(idx[-1])
        nc = last + 1 if causal else t
        if contiguous:
            qb, gb = q[:, a:last + 1], d_out[:, a:last + 1]
        else:
            it = rows_t[i0:i0 + block]
            qb, gb = q.index_select(1, it), d_out.index_select(1, it)
        # [H, n, d] -> [Hkv, group * n, d]: query head h uses key head h // group. The scale
        # goes on the (small) query block rather than on the scores.
        qb = (qb * scale).reshape(n_kv, group * n, d)
        gb = gb.reshape(n_kv, group * n, -1)
        s = sbuf[: n_heads * n * nc].view(n_kv, group * n, nc)
        torch.bmm(qb, kt[:, :, :nc], out=s)
        s = s.view(n_heads, n, nc)
        if cap is not None:
            s.div_(cap).tanh_().mul_(cap)
        if causal and contiguous:
            s[:, :, a:].masked_fill_(tri[:n, :n], float("-inf"))  # only the block's own square
        elif causal:
            s.masked_fill_(torch.arange(nc)[None, :] > torch.from_numpy(idx)[:, None], float("-inf"))
        if allowed is not None:
            s.masked_fill_(torch.from_numpy(~allowed[idx, :nc]), float("-inf"))
        p = abuf[: n_heads * n * nc].view(n_heads, n, nc)
        _softmax_into(s, p)  # A, fused per row
        g = gbuf[: n_heads * n * nc].view(n_kv, group * n, nc)
        torch.bmm(gb, vt[:, :, :nc], out=g)
        p.mul_(g.view(n_heads, n, nc).clamp_(min=0.0))  # relu(G * A) = A * relu(G), as A >= 0
        w = p.sum(dim=0)  # [n, nc]; the mean's 1 / H goes with r
        w.mul_(torch.from_numpy(r[idx] / n_heads).to(torch.float32)[:, None])
        ar = torch.arange(n)
        it = torch.from_numpy(idx)
        carry[idx] += w[ar, it].double().numpy()
        w[ar, it] = 0.0
        cross[:nc] += w.sum(dim=0, dtype=torch.float64)
        # Histogram of the whole block (no compaction of the non-zeros: that costs more than
        # the rest of the bookkeeping): zeros and float32 subnormals fall in bin 0, which
        # then counts as zero (weights below 1.2e-38 are not edges for needed / keep).
        flat = w.view(-1)
        keys = flat.view(torch.int32) >> HIST_SHIFT
        hc += torch.bincount(keys, minlength=HIST_BINS)
        hs += torch.bincount(keys, weights=flat.double(), minlength=HIST_BINS)
        thr = max(acc.threshold, _TINY)
        if float(w.max()) > thr:
            cand = (w > thr).nonzero()
            acc.offer(idx[cand[:, 0].numpy()], cand[:, 1].numpy(), w[cand[:, 0], cand[:, 1]].double().numpy())
    nnz = int(hc[1:].sum())
    hc[0] = 0
    hs[0] = 0.0
    acc.finish(cross.numpy(), carry, nnz, hc.numpy(), hs.numpy())
    builder.finish(layer, acc)


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
