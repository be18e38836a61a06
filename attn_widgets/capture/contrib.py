"""Capture what the contribution methods need: value norms and ALTI contribution matrices.

Forward hooks record, during the one forward pass the capture already makes, each
attention block's residual stream input ``x`` ``[T, d]`` and its value states ``v``
``[T, H_kv * d_head]`` (the value projection's output, bias included; for pre-LN models
this is the projection of the *normed* token, so the norm is inside ``v``). The
attention weights are the ones ``output_attentions=True`` returns. Everything else is
read from the weights: ``W_O^h``, ``b_O`` and, for post-LN blocks, the layer norm.

Per layer this gives (see :mod:`attn_widgets.flows.contrib` for the methods):

* ``value_norms`` ``[H, T]``: ``||f_h(x_j)||_2`` with ``f_h(x) = (x W_V^h + b_V^h) W_O^h``
  (Kobayashi et al. 2020). Grouped-query attention: query head ``h`` reads value head
  ``h // (H / H_kv)`` (``repeat_kv``) but has its own ``W_O^h``, so ``f_h`` is per query head.
* ``mixed_norms`` ``[T, T]``: ``||sum_h alpha[h, i, j] f_h(x_j)||_2``, the head-mixed norm.
* ``contributions`` ``[T, T]``: ALTI (Ferrando et al. 2022) ``c_ij = max(0, ||y_i||_1 -
  ||y_i - T_i(x_j)||_1)``, not yet row-normalised, where the block output decomposes as
  ``y_i = sum_j T_i(x_j) + b_i``:

  - pre-LN (GPT-2, Llama, T5): ``y_i = x_i + attn_i``, ``T_i(x_j) = sum_h alpha[h,i,j]
    f_h(x_j) + [i == j] x_i`` and ``b_i = b_O``;
  - post-LN (BERT, BART): ``y_i = LN(x_i + attn_i)``. With ``s_i`` the standard deviation
    of the layer norm's input (fixed by the actual sum), LN is linear in each part:
    ``T_i(x_j) = gamma * (z_ij - mean(z_ij)) / s_i`` with ``z_ij = sum_h alpha[h,i,j]
    f_h(x_j) + [i == j] x_i``, and ``b_i = gamma * (b_O - mean(b_O)) / s_i + beta``.

The per-pair vectors ``T_i(x_j)`` are ``[T, T, d]`` per layer; they are built a chunk of
query rows at a time (``chunk_bytes``, 16 MB by default) and reduced to norms at once,
so no layer's full ``[T, T, d]`` tensor ever exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._common import _torch

__all__ = [
    "BlockCapture",
    "ContributionRecorder",
    "block_vectors",
    "capture_contributions",
    "compute_contributions",
    "supported_model_types",
]

#: Default bound on one chunk of per-pair vectors ``[T, rows, d]`` (float32). Measured on
#: MiniLM at T=512: 16 MB chunks run ~2x faster than 64 MB ones (they stay in cache).
CHUNK_BYTES = 16 * 2**20


@dataclass
class _LayerSpec:
    """Where one attention block's pieces live in a model."""

    x_module: Any  # forward pre-hook: its first input is the residual stream x
    v_module: Any  # forward hook: its output holds the value states
    v_slice: slice | None  # part of v_module's output that is the values (GPT-2's fused qkv)
    w_o: Callable[[], Any]  # -> [H, dh, d]
    b_o: Callable[[], Any]  # -> [d] or None
    post_ln: Any  # nn.LayerNorm applied to x + attn (post-LN blocks), else None
    n_heads: int
    n_kv: int


