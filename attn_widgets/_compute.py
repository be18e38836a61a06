"""Compute backends of :class:`~attn_widgets.LazyTrace`: the same row-block kernels on
PyTorch (when installed; about 25-35 ms per head at T = 4096 on two CPU cores) or NumPy
(several times slower). Each op works in place on preallocated scratch, so a map, tile or
thumbnail never allocates more than its output plus a few MiB."""

from __future__ import annotations

import numpy as np

#: Hidden keys in the statistics kernel: exp() gives 0 as for -inf, and 0 * -1e30 is 0.
_NEG = -1e30

# -- compute backends -------------------------------------------------------------------------
class _TorchOps:
    """Row-block kernels on torch tensors (multi-threaded, in place, no big temporaries)."""

    def __init__(self, torch) -> None:
        self.torch = torch

    def head_qk(self, q: np.ndarray, k: np.ndarray):
        t = self.torch
        q = t.from_numpy(q)
        k = t.from_numpy(k)
        return (q.float() if q.dtype != t.float32 else q), (k.float() if k.dtype != t.float32 else k)

    def rows(self, q, rows):
        if isinstance(rows, slice):
            return q[rows]
        return q[self.torch.from_numpy(rows)]

    def scratch(self, n: int):
        return self.torch.empty(n, dtype=self.torch.float32)

    def batch_scores(self, q: np.ndarray, k: np.ndarray, rows: np.ndarray, group: int, buf):
        """[H, n, T] scores of query rows ``rows`` of every head (keys shared by ``group``
        heads), written into the scratch ``buf`` (a fresh 25 MB output page-faults)."""
        t = self.torch
        qb = t.from_numpy(q)[:, t.from_numpy(rows)].float()
        kb = t.from_numpy(k).float()
        if group > 1:
            kb = kb.repeat_interleave(group, dim=0)
        h, n, tk = qb.shape[0], qb.shape[1], kb.shape[1]
        out = buf[: h * n * tk].view(h, n, tk)
        t.matmul(qb, kb.transpose(1, 2), out=out)
        return out

    def native(self, arr: np.ndarray):
        return self.torch.from_numpy(arr)

    def view(self, buf, n: int, m: int):
        return buf[: n * m].view(n, m)

    def scores(self, qb, k, nc: int, out):
        self.torch.matmul(qb, k[:nc].T, out=out)

    def mul(self, s, v: float):
        s.mul_(v)

    def softcap(self, s, cap: float):
        s.div_(cap).tanh_().mul_(cap)

    def fill(self, s, where, value: float):
        s.masked_fill_(self.torch.from_numpy(where) if isinstance(where, np.ndarray) else where, value)

    def softmax_(self, s):
        t = self.torch
        s.sub_(t.amax(s, dim=1, keepdim=True)).exp_()
        s.div_(s.sum(dim=1, keepdim=True))

    def add_(self, a, b):
        a.add_(b)

    def max_(self, a, b):
        self.torch.maximum(a, b, out=a)

    def pool_rows(self, x, step: int):
        # Reduce over a middle axis (rows of a row-major block): vectorised along the rows.
        n, m = x.shape
        if step == 1 or n == 0:
            return x
        g, rem = divmod(n, step)
        out = x.new_empty((g + (rem > 0), m))
        if g:
            out[:g] = x[: g * step].unflatten(0, (g, step)).amax(dim=1)
        if rem:
            out[g] = x[g * step :].amax(dim=0)
        return out

    def pool_cols(self, x, step: int):
        n, m = x.shape
        if step == 1 or m == 0:
            return x
        g, rem = divmod(m, step)
        out = x.new_empty((n, g + (rem > 0)))
        if g:
            out[:, :g] = x[:, : g * step].unflatten(1, (g, step)).amax(dim=2)
        if rem:
            out[:, g] = x[:, g * step :].amax(dim=1)
        return out

    def write(self, out: np.ndarray, r0: int, x) -> None:
        if x.shape[1]:
            self.torch.from_numpy(out)[r0 : r0 + x.shape[0], : x.shape[1]].copy_(x)

    # -- all heads of a layer at once (head mean / max, layer statistics) ----------------------
    def layer_qk(self, q: np.ndarray, k: np.ndarray):
        """A layer's ``[H, T, d]`` queries and ``[Hkv, T, d]`` keys as float32 tensors (no copy
        for float32 storage; float16 is converted once per call, a few MiB)."""
        t = self.torch
        q = t.from_numpy(q)
        k = t.from_numpy(k)
        return (q.float() if q.dtype != t.float32 else q), (k.float() if k.dtype != t.float32 else k)

    def heads_exp(self, q, k, sel, nc: int, group: int, scale: float, cap, tri_from, bias, buf, shift: bool = True,
                  out=None):
        """Unnormalised probabilities ``e`` ``[H, n, nc]`` (in ``buf``) and their row sums
        ``z`` ``[H, n]`` of query rows ``sel`` (a slice or index array) of every head
        against keys ``:nc``: ``softmax = e / z``. One batched matmul per key group (the
        ``group`` query heads sharing a key head have their rows stacked; keys are never
        copied), the causal triangle added as ``-inf`` on the last columns only
        (``tri_from``: its first column, or None), the extra additive 0 / -inf ``bias``
        ``[n, nc]`` (or None). ``shift=False`` skips subtracting the row maximum: only
        when the caller has bounded every score (``|s| <= 60``: no overflow, no
        underflow of a whole row), it saves a pass over the block. With ``out`` (a second
        scratch) ``e`` goes there and ``buf`` keeps the shifted scores, hidden keys at
        -1e30 (finite: ``e * s`` stays 0)."""
        t = self.torch
        hkv = k.shape[0]
        # q is [Hkv, group, T, d]: the group's rows stacked make one [group * n, d] operand
        qb = q[:, :, sel] if isinstance(sel, slice) else q[:, :, t.from_numpy(sel)]
        n = qb.shape[2]
        # q * scale (small) instead of scaling the [H, n, nc] scores; softcap needs s / cap.
        qb = qb.reshape(hkv, group * n, qb.shape[3]) * (scale if cap is None else scale / cap)
        s = buf[: hkv * group * n * nc].view(hkv, group * n, nc)
        t.bmm(qb, k[:, :nc].transpose(1, 2), out=s)
        s = s.view(hkv * group, n, nc)
        if cap is not None:
            s.tanh_().mul_(cap)
        if tri_from is not None:
            s[:, :, tri_from:].add_(self._tri(n, nc - tri_from, finite=out is not None))
        if bias is not None:
            s.add_(bias)
        if shift:
            s.sub_(s.amax(dim=-1, keepdim=True))
        if out is None:
            s.exp_()
            return s, s.sum(dim=-1)
        e = out[: s.numel()].view(s.shape)
        t.exp(s, out=e)
        return e, e.sum(dim=-1)

    def stats_block(self, q, k, sel, rows: np.ndarray, nc: int, group: int, scale: float, cap, tri_from, hidden,
                    buf, buf2, causal: bool, special: np.ndarray | None) -> np.ndarray:
        """``[3, H]`` float64 sums over the block's query ``rows`` of each row's entropy,
        distance and special share (see :meth:`head_sums`) without a logarithm per score:
        with shifted scores ``s`` (row max 0), ``e = exp(s)`` and ``z = sum e``, a row's
        entropy is ``log z - sum(e s) / z`` (both terms within ``[0, log T]``), and
        ``sum_j p_j f_j = (e @ f) / z`` (one product for distance and special). Hidden keys
        get -1e30 instead of -inf so that ``e * s`` is 0 there, not NaN."""
        t = self.torch
        bias = None if hidden is None else self.bias(hidden, finite=True)
        s_e = self.heads_exp(q, k, sel, nc, group, scale, cap, tri_from, bias, buf, True, out=buf2)
        e, z = s_e
        s = buf[: e.numel()].view(e.shape)
        cols = [t.arange(nc, dtype=t.float32)] if causal else []
        if special is not None:
            cols.append(t.from_numpy(special[:nc].astype(np.float32)))
        pm = t.matmul(e, t.stack(cols, dim=1)) / z.unsqueeze(-1) if cols else None  # [H, n, c]
        r = t.from_numpy(rows.astype(np.float32))
        if causal:  # keys j <= i only: sum_j p (i - j) = i - sum_j p j
            dis = r[None, :] - pm[..., 0]
        else:
            dis = (e * (r[:, None] - t.arange(nc, dtype=t.float32)[None, :]).abs_()).sum(dim=-1) / z
        ent = z.log() - s.mul_(e).sum(dim=-1) / z
        spc = pm[..., -1] if special is not None else t.zeros_like(ent)
        return t.stack([ent, dis, spc]).double().sum(dim=-1).numpy()

    def exp_mean(self, e, z):
        """``mean_h e[h] / z[h]``: one batched [1, H] x [H, nc] product per query row (reads
        ``e`` once; no normalised copy)."""
        w = (z.reciprocal() * (1.0 / z.shape[0])).T.unsqueeze(1)  # [n, 1, H]
        return self.torch.bmm(w, e.transpose(0, 1)).squeeze(1)

    def normalise(self, e, z):
        return e.div_(z.unsqueeze(-1))

    def _tri(self, n: int, m: int, finite: bool = False):
        """``[n, m]`` 0 / -inf (or -1e30): row ``i`` hides columns ``j > i`` (a slice of one
        cached square)."""
        key = "_tri_finite" if finite else "_tri_square"
        tri = self.__dict__.get(key)
        if tri is None or tri.shape[0] < max(n, m):
            size = max(n, m, 256)
            tri = self.__dict__[key] = self.torch.full((size, size), _NEG if finite else float("-inf")).triu_(1)
        return tri[:n, :m]

    def bias(self, hidden: np.ndarray, finite: bool = False):
        """Additive ``[n, m]`` float32 0 / -inf (or -1e30) from a bool "hidden" mask."""
        t = self.torch
        return t.zeros(hidden.shape).masked_fill_(t.from_numpy(hidden), _NEG if finite else float("-inf"))

    def amax0(self, p):
        return p.amax(dim=0)

    def head_sums(self, p, rows: np.ndarray, causal: bool, special: np.ndarray | None) -> np.ndarray:
        """``[3, H]`` float64 sums over the block's query ``rows`` of each row's entropy
        ``-sum_j p log p`` (0 log 0 = 0), distance ``sum_j p |i - j|`` and share on the
        ``special`` keys (bool ``[nc]`` or None). Row sums in float32 (<= T terms), the
        sum over rows in float64."""
        t = self.torch
        nc = p.shape[-1]
        ent = t.special.entr(p).sum(dim=-1)
        cols = [t.arange(nc, dtype=t.float32)] if causal else []
        if special is not None:
            cols.append(t.from_numpy(special[:nc].astype(np.float32)))
        pm = t.matmul(p, t.stack(cols, dim=1)) if cols else None  # [H, n, c]: one pass over p
        r = t.from_numpy(rows.astype(np.float32))
        if causal:  # keys j <= i only: sum_j p (i - j) = i - sum_j p j
            dis = r[None, :] - pm[..., 0]
        else:
            dis = (p * (r[:, None] - t.arange(nc, dtype=t.float32)[None, :]).abs_()).sum(dim=-1)
        spc = pm[..., -1] if special is not None else t.zeros_like(ent)
        return t.stack([ent, dis, spc]).double().sum(dim=-1).numpy()


