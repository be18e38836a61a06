"""Compute backends of :class:`~attn_widgets.LazyTrace`: the same row-block kernels on
PyTorch (when installed; about 25-35 ms per head at T = 4096 on two CPU cores) or NumPy
(several times slower). Each op works in place on preallocated scratch, so a map, tile or
thumbnail never allocates more than its output plus a few MiB."""

from __future__ import annotations

import numpy as np

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
