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

import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["AttentionTrace", "display_labels", "check_dense_size", "row_sum_atol", "DEFAULT_SPECIAL_TOKENS"]

#: Tolerance on row sums of float32 / float64 weights. float16 and bfloat16 sources get a
#: wider one, scaled with their machine epsilon (see :func:`row_sum_atol`).
ROW_SUM_ATOL = 2e-3

#: Token strings that mark structure rather than text; :meth:`AttentionTrace.from_tensors`
#: marks them special by default (``special_tokens=False`` turns that off).
DEFAULT_SPECIAL_TOKENS = frozenset({
    "[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>", "<bos>", "<eos>",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>",
    "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<start_of_turn>", "<end_of_turn>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>",
})

_FLOAT_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}


def row_sum_atol(dtype: Any) -> float:
    """Row-sum tolerance for attention weights computed in ``dtype`` (a name, numpy or torch dtype).

    Each weight is rounded with relative error <= eps/2 and the normaliser once more, so a
    row can be off by about eps; 4 eps leaves room for accumulation order. float32 keeps
    :data:`ROW_SUM_ATOL`.
    """
    name = str(dtype).replace("torch.", "")
    return max(ROW_SUM_ATOL, 4 * _FLOAT_EPS.get(name, 0.0))


def _source_dtype(x: Any) -> str | None:
    """The dtype name of a tensor / array as given (before any cast), or None."""
    if isinstance(x, (tuple, list)):
        return _source_dtype(x[0]) if x and x[0] is not None else None
    dt = getattr(x, "dtype", None)
    return None if dt is None else str(dt).replace("torch.", "")


def _check_array_kind(x: Any, name: str) -> None:
    """Refuse, with the way out, the inputs that have no plain dense values to read."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: masked arrays are not accepted (the mask would be silently dropped); pass "
            f"{name}.filled(0) with padding cropped, so every row still sums to 1"
        )
    if not (hasattr(x, "detach") and hasattr(x, "cpu")):
        return
    device = getattr(getattr(x, "device", None), "type", None)
    if device == "meta":
        raise ValueError(
            f"{name}: received a tensor on the meta device, which has a shape but no values (a model "
            "initialised on 'meta' or offloaded); run the model on a real device first"
        )
    layout = str(getattr(x, "layout", "torch.strided"))
    if layout != "torch.strided" or getattr(x, "is_sparse", False):
        raise TypeError(
            f"{name}: expected a dense tensor, received layout {layout.replace('torch.', '')}; pass "
            f"{name}.to_dense() (attention maps are stored dense)"
        )
    dt = str(getattr(x, "dtype", ""))
    if "float8" in dt:
        raise TypeError(
            f"{name}: float8 weights ({dt.replace('torch.', '')}) are too coarse to check that rows sum "
            f"to 1; cast them with {name}.float() (or capture in float16 / bfloat16 / float32)"
        )


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """``np.asarray`` of an array-like or a torch tensor (bfloat16 -> float32); ValueError for None."""
    if x is None:
        raise ValueError(f"{name}: expected an array, received None")
    _check_array_kind(x, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


# The attentions of constructed traces (validated, read-only), by id.
_VALIDATED: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()

# Arrays handed over by the capture functions, which own them and keep no other reference:
# the constructor adopts them instead of copying (a copy of [L, H, T, T] doubles the peak).
_ADOPTED: set[int] = set()


def _adopt(arr: np.ndarray) -> np.ndarray:
    """Mark a float32 C-contiguous array so that the next AttentionTrace takes it without a copy."""
    assert arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.owndata
    _ADOPTED.add(id(arr))
    return arr


def _own_float32(x: Any, name: str) -> np.ndarray:
    """A float32 C-contiguous array the trace owns: the adopted array itself, else a copy."""
    if isinstance(x, np.ndarray) and id(x) in _ADOPTED:
        _ADOPTED.discard(id(x))
        return x
    arr = _to_numpy(x, name)
    # _to_numpy returns its input when it is already float32 C-contiguous: copy then.
    return np.array(arr, copy=True) if (arr is x or not arr.flags.owndata or arr.base is not None) else arr


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a torch tensor / array-like to a float32 numpy array."""
    arr = _as_numpy(x, name)
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, received an object array")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a floating point array, received dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


# -- memory guard -------------------------------------------------------------------------------


