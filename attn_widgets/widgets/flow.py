"""AttentionFlow: how attention moves across layers, with a threshold and token tracing."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import traitlets as t

from .._jobs import Worker
from .._wire import json_nbytes, pack, to_jsonable
from ..flows import attention_flow
from ..flows.paths import CONTRIB_METHODS, METHODS, available_methods, check_method, layer_edges, score_matrix, sparse_edges, token_scores, trace_token
from ..interface import Trace
from ..trace import AttentionTrace
from ._assets import _esm
from ._base import AttnWidget

__all__ = ["AttentionFlow"]

_WARMED = threading.Event()


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


class AttentionFlow(AttnWidget):
    """Tokens (rows) at every layer boundary (columns), joined by the strong edges of a method.

    Column 0 is the input, column ``l`` the output of layer ``l - 1``. Edges between two
    columns are that layer's matrix for ``method`` (see :mod:`attn_widgets.flows.paths`);
    only edges with ``|w| >= threshold * (strongest edge of the layer)`` are sent and drawn,
    and with ``top_k > 0`` at most ``top_k`` per query token. Clicking a token traces its
    paths down to the input and shows the method's scores over the input tokens in a
    sentence strip; clicking a column selects its layer.

    ``method="flow"`` (exact max-flow) runs in a background thread: the panel shows
    progress, the kernel stays responsive, a new selection cancels the stale job, and
    rows are cached.

    Parameters
    ----------
    trace
        The trace to show.
    compare
        A second trace over the same tokens (e.g. a fine-tuned model); shown side by side
        (``compare_mode="side"``) or as the difference ``trace - compare`` (``"diff"``).
    labels
        Names of the two traces in compare mode.
    """

    _esm = _esm("flow")
    export_kind = export_view = "flow"
    export_grows = True
    _computed = frozenset({"labels", "has_gradients", "graphs", "nodes", "scores", "status", "progress"})

    method = t.Enum(list(METHODS), default_value="rollout").tag(sync=True)
    threshold = t.Float(0.1).tag(sync=True)
    top_k = t.Int(0).tag(sync=True)
    residual = t.Float(0.5).tag(sync=True)
    signed = t.Bool(False).tag(sync=True)
    compare_mode = t.Enum(["side", "diff"], default_value="side").tag(sync=True)
    labels = t.List(t.Unicode()).tag(sync=True)
    has_gradients = t.Bool(False).tag(sync=True)
    max_edges = t.Int(150_000).tag(sync=True)

    #: One entry per drawn graph: packed sparse edges plus counts (kernel -> view).
    graphs = t.List().tag(sync=True)
    #: Traced node shares ``[G, L + 1, T]`` for the selected token (packed) or {}.
    nodes = t.Dict().tag(sync=True)
    #: Scores over input tokens ``[G, T]`` for the selected token (packed) or {}.
    scores = t.Dict().tag(sync=True)
    #: "" | "computing" | "ready" | "error"
    status = t.Unicode("").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)

    def __init__(
        self,
        trace: AttentionTrace,
        compare: AttentionTrace | None = None,
        labels: tuple[str, str] | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        for what, tr in (("trace", trace), ("compare", compare)):
            if isinstance(tr, Trace) and tr.is_cross:
                raise ValueError(
                    f"{what}: AttentionFlow needs square self-attention maps (tokens flowing through "
                    f"the layers of one stack); this is a cross-attention trace ({tr.n_tokens} query x "
                    f"{tr.n_keys} key tokens). Show it with AttentionHeatmap or AttentionMatrix, or pass "
                    "the encoder / decoder trace of a Seq2SeqTrace (s2s.encoder, s2s.decoder) to AttentionFlow."
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
        self._edges_cache: dict[tuple, list[np.ndarray]] = {}
        self._worker = Worker()
        self._last_progress = 0.0
        self._has_grad = all(tr.has_gradients for tr in self._traces)
        # value_norm / alti: every trace must have contributions (aw.trace(..., contributions=True)).
        self._has_contrib = {m: all(m in available_methods(tr) for tr in self._traces) for m in CONTRIB_METHODS}
        check_method(kwargs.get("method", "rollout"), self._has_grad, self._has_contrib.get(kwargs.get("method"), True))
        super().__init__(trace, **kwargs)
        self.labels, self.has_gradients = labels, self._has_grad
        self._check_params()
        self._refresh_graphs()
        self._refresh_token()
        self.observe(self._on_graph_params, ["method", "threshold", "top_k", "residual", "signed", "compare_mode", "max_edges"])
        self.observe(self._on_token_params, ["token"])
        _warm_up_flow_solver()

    # -- validation ---------------------------------------------------------------------
    @t.validate("method")
    def _validate_method(self, proposal):
        return check_method(proposal["value"], self._has_grad, self._has_contrib.get(proposal["value"], True))

    @t.validate("threshold")
    def _validate_threshold(self, proposal):
        v = proposal["value"]
        if not (0.0 <= v <= 1.0):
            raise t.TraitError(f"threshold: expected 0 <= threshold <= 1, received {v}")
        return v

    @t.validate("top_k")
    def _validate_top_k(self, proposal):
        v = proposal["value"]
        if v < 0:
            raise t.TraitError(f"top_k: expected top_k >= 0 (0 = no limit), received {v}")
        return v

    @t.validate("residual")
    def _validate_residual(self, proposal):
        v = proposal["value"]
        if not (0.0 <= v <= 1.0):
            raise t.TraitError(f"residual: expected 0 <= residual <= 1, received {v}")
        return v

    @t.validate("max_edges")
    def _validate_max_edges(self, proposal):
        v = proposal["value"]
        if not 1 <= v <= 1_000_000:
            raise t.TraitError(f"max_edges: expected 1 <= max_edges <= 1000000, received {v}")
        return v

    def _check_params(self) -> None:
        if self.compare_mode == "diff" and len(self._traces) < 2:
            raise ValueError("compare_mode='diff' needs a second trace: AttentionFlow(trace, compare=other)")

    # -- public, read-only views of what is shown ---------------------------------------
    @property
    def traces(self) -> list[AttentionTrace]:
        return list(self._traces)

    def edges(self) -> np.ndarray:
        """Dense per-layer edge matrices of the current method: ``[G, L, T, T]``.

        ``G`` is 1, or 2 in side-by-side compare mode (1 in diff mode: the difference).
        """
        per = self._dense_edges()
        if self.compare_mode == "diff" and len(per) == 2:
            return (per[0] - per[1])[None]
        return np.stack(per)

    @property
    def drawn_edges(self) -> int:
        """How many edges the view draws now (after threshold, top-k and the cap)."""
        return sum(int(g["count"]) for g in self.graphs)

    def token_scores(self, wait: float | None = 30.0) -> np.ndarray | None:
        """Scores of the selected token over the input tokens, ``[G, T]`` (None if no token).

        For ``method="flow"`` this waits up to ``wait`` seconds for the background job.
        """
        if self.token is None:
            return None
        deadline = time.monotonic() + (wait or 0.0)
        while self.status == "computing" and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.status != "ready":
            raise RuntimeError(f"scores not ready (status={self.status!r}); try again or pass a longer wait")
        from .._wire import unpack

        return unpack(self.scores).astype(np.float32)

    # -- computation (math lives in attn_widgets.flows) --------------------------------
    def _cached(self, what: str, build) -> list[np.ndarray]:
        """Per-trace matrices of the current method (``what``: "edges" or "scores"), built
        once per (method, residual, signed) and reused by every threshold change and click."""
        key = (what, self.method, round(self.residual, 6), self.signed)
        cached = self._edges_cache.get(key)
        if cached is None:
            cached = [build(k, tr) for k, tr in enumerate(self._traces)]
            if len(self._edges_cache) > 16:
                self._edges_cache.clear()
            self._edges_cache[key] = cached
        return cached

    def _dense_edges(self) -> list[np.ndarray]:
        return self._cached(
            "edges",
            lambda _k, tr: layer_edges(tr, self.method, tr.gradients, residual=self.residual,
                                       signed=self.signed),
        )

    def _score_matrices(self) -> list[np.ndarray]:
        """``[T, T]`` scores per trace (not for ``method="flow"``, which is per row)."""
        edges = self._dense_edges()
        return self._cached(
            "scores",
            lambda k, tr: score_matrix(tr, self.method, tr.gradients, residual=self.residual,
                                       signed=self.signed, edges=edges[k]),
        )

    def _graph_payload(self, edges: np.ndarray, label: str) -> dict:
        sp = sparse_edges(edges, self.threshold, self.top_k, self.max_edges)
        counts = np.bincount(sp["layer"], minlength=edges.shape[0]).astype(np.int32)
        qdtype = "uint16" if sp["query"].dtype == np.uint16 else "int32"
        return {
            "label": label,
            "counts": pack(counts, "int32"),
            "query": pack(sp["query"], qdtype),
            "key": pack(sp["key"], qdtype),
            "weight": pack(sp["weight"].astype(np.float16), "float16"),
            "count": int(sp["layer"].size),
            "total": sp["total"],
            "capped": sp["capped"],
            "peak": float(np.abs(edges).max()) if edges.size else 0.0,
            # What these edges were cut with, so the view can say what it draws.
            "threshold": float(self.threshold),
            "top_k": int(self.top_k),
            "method": self.method,
            "signed": bool(edges.min() < 0),
        }

    def _refresh_graphs(self) -> None:
        per = self._dense_edges()
        if self.compare_mode == "diff" and len(per) == 2:
            graphs = [self._graph_payload(per[0] - per[1], f"{self.labels[0]} \u2212 {self.labels[1]}")]
        else:
            graphs = [self._graph_payload(e, lab) for e, lab in zip(per, self.labels)]
        self.graphs = graphs

    def _on_graph_params(self, change: dict) -> None:
        try:
            self._check_params()
            self._refresh_graphs()
            self.error = ""
        except Exception as exc:  # keep the panel usable and say what went wrong
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if change["name"] in ("method", "residual", "signed", "compare_mode"):
            self._refresh_token()

    def _on_token_params(self, _change: dict) -> None:
        self._refresh_token()

    # -- per-token rows: one definition for the panel and its HTML export ---------------------
    def _diff(self) -> bool:
        return self.compare_mode == "diff" and len(self._traces) == 2

    def _combine(self, rows: np.ndarray) -> np.ndarray:
        """``[G, ...]`` per-trace rows as shown: the difference A - B in diff mode."""
        return rows[:1] - rows[1:] if self._diff() else rows

    def _token_nodes(self, token: int) -> np.ndarray:
        """The traced token's node shares ``[G, L + 1, T]`` as shown."""
        return self._combine(np.stack([trace_token(e, token) for e in self._dense_edges()]))

    def export_extras(self, budget: int) -> tuple[dict, dict, list[str]]:
        """Traced nodes and scores of every token (the selected one first) until ``budget``
        is spent, so clicking a token works without a kernel."""
        n = self._traces[0].n_tokens
        order = ([self.token] if self.token is not None else []) + [i for i in range(n) if i != self.token]
        if self.method == "flow" and n > 128:
            return {}, {"tokens": {}}, [f"flow: exact max-flow rows are not precomputed for {n} > 128 tokens"]
        if self.method == "flow":  # every row at once, not one max-flow call per token
            matrices = [attention_flow(tr.attentions, residual=self.residual) for tr in self._traces]
        else:
            matrices = self._score_matrices()
        table, used, left_out = {}, 0, 0
        for i in order:
            scores = self._combine(np.stack([m[i] for m in matrices]))
            entry = to_jsonable({"nodes": pack(self._token_nodes(i), "float32"), "scores": pack(scores, "float32")})
            size = json_nbytes(entry)
            if used + size > budget:
                left_out += 1
                continue
            table[str(i)] = entry
            used += size
        notes = [f"flow: traces of {left_out} of {n} tokens left out (size cap)"] if left_out else []
        return {}, {"tokens": table}, notes

    def _refresh_token(self) -> None:
        token = self.token
        if token is None:
            self._worker.cancel()
            self.nodes, self.scores, self.status, self.progress = {}, {}, "", 0.0
            return
        diff = self._diff()
        self.nodes = {"token": token, **pack(self._token_nodes(token), "float32")}
        key = (self.method, token, round(self.residual, 6), self.signed)

        def compute(job=None) -> np.ndarray:
            if self.method != "flow":
                return np.stack([m[token] for m in self._score_matrices()])
            out = []
            n = len(self._traces)
            for k, tr in enumerate(self._traces):
                def progress(done: int, total: int, k: int = k) -> None:
                    self._report_progress((k + done / max(total, 1)) / n)

                cancel = (lambda: job.cancelled()) if job is not None else None
                out.append(token_scores(tr.attentions, self.method, token, tr.gradients,
                                        residual=self.residual, signed=self.signed,
                                        progress=progress, cancel=cancel))
            return np.stack(out)

        def publish(rows: np.ndarray) -> None:
            if diff:
                rows = self._combine(rows)
            self.scores = {"token": token, "method": self.method, **pack(rows, "float32")}
            self.progress = 1.0
            self.status = "ready"

        cached = self._worker.cached(key)
        if cached is not None:
            self._worker.cancel()
            publish(cached)
            return
        if self.method != "flow":
            self._worker.cancel()
            try:
                publish(compute())
            except Exception as exc:
                self.status, self.error = "error", f"{type(exc).__name__}: {exc}"
            return

        self.scores, self.status, self.progress = {}, "computing", 0.0
        self._last_progress = 0.0

        def failed(exc: BaseException) -> None:
            self.status = "error"
            self.error = f"flow for token {token} failed: {type(exc).__name__}: {exc}"

        self._worker.submit(key, compute, publish, failed)

    def _report_progress(self, value: float) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.1 or value >= 1.0:  # at most ~10 updates a second
            self._last_progress = now
            self.progress = float(min(max(value, 0.0), 1.0))

    # -- figures -------------------------------------------------------------------------
    def _figure_args(self, wait: float | None) -> dict:
        """What the figures draw now; ``wait=None``: no strip scores (the raster has no strip)."""
        from .._wire import unpack

        nodes = unpack(self.nodes) if self.token is not None and self.nodes else None
        scores = None
        if self.token is not None and wait is not None:
            try:
                scores = self.token_scores(wait=wait)
            except RuntimeError:  # still computing or failed: the figure has no strip
                scores = None
        return {
            "threshold": float(self.threshold),
            "top_k": int(self.top_k),
            "token": self.token,
            "nodes": nodes,
            "scores": scores,
            "max_edges": int(self.max_edges),
            "layer": self.layer,
        }

    def to_svg(self, wait: float = 60.0, **kwargs: Any) -> str:
        """The graph(s) shown now as fully vector SVG: one ``<line>`` per drawn edge
        (:attr:`drawn_edges` of them), token labels on both sides, the traced token's paths
        and, once its scores are ready (waits up to ``wait`` s for ``method="flow"``), its
        sentence strip. See :func:`attn_widgets.figures.flow_svg`."""
        from ..render.flow import flow_svg

        args = self._figure_args(wait)
        edges = self.edges()
        labels = [g["label"] for g in self.graphs] if len(edges) > 1 or len(self._traces) > 1 else None
        kwargs.setdefault("labels", labels)
        kwargs.setdefault("special", list(self.special))
        return flow_svg(edges, list(self.tokens), **{**args, **kwargs})

    def _png_array(self, scale: int | None = None) -> np.ndarray:
        from ..render.flow import flow_raster

        args = self._figure_args(None)
        args.pop("scores")
        return flow_raster(self.edges(), scale=scale, **args)

    def wait(self, timeout: float = 60.0) -> "AttentionFlow":
        """Block until a background flow job has finished (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while self.status == "computing":
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow job still running after {timeout} s")
            time.sleep(0.01)
        return self
