"""Input checks shared by the traces (trace.py, lazy.py), the flows and the widgets.

A neutral module (numpy only, imports nothing of attn_widgets), so ``flows/`` can check its
inputs without importing the trace classes, and ``trace.py`` may call ``flows`` one way.
Every check raises ``ValueError`` / ``TypeError`` naming the argument, what was
expected and what was received.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal, Sequence, Union

import numpy as np

__all__ = [
    "HEAD_AGGREGATES",
    "HeadSelector",
    "TraceChecks",
    "MAX",
    "MEAN",
    "check_head_selector",
    "check_index",
    "check_layer",
]

#: A head of a layer: its index, or an aggregate over the layer's heads.
HeadSelector = Union[int, Literal["mean", "max"]]
MEAN: Literal["mean"] = "mean"
MAX: Literal["max"] = "max"
#: The aggregates a :data:`HeadSelector` may name.
HEAD_AGGREGATES: tuple[str, str] = (MEAN, MAX)

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
        out.append(check_index(v, name))
    r0, r1, c0, c1 = out
    if not 0 <= r0 < r1 <= n_rows:
        raise ValueError(f"rows: expected 0 <= r0 < r1 <= {n_rows}, received r0={r0}, r1={r1} (out of range)")
    if not 0 <= c0 < c1 <= n_cols:
        raise ValueError(f"cols: expected 0 <= c0 < c1 <= {n_cols}, received c0={c0}, c1={c1} (out of range)")
    return r0, r1, c0, c1


def check_index(value: Any, name: str, n: int | None = None, what: str = "") -> int:
    """``value`` as a plain int: any integral type (``int``, numpy integers such as the
    ``np.int64`` of ``argmax`` / ``unravel_index``, anything with ``__index__``), never a
    bool, a float or a string; with ``n``, also ``0 <= value < n``.

    Raises ``TypeError`` whose message says "type" when the type is wrong and
    ``ValueError`` whose message says "range" when the value is out of range.
    """
    if not isinstance(value, (bool, np.bool_, str, bytes, float, np.floating)):
        from operator import index  # (imported here: keeps this module's imports unchanged)

        try:
            i = index(value)
        except TypeError:
            pass
        else:
            if n is not None and not 0 <= i < n:
                raise ValueError(f"{name}: expected 0 <= {name} < {n}{what}, received {i} (out of range)")
            return i
    raise TypeError(f"{name}: expected an int, received {value!r} (wrong type: {type(value).__name__})")


def _check_layer(layer: Any, n_layers: int) -> int:
    return check_index(layer, "layer", n_layers)


def _check_head(head: Any, n_heads: int) -> int:
    try:
        return check_index(head, "head", n_heads)
    except TypeError:
        raise TypeError(
            f"head: expected an int, 'mean' or 'max', received {head!r} (wrong type: {type(head).__name__})"
        ) from None


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


def is_trace_like(x: Any) -> bool:
    """True for an in-memory trace (``attentions``, ``gradients``, ``special_mask``): lets
    the flow functions accept a trace without importing trace.py (no import cycle)."""
    return not isinstance(x, np.ndarray) and all(
        hasattr(x, n) for n in ("attentions", "gradients", "special_mask")
    )


def check_layer(layer: Any, n_layers: int) -> int:
    """``0 <= layer < n_layers`` as a plain int."""
    return _check_layer(layer, n_layers)


def check_head_selector(head: Any, n_heads: int) -> int | str:
    """A :data:`HeadSelector`: ``"mean"`` / ``"max"`` unchanged, else ``0 <= head < n_heads``."""
    if isinstance(head, str):
        if head not in HEAD_AGGREGATES:
            raise ValueError(f"head: expected an int, 'mean' or 'max', received {head!r}")
        return head
    return _check_head(head, n_heads)



class TraceChecks:
    """The validators of a trace, against its own sizes: shared by AttentionTrace and
    LazyTrace (which provide ``n_layers``, ``n_heads``, ``n_tokens``, ``n_keys``)."""

    n_layers: int
    n_heads: int
    n_tokens: int
    n_keys: int

    def check_layer(self, layer: Any) -> int:
        """``0 <= layer < n_layers`` as a plain int."""
        return _check_layer(layer, self.n_layers)

    def check_head(self, head: Any) -> int:
        """``0 <= head < n_heads`` as a plain int."""
        return _check_head(head, self.n_heads)

    def check_selector(self, head: Any) -> int | str:
        """A head index or ``"mean"`` / ``"max"``, validated."""
        return check_head_selector(head, self.n_heads)

    def check_range(self, r0: Any, r1: Any, c0: Any, c1: Any) -> tuple[int, int, int, int]:
        """A half-open tile range inside ``n_tokens x n_keys``, as plain ints."""
        return _check_tile_range(r0, r1, c0, c1, self.n_tokens, self.n_keys)
