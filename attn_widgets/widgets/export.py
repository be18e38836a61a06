"""Standalone HTML export: one file, JS inlined, no CDN, no network, linked without a kernel."""

from __future__ import annotations

import base64
import html
import json
import pathlib
from typing import Any, Iterable

import numpy as np

from .._wire import pack
from ..flows import attention_flow
from ..flows.paths import trace_token
from ._base import STATIC, AttnWidget

__all__ = ["save_html", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_SKIP = {"layout", "tabbable", "tooltip", "keys", "comm", "log"}
_KINDS = {
    "AttentionMatrix": "matrix",
    "AttentionHeatmap": "heatmap",
    "AttentionFlow": "flow",
    "HeadSummary": "summary",
}
#: View module per kind (the head summary has a canvas view for pages without bqplot).
_ESM = {"matrix": "matrix", "heatmap": "heatmap", "flow": "flow", "summary": "summary_static"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _summary_state(w: Any) -> dict:
    from .summary import METRICS

    tr = w.trace
    return _jsonable({
        "layer": w.layer, "head": w.head, "token": w.token,
        "n_layers": tr.n_layers, "n_heads": tr.n_heads, "tokens": list(tr.tokens),
        "model_name": tr.model_name, "metric": w.metric, "metrics": list(w.available),
        "descriptions": {m: METRICS[m] for m in w.available},
        "stats": {m: pack(w.value(m).astype(np.float32), "float32") for m in w.available},
    })


def _state(w: Any) -> dict:
    if _KINDS.get(type(w).__name__) == "summary":
        return _summary_state(w)
    names = [n for n in w.trait_names(sync=True) if not n.startswith("_") and n not in _SKIP]
    return _jsonable({n: getattr(w, n) for n in names})


def _nbytes(obj: Any) -> int:
    return len(json.dumps(obj))


def _heatmap_extras(w: Any, budget: int) -> tuple[dict, list[str]]:
    """Preload head maps (float16) in order of interest until the budget is spent."""
    tr = w.trace
    order: list[tuple[int, Any]] = []
    layers = [w.layer] + [l for l in range(tr.n_layers) if l != w.layer]
    for l in layers:
        order += [(l, h) for h in range(tr.n_heads)] + [(l, "mean"), (l, "max")]
    maps, used, left_out = {}, 0, 0
    for l, h in order:
        # The heatmap's own wire form: the whole map, or its max-pooled overview for long texts.
        p = _jsonable(w._packed_map(l, h))
        size = _nbytes(p)
        if used + size > budget:
            left_out += 1
            continue
        maps[f"{l}:{h}"] = p
        used += size
    notes = [f"heatmap: {left_out} of {len(order)} head maps left out (size cap)"] if left_out else []
    return maps, notes


def _flow_extras(w: Any, budget: int) -> tuple[dict, list[str]]:
    """Traced nodes and scores for every token, so clicking a token works without a kernel."""
    tr_list = w.traces
    per = w._dense_edges()
    diff = w.compare_mode == "diff" and len(per) == 2
    n = tr_list[0].n_tokens
    order = ([w.token] if w.token is not None else []) + [i for i in range(n) if i != w.token]
    table, used, left_out = {}, 0, 0
    if w.method == "flow" and n > 128:
        return {"tokens": {}}, [f"flow: exact max-flow rows are not precomputed for {n} > 128 tokens"]
    if w.method == "flow":  # every row at once, not one max-flow call per token
        matrices = [attention_flow(tr.attentions, residual=w.residual) for tr in tr_list]
    else:
        matrices = w._score_matrices()
    for i in order:
        nodes = [trace_token(e, i) for e in per]
        scores = [m[i] for m in matrices]
        if diff:
            nodes, scores = [nodes[0] - nodes[1]], [scores[0] - scores[1]]
        entry = _jsonable({"nodes": pack(np.stack(nodes), "float32"), "scores": pack(np.stack(scores), "float32")})
        size = _nbytes(entry)
        if used + size > budget:
            left_out += 1
            continue
        table[str(i)] = entry
        used += size
    notes = [f"flow: traces of {left_out} of {n} tokens left out (size cap)"] if left_out else []
    return {"tokens": table}, notes


def _panels_of(items: Iterable[Any]) -> tuple[list[AttnWidget], list[str]]:
    from .explorer import Explorer
    from .summary import HeadSummary

    out, notes = [], []
    for it in items:
        if isinstance(it, Explorer):
            out += [it.matrix, it.heatmap, it.flow, it.summary]
        elif isinstance(it, HeadSummary) or (isinstance(it, AttnWidget) and type(it).__name__ in _KINDS):
            out.append(it)
        else:
            raise TypeError(f"save_html: cannot export a {type(it).__name__}; expected attn_widgets panels or an Explorer")
    if not out:
        raise ValueError("save_html: nothing to export (no Matrix, Heatmap or Flow panel given)")
    return out, notes


def save_html(
    path: str | pathlib.Path,
    *panels: Any,
    title: str = "attn_widgets",
    link: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pathlib.Path:
    """Write the panels to one self-contained HTML file that works offline.

    The views' JavaScript is inlined (no CDN, no network: the page's Content-Security-Policy
    forbids every request). With ``link=True`` the panels share their selection in the page,
    without a kernel. Head maps and per-token flow traces are embedded up to ``max_bytes``;
    beyond that the least relevant ones are left out and the page says so.

    Returns the path written.
    """
    if max_bytes < 1024 * 1024:
        raise ValueError(f"max_bytes: expected at least 1 MiB, received {max_bytes}")
    widgets, notes = _panels_of(panels)
    esm = {}
    for w in widgets:
        kind = _KINDS[type(w).__name__]
        src = STATIC / f"{_ESM[kind]}.js"
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: build the views first (npm run build)")
        esm[kind] = src.read_text(encoding="utf-8")
    host = STATIC / "static_host.js"
    if not host.exists():
        raise FileNotFoundError(f"{host} is missing: build the views first (npm run build)")

    entries = []
    for k, w in enumerate(widgets):
        entries.append({"id": f"aw-panel-{k}", "kind": _KINDS[type(w).__name__], "state": _state(w), "extras": {}})
    fixed = _nbytes(entries) + sum(len(s) for s in esm.values()) + host.stat().st_size
    if fixed > max_bytes:
        raise ValueError(
            f"save_html: the panels alone need {fixed / 1e6:.1f} MB, over max_bytes={max_bytes / 1e6:.1f} MB; "
            "export fewer panels, shorten the text, or raise max_bytes"
        )
    growing = [k for k, w in enumerate(widgets) if _KINDS[type(w).__name__] in ("heatmap", "flow")]
    share = (max_bytes - fixed) // max(1, len(growing))
    for k in growing:
        w = widgets[k]
        extras, more = (_heatmap_extras if _KINDS[type(w).__name__] == "heatmap" else _flow_extras)(w, share)
        if _KINDS[type(w).__name__] == "heatmap":
            entries[k]["state"]["preloaded"] = extras
        else:
            entries[k]["extras"] = extras
        notes += more

    doc = {
        "panels": entries,
        "esm": esm,
        "link": ["layer", "head", "token"] if link else None,
        "max_mb": round(max_bytes / 1e6, 1),
        "notes": notes,
    }
    # "<" escaped so no token text such as "</script>" can end the script element early.
    data = json.dumps(doc, separators=(",", ":")).replace("<", "\\u003c")
    host_src = host.read_text(encoding="utf-8").replace("</script", "<\\/script")
    divs = "\n".join(f'<div class="aw-export-panel" id="{e["id"]}"></div>' for e in entries)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data: blob:">
<title>{html.escape(title)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 16px; }} .aw-export-panel {{ margin: 12px 0; }}
.aw-export-notes {{ color: #616161; font-size: 12px; }}</style>
</head><body>
<h1 style="font-size:16px">{html.escape(title)}</h1>
<ul class="aw-export-notes">{note_html}</ul>
{divs}
<script type="application/json" id="aw-data">{data}</script>
<script>{host_src}</script>
<script>awStatic.mount(JSON.parse(document.getElementById("aw-data").textContent)).catch(function (e) {{
  document.body.dataset.awError = String(e); document.body.append("export failed to start: " + e); }});</script>
</body></html>
"""
    out = pathlib.Path(path)
    out.write_text(page, encoding="utf-8")
    size = out.stat().st_size
    if size > max_bytes * 1.05:
        out.unlink()
        raise ValueError(f"save_html: the file came to {size / 1e6:.1f} MB, over max_bytes; raise max_bytes")
    return out
