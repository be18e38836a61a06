"""AttentionFlow: the route one output token takes through a flow method's layered graph."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
import traitlets as t

from .._jobs import Worker
from .._wire import json_nbytes, pack, to_jsonable
from ..flows import paths as _paths
from ..flows import route as _route
from ..flows.paths import token_scores
from ..flows.route import RouteGraph, route_graph, route_layers
from ..interface import Trace
from ..render.style import STYLE as _STYLE
from ..trace import AttentionTrace
from . import _lazy, protocol
from ._assets import _esm
from ._base import AttnWidget

__all__ = ["AttentionFlow", "FLOW_MAX_BYTES", "default_token", "flow_methods", "flow_token_limit"]

_WARMED = threading.Event()

#: Readable names of the flow methods the panel knows; a method that attn_widgets.flows adds
#: later (route.ROUTE_METHODS) shows under its own name unless flows gives a label.
_LABELS = {
    "attention": "attention (mean of heads)",
    "rollout": "rollout",
    "flow": "attention flow (exact max-flow)",
    "grad_rollout": "gradient-weighted rollout",
    "attn_grad": "attention \u00d7 gradient",
    "value_norm": "value norms (Kobayashi)",
    "alti": "ALTI (contributions)",
}
#: Route weights of two compared traces closer than this count as equal (style.json route.agree_tol).
AGREE_TOL = float(_STYLE["route"]["agree_tol"])


#: Seconds between two progress updates of a background job (about 10 a second at most).
PROGRESS_INTERVAL = 0.1

#: What one exact max-flow route may allocate: ``route_layers`` builds float64 capacities
#: ``[L, T, T]`` and ``max_flow_edges`` int64 flows and solver state, about ``72 * L * T * T``
#: bytes in all (flows.route's notes). Above it the panel offers no exact max-flow and says why.
#: Time grows faster than memory: on two CPU cores, 6 layers, the route of a click took 0.05 s
#: and the strip (a whole max-flow row, in the background) 0.7 s at 512 tokens, 0.21 s and
#: 2.8 s at 788 (about T^3), so the 1114-token limit at 6 layers keeps the strip near 10 s.
FLOW_MAX_BYTES = 1 << 29


def flow_token_limit(n_layers: int) -> int:
    """The most tokens an exact max-flow route of ``n_layers`` layers is offered for
    (:data:`FLOW_MAX_BYTES`): 1114 at 6 layers, 482 at 32."""
    return math.isqrt(FLOW_MAX_BYTES // (72 * max(1, int(n_layers))))


def _is_lazy(trace: Any) -> bool:
    return bool(getattr(trace, "on_demand", False))


def _offered(trace: Any) -> set[str]:
    """The methods the panel offers for ``trace``: flows' ``available_methods``, without the
    exact max-flow over :func:`flow_token_limit`."""
    if _is_lazy(trace):
        return set(_lazy.lazy_methods(trace))
    have = set(_paths.available_methods(trace))
    if trace.n_tokens > flow_token_limit(trace.n_layers):
        have.discard("flow")
    return have


def _why_not(method: str, trace: Any) -> str:
    """Why ``method`` is not offered for ``trace``, with what would make it so (the option's text)."""
    lazy = _is_lazy(trace)
    if method == "flow":
        limit = flow_token_limit(trace.n_layers)
        size = f"up to {limit} tokens at {trace.n_layers} layers"
        if not lazy:
            return f"exact max-flow: {size}; this trace has {trace.n_tokens}"
        fits = " (trace.materialize() builds an in-memory one)" if trace.n_tokens <= limit else ""
        return f"exact max-flow: needs every map in memory and {size}; this LazyTrace has {trace.n_tokens}{fits}"
    if method == "grad_rollout" and lazy:
        return "needs the streamed gradient route: aw.trace_lazy(..., grad_rollout=True)"
    if method in _paths.GRAD_METHODS:
        if lazy:
            return "needs every head's gradients: aw.trace(..., gradients=True); a LazyTrace streams only the gradient-rollout route"
        return "needs gradients: aw.trace(..., gradients=True)"
    if method in _paths.CONTRIB_METHODS:
        return "needs contributions: aw.trace(..., contributions=True)" + (" (not for a LazyTrace)" if lazy else "")
    return "not available for this trace"


def _warm_up_flow_solver() -> None:
    """Compile (or load from cache) the max-flow kernels in the background, once per
    process, so the first click on method="flow" does not pay for it."""
    if _WARMED.is_set():
        return
    _WARMED.set()

    def run() -> None:
        try:
            from ..flows.maxflow import _ensure_compiled

            _ensure_compiled()
        except Exception:  # numba missing or broken: the scipy engine is used instead
            pass

    threading.Thread(target=run, name="attn_widgets:warm-up", daemon=True).start()


def flow_methods(traces: list[Any] | None = None) -> list[dict]:
    """The flow methods of :mod:`attn_widgets.flows` the panel offers, in order.

    Each entry: ``name``, ``label``, ``needs`` (``"gradients"``, ``"contributions"`` or
    ``""``), ``available`` (every trace in ``traces`` has what the method needs, per
    :func:`attn_widgets.flows.paths.available_methods`; the exact max-flow up to
    :func:`flow_token_limit` tokens) and ``reason`` (``""``, or why not, with the size limit:
    the view shows it on the disabled option). Read from the flows package
    (``route.ROUTE_METHODS``, ``paths.GRAD_METHODS``, ``paths.CONTRIB_METHODS``), so a new
    method appears without panel code.
    """
    traces = traces or []
    have = [_offered(tr) for tr in traces]
    out = []
    for m in _route.ROUTE_METHODS:
        needs = "gradients" if m in _paths.GRAD_METHODS else "contributions" if m in _paths.CONTRIB_METHODS else ""
        lacking = next((tr for tr, h in zip(traces, have) if m not in h), None)
        out.append({"name": m, "label": _LABELS.get(m, m.replace("_", " ")), "needs": needs,
                    "available": lacking is None, "reason": "" if lacking is None else _why_not(m, lacking)})
    return out


def default_token(trace: Any) -> int:
    """The position whose route the panel shows with no token selected: the trace's
    target position (``meta["position"]``) if it has one, else the last token of a causal
    model, else the first ([CLS] of an encoder)."""
    n = trace.n_tokens
    pos = (getattr(trace, "meta", None) or {}).get("position")
    if not isinstance(pos, (int, np.integer)) or isinstance(pos, bool):
        gr = _lazy.grad_route(trace)  # a LazyTrace's streamed gradient route has its position
        pos = None if gr is None else int(gr.position)
    if isinstance(pos, (int, np.integer)) and not isinstance(pos, bool):
        return int(pos) % n if -n <= pos < n else n - 1
    return n - 1 if getattr(trace, "causal", False) else 0


def _pack_idx(x: np.ndarray, t_max: int) -> dict:
    return pack(np.asarray(x), "uint16" if t_max < 65535 else "int32")


class AttentionFlow(AttnWidget):
    """The route of one output token through a flow method, drawn over the layers.

    Tokens are rows, layer boundaries columns (column 0 the input, column ``l`` the output
    of layer ``l - 1``). What is drawn is :func:`attn_widgets.flows.route_graph` of the
    selected token (with none selected: :func:`default_token`, the target position,
    [CLS] or the last token): the kept cross-token edges (width = share of the token's
    output, colour = sign), each token's carry through the residual / identity as a thin
    line along its row, and nodes sized by their share. ``keep`` (0.5 .. 1) is the share
    of each layer's traced cross-token weight kept. With ``rows="route"`` only the tokens
    on the route with the largest shares get a labelled row (at most ``max_rows``; the
    rest collapse into marked gaps), ``rows="all"`` shows every token (scrolling).

    ``method="flow"`` (exact max-flow) runs in a background thread: the panel shows
    progress, the kernel stays responsive, a new selection cancels the stale job.

    A :class:`~attn_widgets.LazyTrace` (long contexts) is accepted: its methods are
    attention, rollout and, when it carries a streamed gradient route
    (``trace_lazy(..., grad_rollout=True)``), grad_rollout for that one position. Each
    route is computed in the background, layer by layer from queries and keys, with its
    progress on the panel (:attr:`job`); the previous route stays drawn, dimmed, until the
    new one arrives, and a new click cancels the running one. The exact max-flow is shown
    as unavailable there (and for in-memory traces over :func:`flow_token_limit` tokens),
    with the reason.

    Parameters
    ----------
    trace
        The trace to show (e.g. the base model).
    compare
        A second trace over the same tokens (e.g. the fine-tuned model); shown side by
        side (``compare_mode="side"``, same token and keep) or as the difference
        ``compare - trace`` on the union of the two routes (``"diff"``).
    labels
        Names of the two traces in compare mode (default: their model names).
    """

    _esm = _esm("flow")
    export_kind = export_view = "flow"
    export_grows = True
    _computed = frozenset({"labels", "has_gradients", "graphs", "scores", "status", "progress", "methods",
                           "route_token", "job"})

    method = t.Unicode("rollout").tag(sync=True)
    keep = t.Float(0.8).tag(sync=True)
    rows = t.Enum(["route", "all"], default_value="route").tag(sync=True)
    max_rows = t.Int(int(_STYLE["route"]["max_rows"])).tag(sync=True)
    residual = t.Float(0.5).tag(sync=True)
    signed = t.Bool(False).tag(sync=True)
    compare_mode = t.Enum(["side", "diff"], default_value="side").tag(sync=True)
    labels = t.List(t.Unicode()).tag(sync=True)
    has_gradients = t.Bool(False).tag(sync=True)
    #: At most this many edges per layer (style.json ``route.max_edges_per_layer``): the panel
    #: draws a small graph at any length and says in which layers the cap bites.
    max_edges_per_layer = t.Int(_STYLE["route"]["max_edges_per_layer"]).tag(sync=True)
    #: The methods offered: [{name, label, needs, available}] (kernel -> view).
    methods = t.List().tag(sync=True)
    #: The token whose route is drawn (the selected one, else the default position).
    route_token = t.Int(0).tag(sync=True)

    #: One entry per drawn graph: the packed route (kernel -> view), see _graph_payload.
    graphs = t.List().tag(sync=True)
    #: Scores over input tokens ``[G, T]`` for the selected token (packed) or {}.
    scores = t.Dict().tag(sync=True)
    #: "" | "computing" | "ready" | "error"
    status = t.Unicode("").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    #: The background job the panel waits for (a LazyTrace's route), ``{}`` when none:
    #: :func:`attn_widgets.widgets.protocol.job_progress` (``kind``, ``what``, ``done``,
    #: ``total``, ``unit``, ``text``, ``token``).
    job = t.Dict().tag(sync=True)

    def __init__(
        self,
        trace: Trace,
        compare: AttentionTrace | None = None,
        labels: tuple[str, str] | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        for old in ("threshold", "top_k", "max_edges"):
            if old in kwargs:
                raise TypeError(
                    f"{old}: AttentionFlow no longer takes {old}=; use keep= (the share of each layer's "
                    "traced cross-token weight kept, 0.5 to 1.0) and max_edges_per_layer="
                )
        for what, tr in (("trace", trace), ("compare", compare)):
            if isinstance(tr, Trace) and tr.is_cross:
                raise ValueError(
                    f"{what}: AttentionFlow needs square self-attention maps (tokens flowing through "
                    f"the layers of one stack); this is a cross-attention trace ({tr.n_tokens} query x "
                    f"{tr.n_keys} key tokens). Show it with AttentionHeatmap or AttentionMatrix, or pass "
                    "the encoder / decoder trace of a Seq2SeqTrace (s2s.encoder, s2s.decoder) to AttentionFlow."
                )
        if compare is not None and _is_lazy(trace):
            raise TypeError(
                "compare: comparing two routes needs in-memory AttentionTraces (the difference is taken "
                f"edge by edge); trace is a LazyTrace of {trace.n_tokens} tokens. Show each LazyTrace in its "
                "own AttentionFlow, or materialize() them when they fit in memory"
            )
        if compare is not None:
            if not isinstance(compare, AttentionTrace):
                raise TypeError(f"compare: expected an AttentionTrace, received {type(compare).__name__}")
            if compare.shape != trace.shape:
                raise ValueError(
                    f"compare: expected a trace of shape {list(trace.shape)} like the first, "
                    f"received {list(compare.shape)}"
                )
            if list(compare.tokens) != list(trace.tokens):
                diff = next(i for i, (a, b) in enumerate(zip(trace.tokens, compare.tokens)) if a != b)
                raise ValueError(
                    f"compare: the two traces must cover the same tokens; they differ at position {diff} "
                    f"({trace.tokens[diff]!r} vs {compare.tokens[diff]!r})"
                )
        self._traces = [trace] if compare is None else [trace, compare]
        if labels is None:
            labels = [tr.model_name or f"trace {k}" for k, tr in enumerate(self._traces)]
            if len(labels) == 2 and labels[0] == labels[1]:
                labels = ["A", "B"]
        labels = [str(x) for x in labels]
        if len(labels) != len(self._traces):
            raise ValueError(f"labels: expected {len(self._traces)} names, received {len(labels)}")
        self._layers_cache: dict[tuple, list] = {}
        self._route_cache: dict[tuple, tuple] = {}
        self._worker = Worker()
        self._lazy = _is_lazy(trace)
        self._last_progress = 0.0
        self._routes: list[RouteGraph] = []
        self._has_grad = all(tr.has_gradients for tr in self._traces)
        self._methods = flow_methods(self._traces)
        self._default = default_token(trace)
        self._check_method(kwargs.get("method", "rollout"))
        super().__init__(trace, **kwargs)
        self.labels, self.has_gradients, self.methods = labels, self._has_grad, self._methods
        self._check_params()
        self._refresh()
        self.observe(self._on_params, ["method", "keep", "residual", "signed", "compare_mode",
                                       "max_edges_per_layer", "max_rows", "token"])
        _warm_up_flow_solver()

    # -- validation ---------------------------------------------------------------------
    def _check_method(self, m: Any) -> str:
        info = {e["name"]: e for e in self._methods}
        if m not in info:
            raise t.TraitError(f"method: expected one of {tuple(info)}, received {m!r}")
        if not info[m]["available"]:
            raise t.TraitError(f"method={m!r} is not available for this trace: {info[m]['reason']}")
        return m

    @t.validate("method")
    def _validate_method(self, proposal):
        return self._check_method(proposal["value"])

    @t.validate("keep")
    def _validate_keep(self, proposal):
        v = proposal["value"]
        if not (0.5 <= v <= 1.0):
            raise t.TraitError(f"keep: expected 0.5 <= keep <= 1 (share of the traced weight kept), received {v}")
        return v

    @t.validate("residual")
    def _validate_residual(self, proposal):
        v = proposal["value"]
        if not (0.0 <= v <= 1.0):
            raise t.TraitError(f"residual: expected 0 <= residual <= 1, received {v}")
        return v

    @t.validate("max_edges_per_layer")
    def _validate_max_edges(self, proposal):
        v = proposal["value"]
        if not 1 <= v <= 100_000:
            raise t.TraitError(f"max_edges_per_layer: expected 1 <= max_edges_per_layer <= 100000, received {v}")
        return v

    @t.validate("max_rows")
    def _validate_max_rows(self, proposal):
        v = proposal["value"]
        if not 2 <= v <= 10_000:
            raise t.TraitError(f"max_rows: expected 2 <= max_rows <= 10000, received {v}")
        return v

    def _check_params(self) -> None:
        if self.compare_mode == "diff" and len(self._traces) < 2:
            raise ValueError("compare_mode='diff' needs a second trace: AttentionFlow(trace, compare=other)")

    # -- public, read-only views of what is shown ---------------------------------------
    @property
    def traces(self) -> list[AttentionTrace]:
        return list(self._traces)

    @property
    def routes(self) -> list[RouteGraph]:
        """The route graph of each trace for :attr:`route_token` as drawn now."""
        return list(self._routes)

    @property
    def drawn_edges(self) -> int:
        """How many cross-token edges the view draws now."""
        return sum(int(g["count"]) for g in self.graphs)

    def token_scores(self, wait: float | None = 30.0) -> np.ndarray | None:
        """Scores of the selected token over the input tokens, ``[G, T]`` (None if no token).

        For ``method="flow"`` this waits up to ``wait`` seconds for the background job.
        """
        if self.token is None:
            return None
        self.wait(wait or 0.0, raise_=False)
        if self.status != "ready":
            raise RuntimeError(f"scores not ready (status={self.status!r}); try again or pass a longer wait")
        from .._wire import unpack

        return unpack(self.scores).astype(np.float32)

    # -- computation (math lives in attn_widgets.flows) --------------------------------
    def _layers(self, method: str | None = None) -> list:
        """``route_layers`` of each trace, built once per (method, residual, signed) and
        reused by every keep change and click."""
        m = method or self.method
        key = (m, round(self.residual, 6), self.signed)
        cached = self._layers_cache.get(key)
        if cached is None:
            cached = [route_layers(tr, m, tr.gradients if tr.has_gradients else None, residual=self.residual,
                                   signed=self.signed) for tr in self._traces]
            if len(self._layers_cache) > 8:
                self._layers_cache.clear()
            self._layers_cache[key] = cached
        return cached

    def _route_of(self, method: str, token: int, keep: float) -> list[RouteGraph]:
        layers = self._layers(method)
        return [route_graph(None, method, token, keep=keep, signed=self.signed,
                            max_edges_per_layer=int(self.max_edges_per_layer), layers=lay) for lay in layers]

    def _scores_of(self, method: str, token: int, routes: list[RouteGraph], progress=None, cancel=None) -> np.ndarray:
        """The strip: the method's own scores over the input tokens. The route's input
        shares ``node[0]`` are that already for attention, rollout (the rollout row) and
        attention x gradient; gradient rollout shows ``R - I`` normalised (one cached
        matrix), exact flow the max-flow row (slow: run it in the worker)."""
        out = []
        n = len(self._traces)
        for k, (tr, rg) in enumerate(zip(self._traces, routes)):
            if method == "flow":
                prog = None
                if progress is not None:
                    def prog(done: int, total: int, k: int = k) -> None:
                        progress((k + done / max(total, 1)) / n)
                out.append(token_scores(tr.attentions, method, token, tr.gradients, residual=self.residual,
                                        signed=self.signed, progress=prog, cancel=cancel))
            elif method == "grad_rollout":
                key = ("scores", method, round(self.residual, 6), self.signed)
                mats = self._layers_cache.get(key)
                if mats is None:
                    mats = self._layers_cache[key] = [
                        _paths.score_matrix(t_.attentions, method, t_.gradients, residual=self.residual,
                                            signed=self.signed) for t_ in self._traces]
                out.append(np.asarray(mats[k][token], dtype=np.float64))
            else:
                out.append(np.asarray(rg.node[0], dtype=np.float64) / (rg.value or 1.0))
        rows = np.stack(out)
        return rows[1:] - rows[:1] if self._diff() else rows

    def _diff(self) -> bool:
        return self.compare_mode == "diff" and len(self._traces) == 2

    def _label_rows(self, routes: list[RouteGraph], token: int) -> np.ndarray:
        """The tokens that get a labelled row with ``rows="route"``: the tokens on the
        route(s), the ones with the largest node share first, at most ``max_rows``."""
        on = np.unique(np.concatenate([rg.tokens_on_route() for rg in routes]))
        must = {int(token), *(int(rg.source) for rg in routes if rg.source is not None)}
        if on.size <= self.max_rows:
            return on
        share = np.zeros(routes[0].n_tokens)
        for rg in routes:
            peak = np.abs(rg.node).max(axis=1, keepdims=True)
            peak[peak == 0] = 1.0
            share = np.maximum(share, (np.abs(rg.node) / peak).max(axis=0))
        order = on[np.argsort(-share[on], kind="stable")]
        picked = list(must) + [int(i) for i in order if int(i) not in must]
        return np.array(sorted(picked[: self.max_rows]), dtype=np.int64)

    def _graph_payload(self, rg: RouteGraph, label: str, rows: np.ndarray) -> dict:
        t_ = rg.n_tokens
        counts = np.bincount(rg.layer, minlength=rg.n_layers).astype(np.int32)
        scale = float(rg.value) if rg.value else 1.0  # flow: shares of the max-flow value
        return {
            "label": label,
            "method": rg.method,
            "token": int(rg.token),
            "keep": float(rg.keep),
            "counts": pack(counts, "int32"),
            "query": _pack_idx(rg.query, t_),
            "key": _pack_idx(rg.key, t_),
            "weight": pack(rg.weight / scale, "float32"),
            "carry": pack(rg.carry / scale, "float32"),
            "node": pack(rg.node / scale, "float32"),
            "rows": _pack_idx(rows, t_),
            "count": int(rg.n_edges),
            "capped": [int(i) for i in np.flatnonzero(rg.capped)],
            "signed": bool((rg.weight < 0).any()),
            "value": None if rg.value is None else float(rg.value),
            "source": None if rg.source is None else int(rg.source),
            "diff": False,
        }

    def _diff_payload(self, a: RouteGraph, b: RouteGraph, rows: np.ndarray) -> dict:
        """``b - a`` on the union of the two routes' kept edges; ``status`` per edge: 0 on
        both routes, 1 only on b's (appears), 2 only on a's (vanishes)."""
        t_, n_layers = a.n_tokens, a.n_layers
        sa = float(a.value) if a.value else 1.0
        sb = float(b.value) if b.value else 1.0
        lin_a = (a.layer.astype(np.int64) * t_ + a.query) * t_ + a.key
        lin_b = (b.layer.astype(np.int64) * t_ + b.query) * t_ + b.key
        uniq = np.union1d(lin_a, lin_b)
        wa = np.zeros(uniq.size)
        wb = np.zeros(uniq.size)
        wa[np.searchsorted(uniq, lin_a)] = a.weight / sa
        wb[np.searchsorted(uniq, lin_b)] = b.weight / sb
        in_a = np.isin(uniq, lin_a)
        in_b = np.isin(uniq, lin_b)
        status = np.where(in_a & in_b, 0, np.where(in_b, 1, 2)).astype(np.uint8)
        d = wb - wa
        layer, rest = np.divmod(uniq, t_ * t_)
        q, k = np.divmod(rest, t_)
        # Strongest changes first within each layer (the drawing order).
        order = np.lexsort((-np.abs(d), layer))
        carry = b.carry / sb - a.carry / sa
        node = b.node / sb - a.node / sa
        gap = float(max(np.abs(d).max(initial=0.0), np.abs(carry).max(initial=0.0)))
        return {
            "label": f"{self.labels[1]} \u2212 {self.labels[0]}",
            "method": a.method,
            "token": int(a.token),
            "keep": float(a.keep),
            "counts": pack(np.bincount(layer, minlength=n_layers).astype(np.int32), "int32"),
            "query": _pack_idx(q[order], t_),
            "key": _pack_idx(k[order], t_),
            "weight": pack(d[order], "float32"),
            "status": pack(status[order], "uint8"),
            "carry": pack(carry, "float32"),
            "node": pack(node, "float32"),
            "rows": _pack_idx(rows, t_),
            "count": int(uniq.size),
            "capped": sorted({int(i) for i in np.flatnonzero(a.capped | b.capped)}),
            "signed": True,
            "value": None,
            "source": None,
            "diff": True,
            "names": list(self.labels),
            "max_change": gap,
            "agree": gap <= AGREE_TOL,
            "tol": AGREE_TOL,
            "appear": int((status == 1).sum()),
            "vanish": int((status == 2).sum()),
        }

    def _payloads(self, routes: list[RouteGraph], token: int) -> list[dict]:
        rows = self._label_rows(routes, token)
        if self._diff():
            return [self._diff_payload(routes[0], routes[1], rows)]
        return [self._graph_payload(rg, lab, rows) for rg, lab in zip(routes, self.labels)]

    def diff_agrees(self) -> bool | None:
        """In diff mode: whether the two routes agree within ``AGREE_TOL`` (None otherwise)."""
        g = self.graphs[0] if self.graphs else {}
        return g.get("agree") if g.get("diff") else None

    def _refresh(self) -> None:
        if self._lazy:
            self._refresh_lazy()
            return
        token = self._default if self.token is None else int(self.token)
        self.route_token = token
        method, keep = self.method, float(self.keep)
        rkey = (method, round(self.residual, 6), self.signed, token, round(keep, 6),
                int(self.max_edges_per_layer), self.compare_mode, int(self.max_rows))
        # The route is fast for every method (flow: one or two max-flows, ~50 ms at T=512):
        # drawn at once. Only the exact flow's strip (a whole max-flow row) runs in the worker.
        hit = self._route_cache.get(rkey)
        if hit is None:
            routes = self._route_of(method, token, keep)
            hit = (routes, self._payloads(routes, token))
            if len(self._route_cache) > 64:
                self._route_cache.clear()
            self._route_cache[rkey] = hit
        self._routes, graphs = hit
        self.graphs = graphs
        if self.token is None:
            self._worker.cancel()
            self.scores, self.status, self.progress = {}, "", 0.0
            return
        routes = self._routes

        def publish(scores: np.ndarray) -> None:
            self.scores = {"token": token, "method": method, **pack(scores, "float32")}
            self.progress = 1.0
            self.status = "ready"

        if method != "flow":
            self._worker.cancel()
            publish(self._scores_of(method, token, routes))
            return
        skey = (method, round(self.residual, 6), self.signed, token, self.compare_mode)
        cached = self._worker.cached(skey)
        if cached is not None:
            self._worker.cancel()
            publish(cached)
            return
        self.scores, self.status, self.progress = {}, "computing", 0.0
        self._last_progress = 0.0

        def compute(job) -> np.ndarray:
            return self._scores_of(method, token, routes, progress=self._report_progress, cancel=lambda: job.cancelled())

        def failed(exc: BaseException) -> None:
            self.status = "error"
            self.error = f"flow for token {token} failed: {type(exc).__name__}: {exc}"

        self._worker.submit(skey, compute, publish, failed)

    # -- a LazyTrace: every route in the background, layer by layer ---------------------------
    def _refresh_lazy(self) -> None:
        """Start (or take from the cache) the route of the selected token. Until it arrives the
        previous route stays drawn (the view dims it while ``status == "computing"``), ``job``
        says how far the computation is, and a newer click replaces it (the running walk sees
        ``cancelled()`` and stops)."""
        token = self._default if self.token is None else int(self.token)
        method, keep = self.method, float(self.keep)
        cap = int(self.max_edges_per_layer)
        key = ("lazy", method, round(self.residual, 6), token, round(keep, 6), cap, int(self.max_rows))
        tr = self._traces[0]
        if method == "grad_rollout":
            try:
                _lazy.check_grad_position(tr, token)
            except ValueError as exc:  # the route on screen stays; the message says what to click
                self._worker.cancel()
                with self.hold_sync():
                    self.job, self.status, self.error = {}, "error", str(exc)
                return
        n_layers = tr.n_layers
        what = f"{method.replace('_', ' ')} route of token {token}"

        def publish(hit: tuple) -> None:
            routes, graphs = hit
            self._routes = routes
            with self.hold_sync():
                self.route_token = token
                self.graphs = graphs
                self.progress, self.job, self.error = 1.0, {}, ""
                if self.token is None:
                    self.scores = {}
                else:
                    rows = np.stack([np.asarray(rg.node[0], dtype=np.float64) / (rg.value or 1.0) for rg in routes])
                    self.scores = {"token": token, "method": method, **pack(rows, "float32")}
                # status last: wait() returns on it, and everything above is in place by then
                self.status = "" if self.token is None else "ready"

        cached = self._worker.cached(key)
        if cached is not None:
            self._worker.cancel()
            publish(cached)
            return
        with self.hold_sync():
            # The strip's scores were the previous token's: cleared, while its route stays drawn (dimmed).
            self.scores, self.status, self.progress, self.error = {}, "computing", 0.0, ""
            self.job = protocol.job_progress("route", what, 0, n_layers, token=token)
        self._last_progress = 0.0

        def compute(job) -> tuple:
            def progress(done: int, total: int) -> None:
                if job.cancelled():
                    return
                now = time.monotonic()
                if now - self._last_progress >= PROGRESS_INTERVAL or done >= total:
                    self._last_progress = now
                    with self.hold_sync():
                        self.progress = done / max(total, 1)
                        self.job = protocol.job_progress("route", what, done, total, token=token)

            rg = _lazy.route(tr, method, token, keep=keep, residual=float(self.residual), max_edges_per_layer=cap,
                             progress=progress, cancelled=job.cancelled)
            return [rg], self._payloads([rg], token)

        def failed(exc: BaseException) -> None:
            with self.hold_sync():
                self.status, self.job = "error", {}
                self.error = protocol.error_text(f"{what}", exc)

        self._worker.submit(key, compute, publish, failed)

    def close(self) -> None:
        worker = getattr(self, "_worker", None)  # None: the constructor failed early
        if worker is not None:
            worker.cancel()  # a running route stops at its next layer
        super().close()

    def _on_params(self, change: dict) -> None:
        try:
            self._check_params()
            self.error = ""
            self._refresh()
        except Exception as exc:  # keep the panel usable and say what went wrong
            self.status = "error"
            self.error = f"{type(exc).__name__}: {exc}"

    def _report_progress(self, value: float) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.1 or value >= 1.0:  # at most ~10 updates a second
            self._last_progress = now
            self.progress = float(min(max(value, 0.0), 1.0))

    # -- export: per-token routes embedded for the page --------------------------------------
    def _static_entry(self, method: str, token: int) -> dict:
        """One (method, token) for the exported page: the route at keep=1 (edges sorted
        strongest first per layer, so the page prunes any keep as route_graph does) and the
        strip's scores."""
        routes = self._route_of(method, token, 1.0)
        if method == "flow" and self._traces[0].n_tokens > 128:
            scores = np.stack([np.asarray(rg.node[0]) / (rg.value or 1.0) for rg in routes])
            scores = scores[1:] - scores[:1] if self._diff() else scores
        else:
            scores = self._scores_of(method, token, routes)
        layer_total = np.stack([rg.layer_total / (rg.value or 1.0) for rg in routes])
        graphs = self._payloads(routes, token)
        return {"graphs": graphs, "layer_total": pack(layer_total, "float32"),
                "scores": pack(scores, "float32")}

    def export_extras(self, budget: int, seconds: float = 10.0) -> tuple[dict, dict, list[str]]:
        """Route graphs of every available method for the shown token first, then of the
        other tokens (current method first) until ``budget`` characters or ``seconds`` are
        spent, so keep, method and token changes work in the page without a kernel."""
        n = self._traces[0].n_tokens
        first = self.route_token
        if self._lazy:
            return self._lazy_extras(budget, seconds)
        methods = [self.method] + [e["name"] for e in self._methods if e["available"] and e["name"] != self.method]
        order = [(m, first) for m in methods]
        others = [i for i in range(n) if i != first]
        for m in methods:
            if m == "flow" and n > 128:
                continue  # one exact max-flow per token: too slow to precompute for long inputs
            order += [(m, i) for i in others]
        table: dict[str, dict] = {}
        used, left, smallest = 0, 0, None
        deadline = time.monotonic() + seconds
        for k, (m, i) in enumerate(order):
            # Stop, rather than compute entries that cannot be kept: out of time, or not even
            # the smallest route seen so far would still fit in the budget.
            if time.monotonic() > deadline or (smallest is not None and used + smallest > budget):
                left += len(order) - k
                break
            entry = to_jsonable(self._static_entry(m, i))
            size = json_nbytes(entry)
            smallest = size if smallest is None else min(smallest, size)
            if used + size > budget:
                left += 1
                if m == self.method and i == first:
                    break
                continue
            table.setdefault(m, {})[str(i)] = entry
            used += size
        notes = [f"flow: routes of {left} (method, token) pairs left out (size or time cap)"] if left else []
        return {}, {"routes": table, "default_token": int(self._default)}, notes

    def _lazy_extras(self, budget: int, seconds: float) -> tuple[dict, dict, list[str]]:
        """A LazyTrace: only the route drawn now (every other one is a full walk over the layers)."""
        self.wait(seconds, raise_=False)
        table: dict[str, dict] = {}
        if self._routes and self.status != "computing":
            rg = self._routes[0]
            scale = rg.value or 1.0
            entry = to_jsonable({"graphs": list(self.graphs), "layer_total": pack(rg.layer_total[None] / scale, "float32"),
                                 "scores": pack((np.asarray(rg.node[0]) / scale)[None], "float32")})
            if json_nbytes(entry) <= budget:
                table[rg.method] = {str(rg.token): entry}
        note = [f"flow: a LazyTrace's page holds the route of token {self.route_token} only (each route is a "
                "walk over every layer's maps)"]
        return {}, {"routes": table, "default_token": int(self._default)}, note

    # -- figures -------------------------------------------------------------------------
    def _figure_args(self) -> dict:
        self.wait(60.0, raise_=False)
        return {"graphs": list(self.graphs), "layer": self.layer, "rows": self.rows,
                "tokens": list(self.tokens), "special": list(self.special), "prompt_length": self.prompt_length,
                "title": f"{self.model_name or 'attention'} \u2014 {self.method}, keep {self.keep:.2f}"}

    def to_svg(self, wait: float = 60.0, **kwargs: Any) -> str:
        """The route graph(s) shown now as fully vector SVG: one ``<line>`` per drawn
        edge (:attr:`drawn_edges` of them), carry lines, labelled rows and gaps, and the
        legend. See :func:`attn_widgets.render.flow.route_svg`."""
        from ..render.flow import route_svg

        return route_svg(**{**self._figure_args(), **kwargs})

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..render.flow import route_raster

        args = self._figure_args()
        return route_raster(args["graphs"], n_layers=self.n_layers, tokens=args["tokens"], rows=args["rows"],
                            scale=scale)

    def wait(self, timeout: float = 60.0, raise_: bool = True) -> "AttentionFlow":
        """Block until a background flow job has finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while self.status == "computing":
            if time.monotonic() > deadline:
                if not raise_:
                    return self
                raise TimeoutError(f"flow job still running after {timeout} s")
            time.sleep(0.01)
        return self
