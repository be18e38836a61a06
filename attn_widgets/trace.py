"""AttentionTrace: the one data contract between capture, flows and widgets.

An :class:`AttentionTrace` is validated once, at construction. Every later layer
(flows, wire encoding, widgets) may rely on its invariants:

* ``attentions`` is C-contiguous float32 ``[L, H, T, T]``, finite, non-negative,
  each query row sums to 1 over the keys it may see;
* ``len(tokens) == T``;
* cross-attention (encoder-decoder) is the one non-square case: ``key_tokens`` is then
  given and ``attentions`` is ``[L, H, Tq, Tk]`` with ``Tq == len(tokens)`` (queries)
  and ``Tk == len(key_tokens)`` (keys). ``key_tokens=None`` means keys == tokens;
* ``gradients``, when present, is float32 with exactly the same shape, finite;
* ``special_mask`` is bool ``[T]``.

Nothing here imports ipywidgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ._checks import (
    DEFAULT_SPECIAL_TOKENS,
    MAX,
    MEAN,
    ROW_SUM_ATOL,  # noqa: F401  (re-exported)
    TraceChecks,
    _VALIDATED,
    _check_bool,
    _check_special_mask,
    _check_strings,
    _check_token_ids,
    _check_weights,
    _dense_shape,
    _own_float32,
    _source_dtype,
    _special_mask_from_tokens,
    _stack_layers,
    _to_numpy,
    check_dense_size,
    display_labels,
    row_sum_atol,
)

__all__ = ["AttentionTrace", "display_labels", "check_dense_size", "row_sum_atol", "DEFAULT_SPECIAL_TOKENS"]


@dataclass(frozen=True, eq=False)
class AttentionTrace(TraceChecks):
    """Attention weights (and optionally their gradients) of one input through one model.

    Parameters
    ----------
    tokens
        The T token strings, in order. Untrusted text: views render them as text only.
    attentions
        float32 ``[L, H, T, T]``; rows are queries and sum to 1 over the keys they may see.
    gradients
        Optional ``d target / d attentions``, same shape as ``attentions``.
    target
        Human readable description of the scalar the gradients are taken of.
    causal
        True when each query only sees keys at or before it (decoder models).
    special_mask
        Optional bool ``[T]``, True for special tokens such as ``[CLS]`` and ``[SEP]``.
    model_name
        Free text used in titles.
    token_ids
        Optional integer ids of the tokens.
    meta
        Free-form extras from the capture (model kind, target position, patch grid, ...).
    key_tokens
        Only for cross-attention (non-square maps): the ``Tk`` key token strings, e.g. the
        encoder's tokens seen by decoder queries. ``None`` (the default) means the keys are
        ``tokens`` themselves and ``attentions`` is square ``[L, H, T, T]``. With
        ``key_tokens``, ``attentions`` is ``[L, H, Tq, Tk]``; ``tokens``, ``special_mask``,
        ``token_ids`` and :attr:`n_tokens` describe the queries, :attr:`n_keys` the keys.
        A cross trace cannot be causal.
    value_norms
        Optional float32 ``[L, H, T]``: ``||f_h(x_j)||`` with ``f_h(x) = (x W_V^h + b_V^h) W_O^h``,
        the norm of what head ``h`` moves from token ``j`` (Kobayashi et al. 2020).
    mixed_norms
        Optional float32 ``[L, T, T]``: the head-mixed ``||sum_h alpha[h, i, j] f_h(x_j)||``.
    contributions
        Optional float32 ``[L, T, T]``: ALTI ``c_ij = max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1)``
        per layer, before row normalisation (Ferrando et al. 2022). All three come from
        ``attn_widgets.trace(..., contributions=True)``; see :mod:`attn_widgets.flows.contrib`.
    """

    tokens: tuple[str, ...]
    attentions: np.ndarray
    gradients: np.ndarray | None = None
    target: str | None = None
    causal: bool = False
    special_mask: np.ndarray | None = None
    model_name: str = ""
    token_ids: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)
    key_tokens: tuple[str, ...] | None = None
    value_norms: np.ndarray | None = None
    mixed_norms: np.ndarray | None = None
    contributions: np.ndarray | None = None

    def __post_init__(self) -> None:
        tokens = _check_strings(self.tokens, "tokens")
        meta = dict(self.meta or {}) if isinstance(self.meta, dict) or self.meta is None else None
        if meta is None:
            raise TypeError(f"meta: expected a dict, received {type(self.meta).__name__}")
        # Refuse what cannot fit before converting anything (a broadcast view is cheap to pass in).
        shape = _dense_shape(self.attentions, 0)
        if shape is not None and min(shape) > 0:
            check_dense_size(*shape, gradients=self.gradients is not None, what="attentions")
        source = meta.get("dtype") or _source_dtype(self.attentions)
        if source is not None:
            meta["dtype"] = str(source)

        # Own copy: the trace is read-only and must not alias (or freeze) the caller's array.
        attn = _own_float32(self.attentions, "attentions")
        if attn.ndim != 4:
            raise ValueError(f"attentions: expected rank 4 [L, H, T, T], received shape {attn.shape}")
        n_layers, n_heads, t_q, t_k = attn.shape
        key_tokens = self.key_tokens
        if key_tokens is None:
            if t_q != t_k:
                raise ValueError(
                    f"attentions: expected square maps [L, H, T, T], received shape {attn.shape}. "
                    "For cross-attention pass key_tokens (the Tk key strings)."
                )
        else:
            key_tokens = _check_strings(key_tokens, "key_tokens", "a list of strings or None")
        if min(attn.shape) == 0:
            raise ValueError(
                f"attentions: empty array, received shape {attn.shape} "
                "(expected at least one layer, one head and one token)"
            )
        if len(tokens) != t_q:
            raise ValueError(
                f"tokens: expected {t_q} tokens (queries) to match attentions {attn.shape}, "
                f"received {len(tokens)}"
            )
        if key_tokens is not None and len(key_tokens) != t_k:
            raise ValueError(
                f"key_tokens: expected {t_k} key tokens to match attentions {attn.shape}, "
                f"received {len(key_tokens)}"
            )
        _check_weights(attn, "attentions", row_sum_atol(source))

        causal = _check_bool(self.causal, "causal")
        if causal and key_tokens is not None:
            raise ValueError(
                "causal: a cross-attention trace (key_tokens given) cannot be causal; "
                "decoder queries see every encoder key"
            )
        if causal and t_q > 1:
            # One layer at a time: the upper triangle of all layers is half a copy.
            upper = np.triu(np.ones((t_q, t_q), dtype=bool), k=1)
            leak = max(float(attn[layer][:, upper].max()) for layer in range(n_layers))
            if leak > 1e-6:
                raise ValueError(
                    "causal: trace is marked causal but attentions put weight "
                    f"{leak:.4g} on future keys (above the diagonal)"
                )

        grads = self.gradients
        if grads is not None:
            grads = _own_float32(grads, "gradients")
            if grads.shape != attn.shape:
                raise ValueError(
                    f"gradients: expected shape {attn.shape} (same as attentions), received {grads.shape}"
                )
            if not all(np.isfinite(grads[layer]).all() for layer in range(n_layers)):
                raise ValueError(f"gradients: contains NaN or inf (shape {grads.shape})")

        mask = _check_special_mask(self.special_mask, t_q)
        ids = _check_token_ids(self.token_ids, t_q)

        attn.setflags(write=False)
        if grads is not None:
            grads.setflags(write=False)
        mask.setflags(write=False)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "attentions", attn)
        object.__setattr__(self, "gradients", grads)
        object.__setattr__(self, "causal", causal)
        object.__setattr__(self, "special_mask", mask)
        object.__setattr__(self, "token_ids", ids)
        object.__setattr__(self, "model_name", str(self.model_name or ""))
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "key_tokens", key_tokens)
        _check_contribution_fields(self)
        _VALIDATED[id(attn)] = attn

    # -- constructors -------------------------------------------------------------

    @classmethod
    def from_tensors(
        cls,
        attentions: Any,
        tokens: Sequence[str],
        *,
        batch_index: int = 0,
        gradients: Any = None,
        causal: bool | None = None,
        key_tokens: Sequence[str] | None = None,
        special_tokens: Iterable[str] | bool | None = None,
        **kwargs: Any,
    ) -> "AttentionTrace":
        """Build a trace from precomputed weights.

        ``attentions`` is either the per-layer tuple that ``transformers`` returns with
        ``output_attentions=True`` (each ``[B, H, T, T]``; ``batch_index`` picks the
        sequence) or one ``[L, H, T, T]`` array / tensor. ``gradients`` takes the same
        forms. ``causal=None`` detects causality from the weights themselves (all zero
        above the diagonal). ``key_tokens`` marks a cross-attention trace (``[.., Tq, Tk]``
        maps; never causal). ``value_norms=``, ``mixed_norms=`` and ``contributions=``
        (``[L, H, T]``, ``[L, T, T]``, ``[L, T, T]``) pass through ``kwargs``.

        Special tokens: ``special_mask=`` (bool ``[T]``) sets them explicitly. Otherwise
        ``special_tokens`` decides: ``None`` / ``True`` marks the usual markers
        (:data:`DEFAULT_SPECIAL_TOKENS`: ``[CLS]``, ``[SEP]``, ``<s>``, ``</s>``,
        ``<|endoftext|>``, ``<pad>``, ``<|im_start|>``, ...), a collection of strings marks
        exactly those, ``False`` marks none. The source dtype (e.g. ``bfloat16``) is kept in
        ``meta["dtype"]`` and sets the row-sum tolerance.

        The size is checked before anything is converted: a trace that would not fit in
        memory is refused with a pointer to :func:`attn_widgets.trace_lazy`.
        """
        tokens = _check_strings(tokens, "tokens")
        if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
            raise TypeError(f"batch_index: expected an int, received {batch_index!r}")
        if causal is not None:
            causal = _check_bool(causal, "causal")
        shape = _dense_shape(attentions, batch_index)
        if shape is not None and min(shape) > 0:
            check_dense_size(*shape, gradients=gradients is not None, what="attentions")
        meta = dict(kwargs.pop("meta", None) or {})
        source = _source_dtype(attentions)
        if source is not None:
            meta.setdefault("dtype", source)
        if "special_mask" in kwargs and kwargs["special_mask"] is not None:
            if special_tokens is not None:
                raise TypeError("special_tokens: pass either special_mask= or special_tokens=, not both")
        else:
            kwargs["special_mask"] = _special_mask_from_tokens(tokens, special_tokens)
        attn = _stack_layers(attentions, batch_index, "attentions")
        grads = None if gradients is None else _stack_layers(gradients, batch_index, "gradients")
        if causal is None:
            # Malformed shapes (rank 1, L = 0, ...) are reported by the constructor.
            well_formed = attn.ndim == 4 and min(attn.shape) > 0
            causal = key_tokens is None and well_formed and looks_causal(attn)
        if key_tokens is not None:
            key_tokens = _check_strings(key_tokens, "key_tokens", "a list of strings or None")
        return cls(
            tokens=tokens, attentions=attn, gradients=grads, causal=causal,
            key_tokens=key_tokens, meta=meta, **kwargs,
        )

    # -- shape helpers ------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return int(self.attentions.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.attentions.shape[1])

    @property
    def n_tokens(self) -> int:
        """Number of query tokens (rows), ``len(tokens)``."""
        return int(self.attentions.shape[2])

    @property
    def n_keys(self) -> int:
        """Number of key tokens (columns); equals :attr:`n_tokens` unless cross-attention."""
        return int(self.attentions.shape[3])

    @property
    def is_cross(self) -> bool:
        """True for a cross-attention trace (``key_tokens`` given, maps may be non-square)."""
        return self.key_tokens is not None

    @property
    def key_labels(self) -> tuple[str, ...]:
        """The key token strings: ``key_tokens`` for cross-attention, else ``tokens``."""
        return self.tokens if self.key_tokens is None else self.key_tokens

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.attentions.shape)  # type: ignore[return-value]

    @property
    def has_gradients(self) -> bool:
        return self.gradients is not None

    def head_map(self, layer: int, head: int | str) -> np.ndarray:
        """The ``[T, T]`` (``[Tq, Tk]`` for cross) map of one head, or ``"mean"`` / ``"max"``."""
        layer = self.check_layer(layer)
        if head == MEAN:
            return self.attentions[layer].mean(axis=0)
        if head == MAX:
            return self.attentions[layer].max(axis=0)
        return self.attentions[layer, self.check_head(head)]

    @property
    def on_demand(self) -> bool:
        """False: every map is in memory (see :class:`attn_widgets.interface.Trace`)."""
        return False

    def tile(self, layer: int, head: int | str, r0: int, r1: int, c0: int, c1: int, step: int = 1) -> np.ndarray:
        """Rows (queries) ``r0:r1`` x keys ``c0:c1`` of a map, max-pooled in ``step x step``
        blocks from ``(r0, c0)`` when ``step > 1`` (as :meth:`LazyTrace.tile`)."""
        from ._wire import pool_blocks

        r0, r1, c0, c1 = self.check_range(r0, r1, c0, c1)
        return pool_blocks(self.head_map(layer, head)[r0:r1, c0:c1], step)

    def pooled(self, layer: int, head: int | str, size: int) -> np.ndarray:
        """The map max-pooled in blocks of ``pool_step(n_tokens, size)`` (as :meth:`LazyTrace.pooled`)."""
        from ._wire import pool_blocks, pool_step

        return pool_blocks(self.head_map(layer, head), pool_step(self.n_tokens, size))

    def thumbnails(self, size: int = 48) -> np.ndarray:
        """Every map max-pooled, each axis on its own, to at most ``size``: ``[L, H, s, sk]``."""
        from ._wire import maxpool_axes

        return maxpool_axes(self.attentions, size)


    def __repr__(self) -> str:
        grad = f", gradients of {self.target!r}" if self.gradients is not None else ""
        name = f"{self.model_name}: " if self.model_name else ""
        return (
            f"AttentionTrace({name}{self.n_layers} layers x {self.n_heads} heads, "
            f"{self.n_tokens} tokens{f' x {self.n_keys} keys (cross)' if self.is_cross else ''}"
            f"{', causal' if self.causal else ''}{grad})"
        )

    # -- flow methods --------------------------------------------------------------
    # Thin wrappers over attn_widgets.flows (imported lazily: numpy-only until called).
    # Keep this block at the end of the class body.

    def _flow_input(self, what: str) -> np.ndarray:
        if self.attentions.shape[-1] != self.attentions.shape[-2]:
            raise ValueError(
                f"{what}: needs square self-attention maps; this trace is cross-attention "
                f"{tuple(self.attentions.shape)}"
            )
        return self.attentions

    def _flow_gradients(self, what: str) -> np.ndarray:
        if self.gradients is None:
            raise ValueError(
                f"{what}: this trace has no gradients; capture it with "
                "attn_widgets.trace(..., gradients=True) or pass gradients= to from_tensors()"
            )
        return self.gradients

    def rollout(self, residual: float = 0.5, start_layer: int = 0) -> np.ndarray:
        """Attention rollout after every layer, float64 ``[L, T, T]``; see :func:`attn_widgets.flows.rollout`."""
        from .flows import rollout

        return rollout(self._flow_input("rollout"), residual=residual, start_layer=start_layer)

    def attention_flow(
        self,
        rows: Any = None,
        residual: float = 0.5,
        progress: Any = None,
        cancel: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Exact attention flow for ``rows`` (all by default), float64 ``[len(rows), T]``.

        See :func:`attn_widgets.flows.attention_flow` (``normalize``, ``engine``, ``workers``
        and ``progress_every`` pass through ``kwargs``).
        """
        from .flows import attention_flow

        return attention_flow(
            self._flow_input("attention_flow"), rows=rows, residual=residual, progress=progress,
            cancel=cancel, **kwargs,
        )

    def grad_rollout(self) -> np.ndarray:
        """Gradient-weighted rollout ``R``, float64 ``[T, T]``; see :func:`attn_widgets.flows.grad_rollout`."""
        from .flows import grad_rollout

        return grad_rollout(self._flow_input("grad_rollout"), self._flow_gradients("grad_rollout"))

    def attn_grad(self, mode: str = "signed") -> np.ndarray:
        """Attention x gradient ``[L, H, T, T]``, ``mode`` "signed" or "clipped"."""
        from .flows import attn_grad

        return attn_grad(self._flow_input("attn_grad"), self._flow_gradients("attn_grad"), mode=mode)

    def head_stats(self) -> dict[str, np.ndarray]:
        """Per-head entropy, distance, special share, gradient importance; ``[L, H]`` each."""
        from .flows import head_stats

        self._flow_input("head_stats")
        return head_stats(self)


    # -- contribution methods (value norms, ALTI) ------------------------------------

    def value_norm(self, mixed: bool = False, normalize: bool = False) -> np.ndarray:
        """Norm-based attention; see :func:`attn_widgets.flows.value_norm`."""
        from .flows import value_norm

        return value_norm(self, mixed=mixed, normalize=normalize)

    def contribution_layers(self) -> np.ndarray:
        """Row-normalised per-layer ALTI matrices ``[L, T, T]``; see :func:`attn_widgets.flows.contribution_layers`."""
        from .flows import contribution_layers

        return contribution_layers(self)

    def alti(self, start_layer: int = 0) -> np.ndarray:
        """ALTI rollout after every layer ``[L, T, T]``; see :func:`attn_widgets.flows.alti`."""
        from .flows import alti

        return alti(self, start_layer=start_layer)

    def method_agreement(self, token: int, methods: Any = None, **kwargs: Any) -> Any:
        """Spearman agreement of the methods' input-token scores for ``token``; see :func:`attn_widgets.flows.method_agreement`."""
        from .flows import method_agreement

        return method_agreement(self, token, methods, **kwargs)