def _available_memory_bytes() -> int | None:
    """Memory the process may still use (MemAvailable), or None when it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing: read /proc on Linux
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


def check_dense_size(
    n_layers: int, n_heads: int, n_queries: int, n_keys: int, *, gradients: bool = False,
    overhead: float = 1.0, what: str = "attentions",
) -> int:
    """Refuse a dense ``[L, H, Tq, Tk]`` float32 trace that would not fit in memory; return its bytes.

    ``overhead`` is the peak of the operation relative to the arrays it returns (1.0: only
    the returned arrays). The check runs before anything is allocated; it raises
    ``ValueError`` with the sizes and the alternatives.
    """
    per_array = 4 * int(n_layers) * int(n_heads) * int(n_queries) * int(n_keys)
    n_arrays = 2 if gradients else 1
    need = int(per_array * n_arrays * overhead)
    available = _available_memory_bytes()
    if available is not None and need > available:
        with_grads = f" x 2 with gradients = {_gib(per_array * 2)}" if gradients else ""
        raise ValueError(
            f"{what}: a dense trace of {n_layers} layers x {n_heads} heads x {n_queries} x {n_keys} tokens "
            f"is {_gib(per_array)} of float32{with_grads}; this needs about {_gib(need)}, more than the "
            f"{_gib(available)} of memory available. Use attn_widgets.trace_lazy(...) (keeps queries and "
            "keys, computes each map on demand), fewer tokens (max_length=...), or fewer layers / heads."
        )
    return per_array * n_arrays


def _dense_shape(attentions: Any, batch_index: int) -> tuple[int, ...] | None:
    """The ``[L, H, Tq, Tk]`` shape that :func:`_stack_layers` would build, read without converting."""
    if isinstance(attentions, (tuple, list)):
        first = attentions[0] if attentions else None
        shape = tuple(getattr(first, "shape", ()) or ())
        if len(shape) == 4:
            shape = shape[1:]
        return (len(attentions), *shape) if len(shape) == 3 else None
    shape = tuple(getattr(attentions, "shape", ()) or ())
    if len(shape) == 5:
        shape = shape[:1] + shape[2:]
    return shape if len(shape) == 4 else None


# -- display --------------------------------------------------------------------------------------


def display_labels(tokens: Sequence[str]) -> tuple[str, ...]:
    """Token strings safe to encode and draw: lone surrogates (invalid code points, e.g. from a
    byte-level token split inside a character) become U+FFFD. The trace keeps the raw tokens;
    views and exports show these labels."""
    out = []
    for t in tokens:
        t = str(t)
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            t = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in t)
        out.append(t)
    return tuple(out)


# -- validators shared with LazyTrace (lazy.py) and the flow functions (flows/_inputs.py) ----------


def _check_strings(values: Any, name: str, expected: str = "a list of strings") -> tuple[str, ...]:
    """``values`` as a tuple of strings; TypeError naming ``name`` otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) and not hasattr(values, "__iter__"):
        hint = " (a single string; pass a list such as text.split())" if isinstance(values, str) else ""
        raise TypeError(f"{name}: expected {expected}, received {type(values).__name__}{hint}")
    values = tuple(values)
    bad = [i for i, t in enumerate(values) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name}: expected strings, element {bad[0]} is {type(values[bad[0]]).__name__}")
    return values


def _check_weights(a: np.ndarray, name: str, atol: float = ROW_SUM_ATOL) -> None:
    """Attention weights ``[L, H, Tq, Tk]``: finite, >= 0, every query row sums to 1 (within ``atol``).

    Checked one layer at a time: whole-array temporaries (masks, sums) would add a quarter
    of a copy of the trace to its peak. The read-only weights of a constructed trace were
    checked (with the tolerance of their source dtype) and are not checked again."""
    if _VALIDATED.get(id(a)) is a:
        return
    if a.ndim != 4:
        raise ValueError(f"{name}: expected rank 4 [L, H, T, T], received shape {a.shape}")
    for layer in range(a.shape[0]):
        block = a[layer]
        finite = np.isfinite(block)
        if not finite.all():
            where = [layer] + np.argwhere(~finite)[0].tolist()
            raise ValueError(f"{name}: contains NaN or inf (first at index {where}, shape {a.shape})")
        neg = block < 0
        if neg.any():
            where = np.argwhere(neg)[0].tolist()
            raise ValueError(
                f"{name}: weights must be >= 0 (post-softmax), found {block[tuple(where)]:.4g} at {[layer] + where}"
            )
        sums = block.sum(axis=-1, dtype=np.float64)
        off = np.abs(sums - 1.0) > atol
        if off.any():
            h, i = np.argwhere(off)[0].tolist()
            raise ValueError(
                f"{name}: each query row must sum to 1 over keys; row (layer={layer}, head={h}, query={i}) "
                f"sums to {sums[h, i]:.6f} (tolerance {atol:g}). Pass post-softmax weights with padding cropped."
            )


def _special_mask_from_tokens(tokens: Sequence[str], special_tokens: Any) -> np.ndarray:
    """Bool mask of ``tokens`` found in ``special_tokens`` (None / True: the default markers)."""
    if special_tokens is None or special_tokens is True:
        marks: Any = DEFAULT_SPECIAL_TOKENS
    elif special_tokens is False:
        return np.zeros(len(tokens), dtype=bool)
    else:
        marks = frozenset(_check_strings(special_tokens, "special_tokens", "None, True, False or a list of strings"))
    return np.fromiter((t.strip() in marks for t in tokens), dtype=bool, count=len(tokens))