def _linear_wo(linear: Any, n_heads: int) -> Callable[[], Any]:
    """``W_O^h`` of an nn.Linear (weight ``[d, H*dh]``): ``weight[:, h*dh:(h+1)*dh].T``."""

    def get():
        w = linear.weight  # [d, H * dh]
        d, hd = w.shape
        return w.t().reshape(n_heads, hd // n_heads, d)

    return get


def _conv1d_wo(conv: Any, n_heads: int) -> Callable[[], Any]:
    """GPT-2's Conv1D stores the weight transposed vs nn.Linear: ``[H*dh, d]``, y = x @ W + b."""

    def get():
        w = conv.weight  # [H * dh, d]
        hd, d = w.shape
        return w.reshape(n_heads, hd // n_heads, d)

    return get


def _bias(module: Any) -> Callable[[], Any]:
    return lambda: getattr(module, "bias", None)


def _config_get(config: Any, *names: str) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return None


def _base(model: Any, attr: str) -> Any:
    """The submodule that has ``attr`` (``model`` itself, its base model, or ``.model``)."""
    for cand in (model, getattr(model, "base_model", None), getattr(model, "model", None),
                 getattr(model, "transformer", None)):
        if cand is not None and hasattr(cand, attr):
            return cand
    return None


def _specs_bert(model: Any, config: Any) -> list[_LayerSpec]:
    enc = _base(model, "encoder").encoder
    h = config.num_attention_heads
    return [
        _LayerSpec(
            x_module=layer.attention, v_module=layer.attention.self.value, v_slice=None,
            w_o=_linear_wo(layer.attention.output.dense, h), b_o=_bias(layer.attention.output.dense),
            post_ln=layer.attention.output.LayerNorm, n_heads=h, n_kv=h,
        )
        for layer in enc.layer
    ]


def _specs_gpt2(model: Any, config: Any) -> list[_LayerSpec]:
    base = _base(model, "h")
    h, d = config.n_head, config.n_embd
    return [
        _LayerSpec(
            x_module=block.ln_1, v_module=block.attn.c_attn, v_slice=slice(2 * d, 3 * d),
            w_o=_conv1d_wo(block.attn.c_proj, h), b_o=_bias(block.attn.c_proj),
            post_ln=None, n_heads=h, n_kv=h,
        )
        for block in base.h
    ]


def _specs_llama(model: Any, config: Any) -> list[_LayerSpec]:
    base = _base(model, "layers")
    h = config.num_attention_heads
    kv = _config_get(config, "num_key_value_heads") or h
    return [
        _LayerSpec(
            x_module=layer.input_layernorm, v_module=layer.self_attn.v_proj, v_slice=None,
            w_o=_linear_wo(layer.self_attn.o_proj, h), b_o=_bias(layer.self_attn.o_proj),
            post_ln=None, n_heads=h, n_kv=kv,
        )
        for layer in base.layers
    ]


def _encoder_of(model: Any) -> Any:
    getter = getattr(model, "get_encoder", None)
    enc = getter() if callable(getter) else None
    return enc if enc is not None else model


def _specs_t5(model: Any, config: Any) -> list[_LayerSpec]:
    enc = _encoder_of(model)
    h = config.num_heads
    out = []
    for block in enc.block:
        sa = block.layer[0]
        out.append(_LayerSpec(
            x_module=sa.layer_norm, v_module=sa.SelfAttention.v, v_slice=None,
            w_o=_linear_wo(sa.SelfAttention.o, h), b_o=_bias(sa.SelfAttention.o),
            post_ln=None, n_heads=h, n_kv=h,
        ))
    return out


def _specs_bart(model: Any, config: Any) -> list[_LayerSpec]:
    enc = _encoder_of(model)
    h = config.encoder_attention_heads
    return [
        _LayerSpec(
            x_module=layer.self_attn, v_module=layer.self_attn.v_proj, v_slice=None,
            w_o=_linear_wo(layer.self_attn.out_proj, h), b_o=_bias(layer.self_attn.out_proj),
            post_ln=layer.self_attn_layer_norm, n_heads=h, n_kv=h,
        )
        for layer in enc.layers
    ]


_ADAPTERS: dict[str, Callable[[Any, Any], list[_LayerSpec]]] = {
    "bert": _specs_bert,
    "roberta": _specs_bert,
    "gpt2": _specs_gpt2,
    "llama": _specs_llama,
    "mistral": _specs_llama,
    "qwen2": _specs_llama,
    "t5": _specs_t5,
    "bart": _specs_bart,
}


def supported_model_types() -> tuple[str, ...]:
    """``config.model_type`` values whose attention blocks :class:`ContributionRecorder` knows."""
    return tuple(sorted(_ADAPTERS))


def _layer_specs(model: Any) -> list[_LayerSpec]:
    config = getattr(model, "config", None)
    mtype = getattr(config, "model_type", None)
    if mtype not in _ADAPTERS:
        raise ValueError(
            f"model: contributions need to know where a model's value projection, output "
            f"projection and layer norms are; supported model types are {supported_model_types()}, "
            f"received {type(model).__name__} (model_type={mtype!r})"
        )
    specs = _ADAPTERS[mtype](model, config)
    if not specs:
        raise ValueError(f"model: found no attention blocks in {type(model).__name__}")
    return specs


@dataclass
class BlockCapture:
    """One attention block's recorded inputs (one sequence), on the model's device.

    ``x`` ``[T, d]`` residual stream entering the block; ``values`` ``[H_kv, T, dh]``;
    ``w_o`` ``[H, dh, d]``; ``b_o`` ``[d]`` or None; ``ln`` ``(gamma, beta, eps)`` of the
    post-LN layer norm or None for a pre-LN block. All float32, detached.
    """

    x: Any
    values: Any
    w_o: Any
    b_o: Any
    ln: tuple | None
    n_heads: int
    n_kv: int

    @property
    def post_ln(self) -> bool:
        return self.ln is not None

    def head_values(self) -> Any:
        """``[H, T, dh]``: the value vectors each *query* head reads (repeat_kv mapping)."""
        rep = self.n_heads // self.n_kv
        # repeat_kv expands kv head k to query heads k*rep .. k*rep + rep - 1.
        return self.values.repeat_interleave(rep, dim=0) if rep > 1 else self.values

    def transformed(self) -> Any:
        """``f_h(x_j)`` for every query head and token, ``[H, T, d]``."""
        torch = _torch()
        return torch.bmm(self.head_values(), self.w_o)


class ContributionRecorder:
    """Context manager: hooks a model's attention blocks and records :class:`BlockCapture` s.

    Use around the model's forward pass; :meth:`blocks` returns one capture per layer of
    the latest forward (a second forward overwrites the first).
    """

    def __init__(self, model: Any, batch_index: int = 0) -> None:
        self.model = model
        self.batch_index = batch_index
        self.specs = _layer_specs(model)
        self._x: dict[int, Any] = {}
        self._v: dict[int, Any] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> ContributionRecorder:
        for idx, spec in enumerate(self.specs):
            self._handles.append(spec.x_module.register_forward_pre_hook(self._x_hook(idx), with_kwargs=True))
            self._handles.append(spec.v_module.register_forward_hook(self._v_hook(idx, spec.v_slice)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _x_hook(self, idx: int):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states")
            self._x[idx] = x[self.batch_index].detach()

        return hook

    def _v_hook(self, idx: int, part: slice | None):
        def hook(module, args, output):
            v = output[0] if isinstance(output, tuple) else output
            v = v[self.batch_index].detach()
            self._v[idx] = v if part is None else v[..., part]

        return hook

    def blocks(self) -> list[BlockCapture]:
        missing = [i for i in range(len(self.specs)) if i not in self._x or i not in self._v]
        if missing:
            raise ValueError(
                f"model: the forward pass did not run attention blocks {missing} through the "
                "expected modules; contributions cannot be computed for this model"
            )
        out = []
        for idx, spec in enumerate(self.specs):
            x = self._x[idx].float()
            v = self._v[idx].float()
            t = x.shape[0]
            w_o = spec.w_o().detach().float()
            dh = w_o.shape[1]
            if v.shape[-1] != spec.n_kv * dh:
                raise ValueError(
                    f"model: layer {idx} value states have width {v.shape[-1]}, expected "
                    f"n_kv * head_dim = {spec.n_kv} * {dh}"
                )
            values = v.reshape(t, spec.n_kv, dh).transpose(0, 1).contiguous()
            b_o = spec.b_o()
            ln = None
            if spec.post_ln is not None:
                lnm = spec.post_ln
                beta = getattr(lnm, "bias", None)
                ln = (lnm.weight.detach().float(),
                      None if beta is None else beta.detach().float(), float(lnm.eps))
            out.append(BlockCapture(
                x=x, values=values, w_o=w_o.to(x.device),
                b_o=None if b_o is None else b_o.detach().float().to(x.device),
                ln=ln, n_heads=spec.n_heads, n_kv=spec.n_kv,
            ))
        return out


# -- the decomposition -----------------------------------------------------------------------


@dataclass
class _Prepared:
    fj: Any  # [T(j), H, d] the vectors the per-pair sums are made of, key-major for bmm
    xr: Any  # [T, d] the residual part of T_i(x_i)
    y: Any  # [T, d] the block's output
    bias: Any  # [T, d] the part of y attributed to no source token
    inv_s: Any  # [T] 1 / s_i of the post-LN layer norm, or None (pre-LN)
    gram: Any  # [T(j), H, H] float64 <f_h(x_j), f_g(x_j)>, for the head-mixed norms
    value_norms: Any  # [H, T]


def _prepare(block: BlockCapture, alpha: Any) -> _Prepared:
    """Everything per layer that is O(H T d) or O(H^2 T d): no per-pair vectors.

    Post-LN: ``T_i(x_j) = gamma * (z_ij - mean z_ij) / s_i`` is linear in ``z_ij = sum_h
    alpha[h,i,j] f_h(x_j) + [i == j] x_i``, so centring and ``gamma`` are applied once to
    each ``f_h(x_j)`` and ``x_i`` here, and ``1 / s_i`` is folded into the attention rows.
    """
    torch = _torch()
    f = block.transformed()  # [H, T, d]
    value_norms = torch.linalg.vector_norm(f, dim=-1)
    # attn_i = sum_h alpha_h @ v_h W_O^h + b_O, computed the way the model does (cheap).
    ctx = torch.bmm(alpha, block.head_values())  # [H, T, dh]
    attn = torch.einsum("htk,hkd->td", ctx, block.w_o)
    b_o = block.b_o if block.b_o is not None else torch.zeros_like(block.x[0])
    pre = block.x + attn + b_o
    fd = f.permute(1, 0, 2).double()
    gram = torch.bmm(fd, fd.transpose(1, 2))  # [T(j), H, H]
    if block.ln is None:
        y, bias, inv_s, fp, xr = pre, b_o.expand_as(pre), None, f, block.x
    else:
        gamma, beta, eps = block.ln
        s = torch.sqrt(pre.var(-1, unbiased=False) + eps)  # [T], exactly as nn.LayerNorm
        inv_s = 1.0 / s
        beta = beta if beta is not None else torch.zeros_like(gamma)
        y = (pre - pre.mean(-1, keepdim=True)) * inv_s[:, None] * gamma + beta
        bias = (b_o - b_o.mean()) * gamma * inv_s[:, None] + beta
        fp = (f - f.mean(-1, keepdim=True)) * gamma
        xr = (block.x - block.x.mean(-1, keepdim=True)) * gamma * inv_s[:, None]
    return _Prepared(fj=fp.permute(1, 0, 2).contiguous(), xr=xr, y=y, bias=bias, inv_s=inv_s,
                     gram=gram, value_norms=value_norms)


def _chunk(prep: _Prepared, alpha: Any, r0: int, r1: int, minus_y: bool, keys: int | None = None) -> Any:
    """``T_i(x_j)`` (``minus_y``: ``T_i(x_j) - y_i``) for query rows ``r0:r1`` and keys
    ``j < keys`` (all by default), as ``[keys, r, d]``."""
    torch = _torch()
    keys = alpha.shape[-1] if keys is None else keys
    a = alpha[:, r0:r1, :keys]
    if prep.inv_s is not None:
        a = a * prep.inv_s[None, r0:r1, None]
    a = a.permute(2, 1, 0).contiguous()  # [T(j), r, H]; bmm on a strided view is ~6x slower
    if minus_y:  # one pass: -y_i + sum_h alpha[h,i,j] f_h(x_j)
        m = torch.baddbmm(-prep.y[None, r0:r1], a, prep.fj[:keys])
    else:
        m = torch.bmm(a, prep.fj[:keys])
    rows = torch.arange(r0, r1, device=m.device)
    m[rows, rows - r0] += prep.xr[r0:r1]  # the residual: token i's own vector, j == i only
    return m


def _mixed(prep: _Prepared, alpha: Any, r0: int, r1: int, keys: int) -> Any:
    """``||sum_h alpha[h,i,j] f_h(x_j)||_2`` for rows ``r0:r1`` as ``[r, T]``, via the per-token
    Gram matrices (``a^T G_j a``): ``O(T r H^2)``, no vectors."""
    torch = _torch()
    a = alpha[:, r0:r1, :keys].permute(2, 1, 0).double().contiguous()  # [T(j), r, H]
    q = torch.bmm(a, prep.gram[:keys])  # [T(j), r, H]
    return (q * a).sum(-1).clamp_(min=0).sqrt_().t().float()


def _rows_per_chunk(t: int, d: int, chunk_bytes: int) -> int:
    return max(1, min(t, int(chunk_bytes) // (4 * t * d)))


def block_vectors(block: BlockCapture, alpha: Any, rows: Any = None) -> tuple[Any, Any, Any]:
    """The decomposition of one block for some query rows (for tests and inspection).

    Returns ``(vectors, bias, y)``: ``vectors[k, j] = T_{rows[k]}(x_j)`` ``[r, T, d]``,
    ``bias`` ``[r, d]`` the part attributed to no token, ``y`` ``[r, d]`` the block's output,
    with ``vectors.sum(1) + bias == y``. This materialises ``[r, T, d]``: keep ``rows`` small.
    """
    torch = _torch()
    alpha = alpha.float()
    prep = _prepare(block, alpha)
    t = alpha.shape[-1]
    rows = list(range(t)) if rows is None else [int(r) for r in rows]
    vecs = torch.stack([_chunk(prep, alpha, r, r + 1, minus_y=False)[:, 0] for r in rows])
    idx = torch.tensor(rows, device=alpha.device)
    return vecs, prep.bias[idx], prep.y[idx]


def compute_contributions(
    blocks: list[BlockCapture], attentions: Any, chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, np.ndarray]:
    """Value norms, head-mixed norms and ALTI contributions of every layer.

    Parameters
    ----------
    blocks
        From :meth:`ContributionRecorder.blocks`.
    attentions
        Per-layer attention weights, each ``[H, T, T]`` or ``[1, H, T, T]`` (torch).
    chunk_bytes
        Bound on one chunk of per-pair vectors; rows per chunk = ``chunk_bytes / (4 T d)``.

    Returns
    -------
    dict with float32 numpy arrays ``value_norms`` ``[L, H, T]``, ``mixed_norms``
    ``[L, T, T]`` and ``contributions`` ``[L, T, T]`` (``c_ij`` before row normalisation).
    """
    torch = _torch()
    if len(blocks) != len(attentions):
        raise ValueError(
            f"attentions: expected one tensor per recorded block ({len(blocks)}), received {len(attentions)}"
        )
    n_layers = len(blocks)
    vn, mixed_all, contrib_all = [], [], []
    with torch.no_grad():
        for layer, (block, a) in enumerate(zip(blocks, attentions)):
            alpha = a.detach()
            alpha = (alpha[0] if alpha.ndim == 4 else alpha).float().to(block.x.device)
            h, t, _ = alpha.shape
            if h != block.n_heads or t != block.x.shape[0]:
                raise ValueError(
                    f"attentions[{layer}]: expected [{block.n_heads}, {block.x.shape[0]}, "
                    f"{block.x.shape[0]}], received {tuple(alpha.shape)}"
                )
            prep = _prepare(block, alpha)
            d = prep.y.shape[-1]
            y_l1 = prep.y.double().abs().sum(-1)
            mixed = torch.zeros(t, t, device=alpha.device)
            contrib = torch.zeros(t, t, device=alpha.device)
            step = _rows_per_chunk(t, d, chunk_bytes)
            for r0 in range(0, t, step):
                r1 = min(t, r0 + step)
                # Causal rows: keys after the chunk's last query get no weight and move exactly
                # nothing (c = 0, mixed norm 0), so they are skipped: half the work for decoders.
                keys = r1 if r1 < t and not alpha[:, r0:r1, r1:].any() else t
                mixed[r0:r1, :keys] = _mixed(prep, alpha, r0, r1, keys)
                # ||y_i||_1 - ||y_i - T_i(x_j)||_1 cancels, so the sum over d must be accurate:
                # torch's sum (cascade summation) is; vector_norm(ord=1) summed in float32 was off
                # by ~eps * ||y_i||_1 (1e-5 on MiniLM), and a float64 cast costs 10x.
                dist = _chunk(prep, alpha, r0, r1, minus_y=True, keys=keys).abs_().sum(-1)
                c = (y_l1[r0:r1, None] - dist.t()).clamp_(min=0)
                # A key no head attends to (causal mask) moves exactly nothing: c = 0, not the
                # rounding left by ||y||_1 - ||y - 0||_1 summed in two different orders.
                silent = (alpha[:, r0:r1, :keys] == 0).all(0)
                silent[torch.arange(r1 - r0), torch.arange(r0, r1)] = False
                contrib[r0:r1, :keys] = c.masked_fill_(silent, 0.0)
            vn.append(prep.value_norms.cpu().numpy())
            mixed_all.append(mixed.cpu().numpy())
            contrib_all.append(contrib.cpu().numpy())
    assert len(vn) == n_layers
    return {
        "value_norms": np.ascontiguousarray(np.stack(vn), dtype=np.float32),
        "mixed_norms": np.ascontiguousarray(np.stack(mixed_all), dtype=np.float32),
        "contributions": np.ascontiguousarray(np.stack(contrib_all), dtype=np.float32),
    }


@contextlib.contextmanager
def recording(model: Any, enabled: bool = True, batch_index: int = 0) -> Iterator[ContributionRecorder | None]:
    """``ContributionRecorder(model)`` when ``enabled``, else yields None (no hooks)."""
    if not enabled:
        yield None
        return
    with ContributionRecorder(model, batch_index=batch_index) as rec:
        yield rec


def capture_contributions(
    model: Any, inputs: dict, chunk_bytes: int = CHUNK_BYTES,
) -> dict[str, np.ndarray]:
    """One forward of ``model`` (or, for T5 / BART, its encoder) and the contribution arrays.

    ``inputs`` is a tokenized batch of one sequence (``input_ids``, optional
    ``attention_mask``), padding already cropped. The model must run eager attention.
    Returns :func:`compute_contributions`' dict plus ``attentions`` ``[L, H, T, T]``.
    """
    torch = _torch()
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    runner = _encoder_of(model) if mtype in ("t5", "bart") else model
    with ContributionRecorder(model) as rec, torch.no_grad():
        out = runner(**inputs, output_attentions=True, return_dict=True)
    attentions = out.attentions
    if not attentions or any(a is None for a in attentions):
        raise ValueError(
            f"model: {type(model).__name__} returned no attention weights; load it with "
            "attn_implementation='eager'"
        )
    res = compute_contributions(rec.blocks(), attentions, chunk_bytes=chunk_bytes)
    res["attentions"] = np.stack([a[0].float().cpu().numpy() for a in attentions])
    return res
