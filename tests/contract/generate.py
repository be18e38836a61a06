"""Write the contract fixtures: what the Python side sends and computes, for the JS tests.

Run ``PYTHONPATH=$PWD python tests/contract/generate.py`` after changing a message, an
array encoding or ``attn_widgets/style.json``; ``test_fixtures.py`` fails until the
committed files match. See ``tests/contract/README.md`` for the format.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

TOKENS = ["[CLS]", "the", "cat", "sat", "\n", "[SEP]"]


def _b64(value: Any) -> Any:
    """bytes -> {"$b64": ...} (the HTML export's encoding), recursively."""
    from attn_widgets._wire import to_jsonable

    return to_jsonable(value)


def _values(arr: np.ndarray) -> dict:
    """What a decoder must produce: dtype, shape and the values as JSON numbers (C order)."""
    a = np.asarray(arr)
    return {"dtype": str(a.dtype), "shape": [int(s) for s in a.shape],
            "values": [float(x) if a.dtype.kind == "f" else int(x) for x in a.ravel()]}


def synthetic_attentions(n_layers: int = 2, n_heads: int = 2, n: int = len(TOKENS)) -> np.ndarray:
    """A fixed, row-stochastic [L, H, T, T] array from a formula (no RNG, no model)."""
    l, h, i, j = np.meshgrid(*(np.arange(k) for k in (n_layers, n_heads, n, n)), indexing="ij")
    logits = np.sin(1.3 * i + 0.7 * j * (h + 1) + 0.5 * l) * 2.0 + (i == j) * (l + 1)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _trace():
    from attn_widgets.trace import AttentionTrace

    return AttentionTrace.from_tensors(synthetic_attentions(), TOKENS, model_name="synthetic")


class _Recorder:
    """Captures what a widget sends (content, buffers) instead of a comm."""

    def __init__(self, widget: Any) -> None:
        self.sent: list[tuple[dict, list]] = []
        widget.send = lambda content, buffers=None: self.sent.append((content, list(buffers or [])))

    def ask(self, widget: Any, request: dict) -> tuple[dict, list]:
        self.sent.clear()
        widget._on_custom_msg(widget, request, [])
        assert len(self.sent) == 1, self.sent
        return self.sent[0]


def _message(name: str, request: dict | None, content: dict, buffers: list, decoded: dict | None = None,
             note: str = "") -> dict:
    out = {"name": name, "request": request, "content": _b64(content),
           "buffers": [_b64(bytes(b)) for b in buffers]}
    if decoded is not None:
        out["decoded"] = decoded
    if note:
        out["note"] = note
    return out


def build_messages() -> dict:
    """Real replies of the real handlers for a fixed synthetic trace."""
    from attn_widgets._wire import unpack
    from attn_widgets.widgets.flow import AttentionFlow
    from attn_widgets.widgets.heatmap import AttentionHeatmap
    from attn_widgets.widgets.matrix import AttentionMatrix

    logging.getLogger("attn_widgets").setLevel(logging.CRITICAL)  # the error cases are on purpose
    tr = _trace()
    hm = AttentionHeatmap(tr, layer=1, head=0)
    rec = _Recorder(hm)
    msgs = []

    req = {"type": "get_map", "id": "r1", "layer": 0, "head": 1}
    content, bufs = rec.ask(hm, req)
    msgs.append(_message("get_map", req, content, bufs,
                         {"buffers": [_values(tr.head_map(0, 1).astype(np.float16))]}))
    req = {"type": "get_map", "id": "r2", "layer": 1, "head": "max"}
    content, bufs = rec.ask(hm, req)
    msgs.append(_message("get_map (aggregate)", req, content, bufs,
                         {"buffers": [_values(tr.head_map(1, "max").astype(np.float16))]}))
    req = {"type": "get_tile", "id": "r3", "layer": 1, "head": 0, "r0": 1, "r1": 4, "c0": 2, "c1": 6}
    content, bufs = rec.ask(hm, req)
    msgs.append(_message("get_tile", req, content, bufs,
                         {"buffers": [_values(tr.head_map(1, 0)[1:4, 2:6].astype(np.float16))]}))
    req = {"type": "get_map", "id": "r4", "layer": 9, "head": 0}
    content, bufs = rec.ask(hm, req)
    msgs.append(_message("error (bad layer)", req, content, bufs))
    req = {"type": "no_such_request", "id": "r5"}
    content, bufs = rec.ask(hm, req)
    msgs.append(_message("error (unknown request)", req, content, bufs))

    # A push: the kernel sends the newly selected head's map ahead of the selection change.
    rec.sent.clear()
    hm.head = 1
    content, bufs = rec.sent[-1]
    msgs.append(_message("map push", None, content, bufs,
                         {"buffers": [_values(tr.head_map(1, 1).astype(np.float16))]},
                         note="sent when layer/head change from Python; id is null, push is true"))
    # The view's acknowledgement of that push: a notice, no reply.
    ack = {"type": "map_ack", "seq": content["seq"]}
    rec.sent.clear()
    hm._on_custom_msg(hm, ack, [])
    assert rec.sent == [], rec.sent
    msgs.append(_message("map_ack", ack, {}, [],
                         note="view -> kernel when a pushed map arrived (seq null when the view starts); no reply"))

    mx = AttentionMatrix(tr, thumb_size=4)
    rec = _Recorder(mx)
    req = {"type": "get_svg", "id": "r6"}
    content, bufs = rec.ask(mx, req)
    msgs.append(_message("get_svg", req, content, [b"<svg: %d bytes>" % len(bufs[0])],
                         note="the buffer here is a placeholder; the real one is the UTF-8 SVG, "
                              "content.bytes long"))

    # The matrix of a LazyTrace: the same builders its handler and background thread use.
    from attn_widgets._wire import quantize_u8
    from attn_widgets.widgets import protocol

    q, scales = quantize_u8(synthetic_attentions(), cap=99.5)  # scales: the heads' colour tops (default cap)
    pending = np.array([[0, 1], [1, 1]], np.uint8)
    content, bufs = protocol.thumbs_message(q, scales, pending, "preview")
    msgs.append(_message("get_thumbs", {"type": "get_thumbs", "id": "r7"}, {**content, "id": "r7"}, bufs,
                         {"buffers": [_values(q), _values(scales), _values(pending)]},
                         note="only a matrix of a LazyTrace answers get_thumbs"))
    content, bufs = protocol.thumbs_chunk(1, q[1], scales[1])
    msgs.append(_message("thumbs_chunk", None, content, bufs,
                         {"buffers": [_values(q[1:2]), _values(scales[1])]},
                         note="pushed per layer by a LazyTrace matrix's background thread; it has no id field"))

    traits = {
        "heatmap.initial_map": {"value": _b64(hm.initial_map), "decoded": _values(unpack(hm.initial_map))},
        "matrix.thumbs.maps": {"value": _b64(mx.thumbs["maps"]), "decoded": _values(unpack(mx.thumbs["maps"]))},
        "matrix.thumbs.scales": {"value": _b64(mx.thumbs["scales"]),
                                 "decoded": _values(unpack(mx.thumbs["scales"]))},
    }
    fl = AttentionFlow(tr, keep=0.9)
    g = fl.graphs[0]
    traits["flow.graphs[0]"] = {
        "value": _b64(g),
        "decoded": {k: _values(unpack(g[k])) for k in ("counts", "query", "key", "weight", "carry", "node", "rows")},
    }
    # A LazyTrace's flow panel: the methods it offers (with why not) and a route job's progress.
    from attn_widgets.lazy import LazyTrace

    qk = np.sin(0.37 * np.arange(2 * 2 * len(TOKENS) * 4)).reshape(2, 2, len(TOKENS), 4).astype(np.float32)
    lazy = LazyTrace(TOKENS, qk, qk[..., ::-1].copy(), causal=True, model_name="synthetic")
    fl_lazy = AttentionFlow(lazy).wait(60)
    traits["flow.methods (LazyTrace)"] = {"value": fl_lazy.methods,
                                          "note": "reason: why a method is not offered, shown on the disabled option"}
    traits["flow.job"] = {"value": protocol.job_progress("route", "rollout route of token 3", 1, 2, token=3),
                          "note": "the job trait while a LazyTrace's route is computed ({} when none); "
                                  "text is the status line, jobText() builds it from the other fields"}
    for w in (hm, mx, fl, fl_lazy):
        w.close()
    return {"about": "Kernel -> view messages and packed traits of attn_widgets, from the real handlers "
                     "(tests/contract/generate.py). Buffers and bytes are {\"$b64\": base64}.",
            "messages": msgs, "traits": traits}


def build_style_cases() -> dict:
    """Colour tables and label choices computed by attn_widgets.render.style."""
    from attn_widgets.render import style as S

    luts = {}
    for name, bg in (("light", "light"), ("dark", "dark"), ("#202020", {"background": "#202020"}),
                     ("#f5f0e1", {"background": "#f5f0e1"})):
        luts[name] = {"background": list(S.resolve_theme(bg)["background"]),
                      "stops": [list(c) for c in S.theme_stops(bg)],
                      "lut_rgb": S.colormap_lut(bg).ravel().tolist()}
    values = [0.0, 0.1, 0.25, 0.5, 1 / 3, 0.999, 1.0, 2.0, -0.5]
    lut_index = [{"value": v, "max": m, "index": S.lut_index(v, m)} for m in (1.0, 0.5, 0.0) for v in values]
    text_on = [{"background": name, "index": i,
                "text": S.text_on(S.colormap_lut(bg)[i])}
               for name, bg in (("light", "light"), ("dark", "dark")) for i in (0, 64, 128, 160, 200, 255)]
    strides = [{"cell_px": c, "font_px": f, "stride": (None if s == float("inf") else s)}
               for c in (0, 0.5, 1, 2.5, 6.3, 11.5, 12.65, 13, 40) for f in (10, 11)
               for s in [S.label_stride(c, f)]]
    visible = []
    for n, cell, font, always in ((12, 4.0, 11, []), (12, 4.0, 11, [5]), (40, 1.0, 11, [0, 39]),
                                  (40, 2.0, 10, [17, None, 18]), (7, 20.0, 11, [3]), (100, 0.3, 11, [50]),
                                  (5, 0.0, 11, [2]), (30, 3.0, 11, [-1, 30, 29])):
        stride = S.label_stride(cell, font)
        visible.append({"n": n, "cell_px": cell, "font_px": font, "always": always,
                        "stride": None if stride == float("inf") else stride,
                        "visible": S.visible_labels(n, stride, always)})
    ranges = [{"a": a, "b": b, "cell_px": c, "font_px": 11, "always": al,
               "labels": S.range_labels(a, b, c, 11, al)}
              for a, b, c, al in ((0, 20, 5.0, [7]), (10, 50, 3.0, [12, 49]), (100, 140, 13.0, [None, 99, 120]))]
    weights = [0.0, 1e-4, 0.05, 0.124, 0.125, 0.5, 0.999, 1.0, 1.5, -0.2, -1.0, float("nan"), float("inf")]
    buckets = {"peak": 1.0, "weights": [None if not np.isfinite(w) else w for w in weights],
               "weights_note": "null stands for NaN (index 11) and +Infinity (index 12)",
               "buckets": S.bucket_edges(np.array(weights), 1.0).tolist()}
    styles = [{"bucket": b, "width": S.bucket_style(b)[0], "alpha": S.bucket_style(b)[1]}
              for b in range(2 * S.N_BUCKETS)]
    traced = [{"x": x, "style": None if st is None else {"width": st[0], "alpha": st[1]}}
              for x in (0.0, 0.01, 0.02, 0.5, 1.0) for st in [S.traced_style(x)]]
    nodes = [{"v": v, "row_h": rh, "style": None if st is None else {"radius": st[0], "alpha": st[1]}}
             for v in (0.0, 0.019, 0.5, 1.0) for rh in (1.0, 4.0, 18.0) for st in [S.node_style(v, rh)]]
    text = [{"input": s, "printable": S.printable(s), "truncate_12": S.truncate(S.printable(s), 12),
             "truncate_14": S.truncate(S.printable(s), 14)}
            for s in ("the", "Ġcat", "a\nb\tc", "\u202eevil", "supercalifragilistic", "x\u0000y")]
    sizes = {"heatmap_size": [{"n": n, "size": S.heatmap_size(n)} for n in (1, 3, 10, 17, 18, 100)],
             "fit_row": [{"n": n, "row_h": S.fit_row(n)} for n in (0, 1, 10, 36, 100, 1000)],
             "tile_step": [{"rows": r, "cols": c, "side": s, "step": S.tile_step(r, c, s)}
                           for r, c, s in ((10, 10, 16), (1024, 1024, 1024), (1025, 1024, 1024),
                                           (4096, 16, 256), (3000, 2000, 1024))]}
    # Colour scales (legends, matrix rescaling, compare mode).
    nvals = [0.0, 1e-4, 0.01, 0.05, 1 / 13, 0.2, 0.5, 0.999, 1.0, 2.0, -0.3]
    norm_index = [{"value": v, "max": m, "norm": n, "index": int(S.norm_index(v, m, n))}
                  for n in S.NORMS for m in (1.0, 0.3, 0.0) for v in nvals]
    signed_index = [{"value": v, "max": m, "norm": n, "index": int(S.signed_index(v, m, n))}
                    for n in S.NORMS for m in (0.2, 0.0) for v in (-0.5, -0.2, -0.01, 0.0, 0.01, 0.1, 0.2, 0.7)]
    code_table = [{"head_max": hm, "max": m, "norm": n, "signed": sg, "table": S.code_table(hm, m, n, sg).tolist()}
                  for hm, m, n, sg in ((0.077, 0.31, "sqrt", False), (0.5, 0.9, "linear", False),
                                       (0.3, 0.3, "log", False), (0.05, 0.2, "linear", True), (0.1, 0.1, "sqrt", True))]
    scales = np.array([[0.9, 0.1, 0.05], [0.02, 0.03, 0.01]])
    display_max = [{"scales": scales.tolist(), "scale": sc, "n_keys": nk, "signed": sg,
                    "top": S.display_max(scales, sc, nk, sg).tolist()}
                   for sc in S.SCALES for nk, sg in ((13, False), (512, False), (13, True))]
    diverging = {name: {"stops": [list(map(int, c)) for c in S.diverging_stops(name)],
                        "lut_rgb": S.diverging_lut(name).ravel().tolist()} for name in ("light", "dark")}
    return {"about": "Style computed by attn_widgets.render.style from attn_widgets/style.json "
                     "(tests/contract/generate.py); the JS views must compute the same.",
            "luts": luts, "lut_index": lut_index, "text_on": text_on, "label_stride": strides,
            "visible_labels": visible, "range_labels": ranges, "bucket_edges": buckets,
            "bucket_style": styles, "traced_style": traced, "node_style": nodes, "text": text, "sizes": sizes,
            "norm_index": norm_index, "signed_index": signed_index, "code_table": code_table,
            "display_max": display_max, "diverging": diverging}


def build() -> dict[str, Any]:
    return {"messages.json": build_messages(), "style_cases.json": build_style_cases()}


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, obj in build().items():
        (FIXTURES / name).write_text(dumps(obj), encoding="utf-8")
        print("wrote", FIXTURES / name)


if __name__ == "__main__":
    main()
