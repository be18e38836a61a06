"""MethodAgreement: how far the flow methods agree on the selected token's sources."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import traitlets as t

from .._jobs import Worker
from ..flows.agreement import AgreementTable, method_agreement
from ..flows.paths import available_methods, score_matrix
from ..interface import Trace
from ._assets import _esm
from ._base import AttnWidget

__all__ = ["MethodAgreement"]

#: Above this many tokens a table with exact max-flow is computed off the kernel's thread.
SYNC_TOKENS = 96


class MethodAgreement(AttnWidget):
    """A methods x methods table of Spearman rank correlations for the selected token.

    Each cell is the Spearman correlation between two methods' scores over the input
    tokens for the selected output token (the row the Flow panel's sentence strip shows;
    :func:`attn_widgets.flows.method_agreement`): +1 the two rank the tokens the same way,
    0 unrelated, -1 reversed (a diverging colour scale). Clicking a cell sets ``pair`` and
    shows the two methods' strips for the token one above the other, each coloured on its
    own scale, so the disagreement is visible token by token.

    With no token selected the table is for the first token (``[CLS]``) of an encoder or
    the last token of a causal model, as the Flow panel's route. ``methods`` defaults to
    every method the trace has the inputs for (the gradient methods need
    ``gradients=True``, ``value_norm`` and ``alti`` need ``contributions=True``).
    """

    _esm = _esm("agreement")
    _computed = frozenset({"table", "status"})

    #: The methods compared, in table order.
    methods = t.List(t.Unicode()).tag(sync=True)
    #: The clicked cell: ``[method_a, method_b]`` shown side by side, or ``[]``.
    pair = t.List(t.Unicode(), default_value=[]).tag(sync=True)
    #: ``{"token", "methods", "matrix" ([M][M], None for NaN), "scores" ([M][T])}``, or ``{}``.
    table = t.Dict().tag(sync=True)
    #: ``"ready"``, ``"computing"`` or ``"error"``.
    status = t.Unicode("").tag(sync=True)
    residual = t.Float(0.5).tag(sync=True)

    def __init__(self, trace: Trace, **kwargs: Any) -> None:
        if getattr(trace, "is_cross", False) or not hasattr(trace, "attentions"):
            raise ValueError(
                "trace: MethodAgreement needs an in-memory self-attention AttentionTrace "
                f"(the flow methods need square maps), received {type(trace).__name__}"
            )
        self._worker = Worker(cache_size=64)
        # The score matrices do not depend on the token: one per (method, residual), reused by
        # every click (only exact flow is per token). L * T * T * 4 bytes each.
        self._scores: dict[tuple[str, float], np.ndarray] = {}
        if not kwargs.get("methods"):
            kwargs["methods"] = list(available_methods(trace))
        super().__init__(trace, **kwargs)
        self._compute()
        self.observe(lambda _c: self._compute(), ["token", "methods", "residual"])

    @t.validate("methods")
    def _validate_methods(self, proposal):
        from ..flows.agreement import _check_methods

        try:
            return list(_check_methods(self._trace, list(proposal["value"])))
        except ValueError as exc:
            raise t.TraitError(str(exc)) from None

    @t.validate("pair")
    def _validate_pair(self, proposal):
        v = list(proposal["value"])
        if v and (len(v) != 2 or any(m not in self.methods for m in v)):
            raise t.TraitError(f"pair: expected [] or two of {self.methods}, received {v!r}")
        return v

    @t.validate("residual")
    def _validate_residual(self, proposal):
        v = proposal["value"]
        if not 0.0 <= v <= 1.0:
            raise t.TraitError(f"residual: expected 0 <= residual <= 1, received {v}")
        return v

    def subject(self) -> int:
        """The token the table is about: ``token``, else ``[CLS]`` (encoders) / the last token (causal)."""
        if self.token is not None:
            return int(self.token)
        return self._trace.n_tokens - 1 if self._trace.causal else 0

    def agreement(self) -> AgreementTable:
        """The table for :meth:`subject`, computed here (blocking)."""
        return self._table(self.subject(), tuple(self.methods), float(self.residual))

    def _table(self, token: int, methods: tuple[str, ...], residual: float) -> AgreementTable:
        def rows(method: str) -> np.ndarray:
            key = (method, residual)
            m = self._scores.get(key)
            if m is None:
                m = self._scores[key] = score_matrix(self._trace, method, residual=residual)
            return m

        return method_agreement(self._trace, token, list(methods), residual=residual, score_rows=rows)

    def _compute(self) -> None:
        token = self.subject()
        key = (token, tuple(self.methods), float(self.residual))

        def publish(table: AgreementTable) -> None:
            with self.hold_sync():
                self.table = _table_json(table)
                self.status = "ready"
                self.error = ""

        def failed(exc: BaseException) -> None:
            self.status = "error"
            self.error = f"agreement for token {token} failed: {type(exc).__name__}: {exc}"

        cached = self._worker.cached(key)
        if cached is not None:
            self._worker.cancel()
            publish(cached)
            return
        if "flow" not in self.methods or self._trace.n_tokens <= SYNC_TOKENS:
            self._worker.cancel()
            try:
                publish(self.agreement())
            except Exception as exc:  # shown on the panel, the kernel stays usable
                failed(exc)
            return
        self.status = "computing"
        self._worker.submit(key, lambda _job: self._table(token, key[1], key[2]), publish, failed)


def _table_json(table: AgreementTable) -> dict:
    def num(x: float) -> float | None:
        return None if not math.isfinite(x) else round(float(x), 6)

    return {
        "token": table.token,
        "methods": list(table.methods),
        "matrix": [[num(x) for x in row] for row in table.matrix],
        "scores": [[num(x) for x in row] for row in np.asarray(table.scores, dtype=np.float64)],
    }