class _NumpyOps:
    """The same kernels in NumPy (used when torch is not installed)."""

    def head_qk(self, q: np.ndarray, k: np.ndarray):
        return np.asarray(q, dtype=np.float32), np.ascontiguousarray(k, dtype=np.float32)

    def rows(self, q, rows):
        return q[rows]

    def scratch(self, n: int):
        return np.empty(n, dtype=np.float32)

    def batch_scores(self, q: np.ndarray, k: np.ndarray, rows: np.ndarray, group: int, buf):
        kb = np.asarray(k, dtype=np.float32)
        if group > 1:
            kb = np.repeat(kb, group, axis=0)
        qb = np.asarray(q[:, rows], dtype=np.float32)
        out = buf[: qb.shape[0] * qb.shape[1] * kb.shape[1]].reshape(qb.shape[0], qb.shape[1], kb.shape[1])
        np.matmul(qb, kb.transpose(0, 2, 1), out=out)
        return out

    def native(self, arr: np.ndarray):
        return arr

    def view(self, buf, n: int, m: int):
        return buf[: n * m].reshape(n, m)

    def scores(self, qb, k, nc: int, out):
        np.matmul(qb, k[:nc].T, out=out)

    def mul(self, s, v: float):
        s *= np.float32(v)

    def softcap(self, s, cap: float):
        s /= np.float32(cap)
        np.tanh(s, out=s)
        s *= np.float32(cap)

    def fill(self, s, where, value: float):
        np.copyto(s, np.float32(value), where=where)  # broadcasts a [n, T] mask over heads

    def softmax_(self, s):
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=1, keepdims=True)

    def add_(self, a, b):
        a += b

    def max_(self, a, b):
        np.maximum(a, b, out=a)

    def pool_cols(self, x, step: int):
        n, m = x.shape
        if step == 1 or m == 0:
            return x
        g, rem = divmod(m, step)
        out = np.zeros((n, g + (rem > 0)), dtype=np.float32)
        if g:
            out[:, :g] = x[:, : g * step].reshape(n, g, step).max(axis=2)
        if rem:
            out[:, g] = x[:, g * step :].max(axis=1)
        return out

    def pool_rows(self, x, step: int):
        n, m = x.shape
        if step == 1 or n == 0:
            return x
        g, rem = divmod(n, step)
        out = np.empty((g + (rem > 0), m), dtype=np.float32)
        if g:
            out[:g] = x[: g * step].reshape(g, step, m).max(axis=1)
        if rem:
            out[g] = x[g * step :].max(axis=0)
        return out

    def write(self, out: np.ndarray, r0: int, x) -> None:
        if x.shape[1]:
            out[r0 : r0 + x.shape[0], : x.shape[1]] = x

    # -- all heads of a layer at once ---------------------------------------------------------
    def layer_qk(self, q: np.ndarray, k: np.ndarray):
        return np.asarray(q, dtype=np.float32), np.asarray(k, dtype=np.float32)

    def heads_exp(self, q, k, sel, nc: int, group: int, scale: float, cap, tri_from, bias, buf, shift: bool = True):
        hkv = k.shape[0]
        qb = q[:, :, sel]
        n = qb.shape[2]
        qb = qb.reshape(hkv, group * n, qb.shape[3]) * np.float32(scale if cap is None else scale / cap)
        s = buf[: hkv * group * n * nc].reshape(hkv, group * n, nc)
        np.matmul(qb, k[:, :nc].transpose(0, 2, 1), out=s)
        s = s.reshape(hkv * group, n, nc)
        if cap is not None:
            np.tanh(s, out=s)
            s *= np.float32(cap)
        if tri_from is not None:
            s[:, :, tri_from:] += np.triu(np.full((n, nc - tri_from), -np.inf, np.float32), 1)
        if bias is not None:
            s += bias
        s -= s.max(axis=-1, keepdims=True)  # always shifted: the fallback keeps it simple
        np.exp(s, out=s)
        return s, s.sum(axis=-1)

    def exp_mean(self, e, z):
        e /= z[..., None]
        return e.mean(axis=0, dtype=np.float32)

    def normalise(self, e, z):
        e /= z[..., None]
        return e

    def bias(self, hidden: np.ndarray):
        return np.where(hidden, np.float32(-np.inf), np.float32(0.0))

    def amax0(self, p):
        return p.max(axis=0)

    def stats_block(self, q, k, sel, rows: np.ndarray, nc: int, group: int, scale: float, cap, tri_from, hidden,
                    buf, buf2, causal: bool, special: np.ndarray | None) -> np.ndarray:
        bias = None if hidden is None else self.bias(hidden)
        e, z = self.heads_exp(q, k, sel, nc, group, scale, cap, tri_from, bias, buf)
        return self.head_sums(self.normalise(e, z), rows, causal, special)

    def head_sums(self, p, rows: np.ndarray, causal: bool, special: np.ndarray | None) -> np.ndarray:
        nc = p.shape[-1]
        dist = np.abs(rows.astype(np.float32)[:, None] - np.arange(nc, dtype=np.float32)[None, :])
        out = np.zeros((3, p.shape[0]))
        for h, ph in enumerate(p):  # one head at a time: [n, nc] temporaries only
            with np.errstate(divide="ignore", invalid="ignore"):
                plogp = ph * np.log(ph)
            plogp[ph == 0] = 0.0
            out[0, h] = -plogp.sum(axis=-1).sum(dtype=np.float64)
            out[1, h] = (ph * dist).sum(axis=-1).sum(dtype=np.float64)
            if special is not None:
                out[2, h] = ph[:, special[:nc]].sum(axis=-1).sum(dtype=np.float64)
        return out

_OPS: list = []


def _ops(prefer_numpy: bool = False):
    if prefer_numpy:
        return _NumpyOps()
    if not _OPS:
        try:
            import torch
        except ImportError:  # pragma: no cover - depends on the environment
            _OPS.append(_NumpyOps())
        else:
            _OPS.append(_TorchOps(torch))
    return _OPS[0]