def _check_bool(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, received {value!r}")


def _check_special_mask(mask: Any, t: int) -> np.ndarray:
    """Bool ``[t]`` special-token mask; all False for None."""
    if mask is None:
        return np.zeros(t, dtype=bool)
    mask = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if mask.shape != (t,):
        raise ValueError(f"special_mask: expected shape ({t},), received {mask.shape}")
    if mask.dtype != bool:
        # 0/1 integers are a mask; strings ("no" is truthy) and floats are not.
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise TypeError(
                f"special_mask: expected booleans (or 0/1 integers), received dtype {mask.dtype}"
            )
    return mask.astype(bool)


def _check_token_ids(ids: Any, t: int) -> tuple[int, ...] | None:
    if ids is None:
        return None
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if isinstance(ids, (str, bytes)) or not isinstance(values, list):
        raise TypeError(f"token_ids: expected a sequence of integers, received {type(ids).__name__}")
    bad = [i for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    if bad:
        raise TypeError(
            f"token_ids: expected integers, element {bad[0]} is {values[bad[0]]!r} ({type(values[bad[0]]).__name__})"
        )
    ids = tuple(int(i) for i in values)
    if len(ids) != t:
        raise ValueError(f"token_ids: expected {t} ids, received {len(ids)}")
    return ids


def _check_tile_range(r0: Any, r1: Any, c0: Any, c1: Any, n_rows: int, n_cols: int) -> tuple[int, int, int, int]:
    """A half-open tile ``[r0, r1) x [c0, c1)`` of an ``n_rows x n_cols`` map, as plain ints."""
    out = []
    for name, v in (("r0", r0), ("r1", r1), ("c0", c0), ("c1", c1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an int, received {v!r}")
        out.append(int(v))
    r0, r1, c0, c1 = out
    if not 0 <= r0 < r1 <= n_rows:
        raise ValueError(f"rows: expected 0 <= r0 < r1 <= {n_rows}, received r0={r0}, r1={r1}")
    if not 0 <= c0 < c1 <= n_cols:
        raise ValueError(f"cols: expected 0 <= c0 < c1 <= {n_cols}, received c0={c0}, c1={c1}")
    return r0, r1, c0, c1


def _check_layer(layer: Any, n_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer: expected an int, received {layer!r}")
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer: expected 0 <= layer < {n_layers}, received {layer}")
    return int(layer)


def _check_head(head: Any, n_heads: int) -> int:
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)):
        raise TypeError(f"head: expected an int, 'mean' or 'max', received {head!r}")
    if not 0 <= head < n_heads:
        raise ValueError(f"head: expected 0 <= head < {n_heads}, received {head}")
    return int(head)


def _stack_layers(attentions: Any, batch_index: int, name: str) -> np.ndarray:
    """Accept a per-layer tuple/list of [B, H, T, T] (transformers) or a [L, H, T, T] array."""
    if isinstance(attentions, (tuple, list)):
        if len(attentions) == 0:
            raise ValueError(f"{name}: expected one tensor per layer, received an empty sequence")
        if any(a is None for a in attentions):
            missing = [i for i, a in enumerate(attentions) if a is None]
            raise ValueError(
                f"{name}: layers {missing} have no attention weights (None). The model probably "
                "runs sdpa/flash attention, which returns no weights; load it with "
                "attn_implementation='eager' or use attn_widgets.trace(), which switches it."
            )
        layers = [_to_numpy(a, f"{name}[{i}]") for i, a in enumerate(attentions)]
        shapes = {a.shape for a in layers}
        if len(shapes) != 1:
            raise ValueError(f"{name}: layers have different shapes {sorted(shapes)}")
        first = layers[0]
        if first.ndim == 4:
            b = first.shape[0]
            if not -b <= batch_index < b:
                raise ValueError(
                    f"{name}: batch_index={batch_index} out of range for batch size {b} "
                    f"(layer shape {tuple(first.shape)})"
                )
            layers = [a[batch_index] for a in layers]
        elif first.ndim != 3:
            raise ValueError(
                f"{name}: each layer must be [B, H, T, T] or [H, T, T], received shape {tuple(first.shape)}"
            )
        return np.ascontiguousarray(np.stack(layers, axis=0))
    arr = _to_numpy(attentions, name)
    if arr.ndim == 5:
        b = arr.shape[1]
        if not -b <= batch_index < b:
            raise ValueError(
                f"{name}: batch_index={batch_index} out of range for [L, B, H, T, T] shape {arr.shape}"
            )
        arr = np.ascontiguousarray(arr[:, batch_index])
    return arr


@dataclass(frozen=True, eq=False)
class AttentionTrace:
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
        maps; never causal).

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
        if head == "mean":
            return self.attentions[layer].mean(axis=0)
        if head == "max":
            return self.attentions[layer].max(axis=0)
        return self.attentions[layer, self.check_head(head)]

    def check_layer(self, layer: Any) -> int:
        return _check_layer(layer, self.n_layers)

    def check_head(self, head: Any) -> int:
        return _check_head(head, self.n_heads)

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