def _check_contribution_fields(tr: AttentionTrace) -> None:
    """Validate and freeze the optional contribution arrays (shapes follow ``attentions``)."""
    n_layers, n_heads, t_q, t_k = tr.attentions.shape
    expected = {
        "value_norms": ((n_layers, n_heads, t_k), "[L, H, T]"),
        "mixed_norms": ((n_layers, t_q, t_k), "[L, T, T]"),
        "contributions": ((n_layers, t_q, t_k), "[L, T, T]"),
    }
    for name, (shape, what) in expected.items():
        value = getattr(tr, name)
        if value is None:
            continue
        if tr.key_tokens is not None:
            raise ValueError(f"{name}: contribution arrays need self-attention; this trace is cross-attention")
        arr = np.array(_to_numpy(value, name), copy=True)
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} {what} to match attentions, received {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: contains NaN or inf (shape {arr.shape})")
        if (arr < 0).any():
            where = np.argwhere(arr < 0)[0].tolist()
            raise ValueError(f"{name}: norms and contributions must be >= 0, found {arr[tuple(where)]:.4g} at {where}")
        arr.setflags(write=False)
        object.__setattr__(tr, name, arr)


def looks_causal(attn: np.ndarray) -> bool:
    """True when every head puts (numerically) zero weight above the diagonal.

    A bidirectional softmax is strictly positive everywhere, so for T > 1 this cannot
    be true of an encoder.
    """
    t = attn.shape[-1]
    if t < 2 or attn.shape[-2] != t:  # non-square (cross-attention) maps are never causal
        return False
    # Cheap exits first: query 0 may only see key 0, so any weight on key 1 decides it
    # without touching the other T^2 entries (encoders exit here).
    if attn[..., 0, 1].max() > 1e-7:
        return False
    upper = np.triu(np.ones((t, t), dtype=bool), k=1)
    return bool(attn[..., upper].max() <= 1e-7)
