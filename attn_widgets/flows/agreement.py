"""Methods agreement: do the flow methods rank a token's sources the same way? (pure numpy)

No single attribution method wins everywhere, and they often disagree: raw attention may
put most of a token's weight on ``[CLS]`` / ``[SEP]`` while ALTI, which weighs what the
attention actually moves (residual and layer norm included), gives those tokens little.
:func:`method_agreement` takes, for one output token, every method's scores over the input
tokens (the same row the Flow panel's sentence strip shows, :func:`~attn_widgets.flows.paths.token_scores`)
and returns the Spearman rank correlation between every pair of methods:

    ``rho(a, b) = pearson(rank(a), rank(b))``, ranks 1..T with ties given their average rank.

``rho = 1``: the two methods order the input tokens identically; ``0``: unrelated;
``-1``: reversed. A method whose scores are all equal (no ranking) has NaN correlations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .paths import METHODS, available_methods, check_method, score_matrix, token_scores

__all__ = ["AgreementTable", "method_agreement", "spearman_matrix", "rank_average"]


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` of a 1-D array, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    # start index of each run of equal values
    new = np.concatenate([[True], sx[1:] != sx[:-1]])
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [x.size]])
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman_matrix(scores: np.ndarray) -> np.ndarray:
    """``[M, M]`` Spearman correlations between the rows of an ``[M, T]`` score array.

    The diagonal is 1 for a row that has a ranking and NaN for a constant row.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores: expected shape [M, T] with T >= 2, received {list(s.shape)}")
    if not np.isfinite(s).all():
        raise ValueError("scores: contains NaN or inf")
    r = np.stack([rank_average(row) for row in s])
    r -= r.mean(axis=1, keepdims=True)
    norm = np.sqrt((r * r).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r @ r.T) / np.outer(norm, norm)
    out[norm == 0, :] = np.nan
    out[:, norm == 0] = np.nan
    return np.clip(out, -1.0, 1.0)


@dataclass(frozen=True, eq=False)
class AgreementTable:
    """Spearman agreement between methods for one output token.

    Attributes
    ----------
    methods
        The method names, in table order.
    matrix
        float64 ``[M, M]``: ``matrix[a, b]`` is the Spearman correlation of method ``a``'s
        and method ``b``'s input-token scores (symmetric; NaN where a method gives every
        token the same score).
    scores
        float64 ``[M, T]``: each method's scores over the input tokens (the strip's row).
    token
        The output token.
    tokens
        The token strings (for labels), or None.
    """

    methods: tuple[str, ...]
    matrix: np.ndarray
    scores: np.ndarray
    token: int
    tokens: tuple[str, ...] | None = None

    def __getitem__(self, pair: tuple[str, str]) -> float:
        """``agreement["attention", "alti"]``: the correlation of two methods by name."""
        a, b = pair
        for m in (a, b):
            if m not in self.methods:
                raise KeyError(f"method {m!r} not in this table; it has {self.methods}")
        return float(self.matrix[self.methods.index(a), self.methods.index(b)])

    def most_disagreeing(self) -> tuple[str, str, float]:
        """The pair of different methods with the lowest correlation (NaN pairs skipped)."""
        m = self.matrix.copy()
        m[np.tril_indices(len(self.methods))] = np.nan
        if np.isnan(m).all():
            raise ValueError("most_disagreeing: no pair of methods with a defined correlation")
        a, b = np.unravel_index(np.nanargmin(m), m.shape)
        return self.methods[a], self.methods[b], float(m[a, b])

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "matrix": [[None if np.isnan(x) else float(x) for x in row] for row in self.matrix],
            "token": self.token,
        }

    def __repr__(self) -> str:
        w = max(len(m) for m in self.methods)
        head = " " * (w + 1) + " ".join(f"{m[:7]:>7}" for m in self.methods)
        rows = [f"{m:<{w}} " + " ".join("    nan" if np.isnan(x) else f"{x:7.2f}" for x in row) for m, row in zip(self.methods, self.matrix)]
        return f"AgreementTable(token={self.token}, Spearman)\n" + "\n".join([head, *rows])


def _check_methods(trace: Any, methods: Sequence[str] | None) -> tuple[str, ...]:
    if methods is None:
        return available_methods(trace)
    if isinstance(methods, str) or not isinstance(methods, Sequence):
        raise ValueError(f"methods: expected a sequence of method names from {METHODS}, received {methods!r}")
    out = []
    for m in methods:
        check_method(
            m,
            getattr(trace, "gradients", None) is not None,
            getattr(trace, "mixed_norms" if m == "value_norm" else "contributions", None) is not None,
        )
        if m in out:
            raise ValueError(f"methods: {m!r} given twice")
        out.append(m)
    if len(out) < 2:
        raise ValueError(f"methods: expected at least 2 methods to compare, received {list(methods)!r}")
    return tuple(out)


def method_agreement(
    trace: Any,
    token: int,
    methods: Sequence[str] | None = None,
    *,
    residual: float = 0.5,
    signed: bool = False,
    score_rows: Callable[[str], np.ndarray] | None = None,
) -> AgreementTable:
    """Spearman rank correlation of the input-token scores of every pair of methods.

    Parameters
    ----------
    trace
        An :class:`~attn_widgets.AttentionTrace` (self-attention). Gradient methods need
        ``gradients=True``, ``value_norm`` / ``alti`` need ``contributions=True``.
    token
        The output token whose sources are ranked.
    methods
        Method names (see :data:`~attn_widgets.flows.paths.METHODS`); None: every method the
        trace has the inputs for, in the order of ``METHODS``.
    residual, signed
        As for the Flow panel (rollout / flow residual weight; signed attention x gradient).
    score_rows
        Optional ``method -> [T, T]`` score matrix provider (a widget's cache); ``flow`` is
        always computed for the one row.

    Returns
    -------
    :class:`AgreementTable`.

    Notes
    -----
    Cost: one score matrix per method (milliseconds at T = 512) plus one exact max-flow row
    for ``flow`` (about 1.4 s at T = 512 on two CPU cores).
    """
    names = _check_methods(trace, methods)
    t = trace.attentions.shape[-1]
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < t:
        raise ValueError(f"token: expected an int 0 <= token < {t}, received {token!r}")
    rows = []
    for m in names:
        if m == "flow":
            rows.append(token_scores(trace, m, int(token), residual=residual))
        elif score_rows is not None:
            rows.append(np.asarray(score_rows(m))[token])
        else:
            rows.append(score_matrix(trace, m, residual=residual, signed=signed)[token])
    scores = np.stack([np.asarray(r, dtype=np.float64) for r in rows])
    toks = getattr(trace, "tokens", None)
    return AgreementTable(
        methods=names,
        matrix=spearman_matrix(scores),
        scores=scores,
        token=int(token),
        tokens=tuple(toks) if toks is not None else None,
    )
