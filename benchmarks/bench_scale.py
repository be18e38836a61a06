"""Long contexts: a LazyTrace of a 32-layer x 32-head model at T = 1024, 2048, 4096.

The model is ``attn_widgets.capture.long_context_model("gpt2")``: GPT-2 built from a config
(random weights, hidden size 256, so head size 8; nothing downloaded), on T random token
ids. Captured with ``attn_widgets.trace_lazy`` (queries and keys only; no
``output_attentions``), shown as ``AttentionMatrix`` + ``AttentionHeatmap`` (linked).

(m) kernel memory, one fresh subprocess per T: peak RSS (``ru_maxrss``) of a process
    that imports attn_widgets / torch / transformers, builds the model, captures the
    trace, builds both widgets, waits until every thumbnail is exact and fetches tiles -
    everything the kernel does here but the Jupyter machinery. Also its delta over the
    RSS after building the model, the q/k bytes held, and the times of the capture, of
    the widgets' construction (preview thumbnails + heatmap overview) and of the exact
    thumbnails (background thread).
(b) bytes to first display: payload bytes of the websocket frames the page receives on
    the kernel channel from executing the display cell until both panels have drawn.
    The progressive refinement that follows (exact thumbnail chunks and the final state)
    is given separately.
(d) first draw: ``performance.now()`` in the page from dispatching "run cell" until both
    new panels report a draw. Includes building the widgets (preview thumbnails, heatmap
    overview) in the kernel; the capture runs before, in its own cell.
(e) exact: from the same start until the matrix reports every thumbnail exact.
(c) head switch: click a matrix cell -> the heatmap's ``data-shown`` is that head (link
    round trip + ``get_map`` of a max-pooled overview computed from q/k + decode + paint).
    Measured after the refinement finished, and (c') while it is still running (the
    first clicks right after the first draw; at small T it may already be done).
(z) zoom: a drag over ~1/16 x 1/16 of the map -> ``get_tile`` at full resolution -> the
    heatmap shows it (``data-source="tile"``, ``data-step="1"``). At T <= 1024 the whole map
    is already at full resolution in the page: the zoom is a local crop, no request.

(f) flows (subprocess per T and mode): the rollout and attention route graphs of a token
    (last and middle), every head's statistics and building an Explorer on the LazyTrace;
    and the capture with the gradient-rollout route streamed through the backward pass
    against the plain capture (time ratio, peak RSS).

Targets (issue 5): peak kernel memory <= 2 GB at T = 4096, first draw <= 2 s, head switch
<= 300 ms; (issue 12) rollout route of a clicked token <= 10 s, capture with the streamed
gradient-rollout route <= 2x the plain capture, peak <= 2 GB.

Usage: ``python benchmarks/bench_scale.py [--sizes 1024,2048,4096] [--runs 3] [--clicks 5]
[--skip-memory] [--skip-flows] [--skip-browser]``.
Prints a markdown table and writes benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    CELL_DONE_JS,
    CLICK_DISPATCH_JS,
    CLICK_PREFIX_JS,
    RESULTS_DIR,
    browser_env,
    lab_notebook,
    load,
    med,
    ms,
    run_cell_js,
    span,
    write_notebook,
    write_results,
)
from tests.browser import harness as H  # noqa: E402

RESULTS = RESULTS_DIR / "scale.md"
TARGET_T = 4096
TARGETS = {"rss_mb": 2048.0, "draw_ms": 2000.0, "click_ms": 300.0, "route_s": 10.0, "grad_ratio": 2.0}
MODEL = dict(n_layer=32, n_head=32, n_embd=256)

# -- (m) memory, in a subprocess per T -------------------------------------------------------
MEMORY_SCRIPT = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
T = int(sys.argv[1]); cfg = json.loads(sys.argv[2])
import numpy as np
import attn_widgets as aw
start = rss_mb()
model, tok = aw.capture.long_context_model("gpt2", n_positions=max(T, 1024), **cfg)
ids = np.random.default_rng(0).integers(1000, 20000, T)
after_model = rss_mb()
t0 = time.perf_counter(); trace = aw.trace_lazy(model, tok, ids); capture_s = time.perf_counter() - t0
after_capture = rss_mb()
t0 = time.perf_counter(); m = aw.AttentionMatrix(trace); matrix_s = time.perf_counter() - t0
t0 = time.perf_counter(); h = aw.AttentionHeatmap(trace); heatmap_s = time.perf_counter() - t0
aw.link(m, h)
t0 = time.perf_counter(); assert m.wait_thumbnails(1800); exact_s = time.perf_counter() - t0 + matrix_s
for layer, head in [(3, 5), (17, 2), (31, 31)]:
    h._handle_get_map({"layer": layer, "head": head})
h._handle_get_map({"layer": 0, "head": "mean"})
h._handle_get_tile({"layer": 5, "head": 1, "r0": 0, "r1": T, "c0": 0, "c1": T})
h._handle_get_tile({"layer": 5, "head": 1, "r0": T // 2, "r1": T // 2 + 256, "c0": 100, "c1": 356})
print(json.dumps({
    "start_mb": start, "model_mb": after_model, "capture_mb": after_capture, "peak_mb": rss_mb(),
    "qk_mb": trace.nbytes / 2**20, "capture_s": capture_s, "matrix_s": matrix_s, "heatmap_s": heatmap_s,
    "exact_s": exact_s,
}))
"""


def measure_memory(T: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(T), json.dumps(MODEL)],
        capture_output=True, text=True, cwd=REPO, timeout=3600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory run for T={T} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- (f) flows, gradients and head statistics on the LazyTrace, in a subprocess per mode ---------
FLOWS_SCRIPT = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
T = int(sys.argv[1]); cfg = json.loads(sys.argv[2]); mode = sys.argv[3]
import numpy as np
import attn_widgets as aw
from attn_widgets import flows
model, tok = aw.capture.long_context_model("gpt2", n_positions=max(T, 1024), **cfg)
ids = np.random.default_rng(0).integers(1000, 20000, T)
after_model = rss_mb()
out = {"model_mb": after_model}
t0 = time.perf_counter()
trace = aw.trace_lazy(model, tok, ids, grad_rollout=(mode == "grad"))
out["capture_s"] = time.perf_counter() - t0
out["capture_peak_mb"] = rss_mb()
if mode == "grad":
    t0 = time.perf_counter(); g = trace.grad_route.route(keep=0.8); out["grad_route_s"] = time.perf_counter() - t0
    out["grad_edges"] = int(g.n_edges); out["grad_position"] = int(trace.grad_route.position)
else:
    for method in ("rollout", "attention"):
        for name, token in (("last", T - 1), ("middle", T // 2)):
            t0 = time.perf_counter()
            r = flows.route_graph(trace, method, token, keep=0.8, max_edges_per_layer=80)
            out[f"{method}_{name}_s"] = time.perf_counter() - t0
            out[f"{method}_{name}_edges"] = int(r.n_edges)
    t0 = time.perf_counter(); st = flows.head_stats(trace); out["stats_s"] = time.perf_counter() - t0
    assert np.isfinite(st["entropy"]).all()
    t0 = time.perf_counter(); ex = aw.Explorer(trace); out["explorer_s"] = time.perf_counter() - t0
    ex.close()
out["peak_mb"] = rss_mb()
print(json.dumps(out))
"""


def measure_flows(T: int, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FLOWS_SCRIPT, str(T), json.dumps(MODEL), mode],
        capture_output=True, text=True, cwd=REPO, timeout=3600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"flows run ({mode}) for T={T} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- browser ------------------------------------------------------------------------------------
SETUP = f"""
import gc, json, resource, time
import numpy as np
import attn_widgets as aw
from IPython.display import display
MODEL = {MODEL!r}
_model = {{}}
state = {{}}

def prepare(T):
    # Drop the previous T's widgets and trace, then capture this T.
    for w in state.get("widgets", []):
        w.close()
    state.clear()
    gc.collect()
    if "gpt2" not in _model:
        _model["gpt2"] = aw.capture.long_context_model("gpt2", n_positions=4096, **MODEL)
    model, tok = _model["gpt2"]
    ids = np.random.default_rng(0).integers(1000, 20000, T)
    t0 = time.perf_counter()
    state["trace"] = aw.trace_lazy(model, tok, ids)
    return time.perf_counter() - t0

def show():
    for w in state.get("widgets", []):
        w.close()  # stops the previous display's background thumbnails
    m = aw.AttentionMatrix(state["trace"])
    h = aw.AttentionHeatmap(state["trace"])
    aw.link(m, h)
    state["widgets"] = [m, h]
    display(m, h)

def show_explorer():
    for w in state.get("widgets", []):
        w.close()
    ex = aw.Explorer(state["trace"])
    state["widgets"] = [ex]
    state["explorer_t0"] = time.perf_counter()
    display(ex)

def explorer_jobs(timeout=900):
    # Seconds from building the Explorer until its default route and its head statistics are done.
    ex, t0, done = state["widgets"][0], state["explorer_t0"], dict()
    while len(done) < 3 and time.perf_counter() - t0 < timeout:
        now = time.perf_counter() - t0
        if "thumbs_s" not in done and ex.matrix.wait_thumbnails(0):
            done["thumbs_s"] = now
        if "route_s" not in done and ex.flow.status not in ("computing", "error") and not ex.flow.job and ex.flow.graphs:
            done["route_s"] = now
        if "stats_s" not in done and not ex.summary.computing:
            done["stats_s"] = now
        time.sleep(0.05)
    return json.dumps(done)

def kernel_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("ready")
"""

_RUN_CELL_JS = run_cell_js(
    "__awScale",
    """    if (res.both === undefined && res.matrix !== undefined && res.heatmap !== undefined) {
      res.both = Math.max(res.matrix, res.heatmap);
      res.previewCells = Number(m.dataset.pending || 0);
    }
    if (res.exact === undefined && m && m.dataset.thumbs === "exact" && Number(m.dataset.draws || 0) >= 1) {
      res.exact = now - res.t0;
    }
    if (res.both !== undefined && res.exact !== undefined) mo.disconnect();
""",
    ["data-draws", "data-thumbs"],
)

_CLICK_JS = CLICK_PREFIX_JS + """  const timer = setTimeout(() => { mo.disconnect(); reject(new Error("no redraw to " + want)); }, 60000);
  const mo = new MutationObserver(() => {
    if (h.dataset.shown === want && h.dataset.source !== "tile") {
      const t = performance.now() - t0;
      mo.disconnect();
      clearTimeout(timer);
      resolve(t);
    }
  });
  mo.observe(h, {attributes: true, attributeFilter: ["data-shown", "data-draws"]});
""" + CLICK_DISPATCH_JS

_ZOOM_JS = """([idx, n, r0, c0, span]) => new Promise((resolve, reject) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[idx];
  const h = cell.node.querySelector(".aw-panel.aw-heatmap");
  const c = h.querySelector("canvas.aw-canvas");
  const r = c.getBoundingClientRect();
  const d = c.dataset;
  const px = (tok) => Number(d.size) * (tok + 0.5) / n;
  const x0 = r.left + Number(d.left) + px(c0), y0 = r.top + Number(d.top) + px(r0);
  const x1 = r.left + Number(d.left) + px(c0 + span), y1 = r.top + Number(d.top) + px(r0 + span);
  const full = `0:${n}:0:${n}`;
  if (h.dataset.zoom !== full) return reject(new Error("not at the whole map: " + h.dataset.zoom));
  const timer = setTimeout(() => { mo.disconnect(); reject(new Error("no tile; data " + JSON.stringify({...h.dataset}))); }, 60000);
  const mo = new MutationObserver(() => {
    const ds = h.dataset;
    if (ds.zoom !== full && ds.step === "1") {  // a fetched tile, or a crop of a whole map
      const t = performance.now() - t0;
      mo.disconnect();
      clearTimeout(timer);
      resolve({ms: t, zoom: ds.zoom, source: ds.source});
    }
  });
  mo.observe(h, {attributes: true, attributeFilter: ["data-zoom", "data-source", "data-step", "data-draws"]});
  const opts = (x, y) => ({clientX: x, clientY: y, bubbles: true, cancelable: true, button: 0});
  const t0 = performance.now();
  c.dispatchEvent(new MouseEvent("mousedown", opts(x0, y0)));
  c.dispatchEvent(new MouseEvent("mousemove", opts(x1, y1)));
  c.dispatchEvent(new MouseEvent("mouseup", opts(x1, y1)));
})"""

_RESET_ZOOM_JS = """([idx, n]) => new Promise((resolve) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[idx];
  const h = cell.node.querySelector(".aw-panel.aw-heatmap");
  h.querySelector("button.aw-zoom-reset").click();
  const full = `0:${n}:0:${n}`;
  const poll = () => (h.dataset.zoom === full && h.dataset.source !== "tile" ? resolve(true) : setTimeout(poll, 20));
  poll();
})"""

class FrameCounter:
    """Payload bytes of websocket frames the page receives on kernel channels, by phase.

    In the "refine" phase only frames about thumbnails count (the per-layer chunks and the
    final state), not the maps that clicks during the refinement fetch."""

    def __init__(self, page) -> None:
        self.phase: str | None = None
        self.bytes: dict[str, int] = {}
        page.on("websocket", self._ws)

    def _ws(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        if self.phase is None:
            return
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        if self.phase == "refine" and b"thumbs" not in raw[:16384]:
            return
        self.bytes[self.phase] = self.bytes.get(self.phase, 0) + len(raw)


def run_cell(page, counter: FrameCounter, idx: int, wait_exact: bool, keep_counting: bool = False,
             timeout: float = 1800) -> dict:
    counter.bytes.clear()
    counter.phase = "first"
    page.evaluate(_RUN_CELL_JS, idx)
    deadline = time.monotonic() + timeout
    res: dict = {}
    while time.monotonic() < deadline:
        st = page.evaluate(CELL_DONE_JS, idx)
        if st.get("error"):
            raise RuntimeError(f"cell {idx} raised {st['error']}")
        res = page.evaluate("() => window.__awScale")
        if res.get("both") is not None and counter.phase == "first":
            counter.phase = "refine"
        if res.get("both") is not None and (not wait_exact or res.get("exact") is not None):
            break
        page.wait_for_timeout(10)
    else:
        raise TimeoutError(f"cell {idx}: no draw / exact thumbnails after {timeout}s: {res}")
    page.wait_for_timeout(300)
    if not keep_counting:  # the last display keeps counting refinement bytes through its clicks
        counter.phase = None
    return {**res, "bytes_first": counter.bytes.get("first", 0), "bytes_refine": counter.bytes.get("refine", 0)}


def build_notebook(folder: pathlib.Path) -> str:
    return write_notebook(folder, "bench_scale.ipynb", [SETUP, "show()", "show_explorer()"])


def browser_runs(sizes: list[int], runs: int, clicks: int, zooms: int, explorer: bool = True) -> dict:
    heads_after = [(1, 1), (9, 7), (14, 30), (22, 12), (27, 5), (4, 19), (30, 25), (12, 3)][:clicks]
    heads_during = [(2, 9), (20, 21), (11, 14)]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="aw-bench-scale-"))
    path = build_notebook(workdir)
    rows: dict = {}
    with lab_notebook(workdir, path, (1400, 2400), "bench_scale") as nbp:
        counter = FrameCounter(nbp.page)
        nbp.open(run=False)
        page = nbp.page
        nbp.kernel_exec(SETUP, timeout=600)
        for T in sizes:
            capture_s = float(nbp.kernel_exec(f"print(prepare({T}))", timeout=1800))
            r: dict = {"capture_s": capture_s, "runs": []}
            for rep in range(runs + 1):  # rep 0: warm-up (cold caches, first paint of this size)
                last = rep == runs
                res = run_cell(page, counter, 1, wait_exact=False, keep_counting=last)
                if last:
                    # Clicks while the exact thumbnails are still being computed.
                    during = []
                    for layer, head in heads_during:
                        during.append(page.evaluate(_CLICK_JS, [1, layer, head]))
                        page.wait_for_timeout(100)
                    r["click_during_ms"] = during
                    res = {**res, **_wait_exact(page, counter)}
                r["runs"].append(res)
            r["click_ms"] = []
            for layer, head in heads_after:
                r["click_ms"].append(page.evaluate(_CLICK_JS, [1, layer, head]))
                page.wait_for_timeout(100)
            r["zoom_ms"] = []
            span = max(16, T // 16)
            for k in range(zooms):
                # Away from the map's edge: the page truncates synthetic clientX/Y to whole px.
                r0 = span + (k * 7919) % (T - 3 * span)
                c0 = r0 - span // 2
                got = page.evaluate(_ZOOM_JS, [1, T, r0, c0, span])
                r["zoom_ms"].append(got["ms"])
                r["zoom_source"] = got["source"]
                page.evaluate(_RESET_ZOOM_JS, [1, T])
                page.wait_for_timeout(100)
            if explorer and T == max(sizes):
                # The Explorer on the same LazyTrace: first draw, head switches while its default
                # route and the head statistics run in the background, and after.
                res = run_cell(page, counter, 2, wait_exact=False)
                r["explorer_draw_ms"] = res["both"]
                r["explorer_click_during_ms"] = []
                for layer, head in heads_during:
                    r["explorer_click_during_ms"].append(page.evaluate(_CLICK_JS, [2, layer, head]))
                    page.wait_for_timeout(100)
                r["explorer_jobs"] = json.loads(nbp.kernel_exec("print(explorer_jobs())", timeout=1000))
                r["explorer_click_ms"] = []
                for layer, head in heads_after:
                    r["explorer_click_ms"].append(page.evaluate(_CLICK_JS, [2, layer, head]))
                    page.wait_for_timeout(100)
            r["kernel_rss_mb"] = float(nbp.kernel_exec("print(kernel_rss_mb())"))
            rows[T] = r
        errors = H.our_errors(nbp.log)
    return {"rows": rows, "errors": len(errors)}


def _wait_exact(page, counter: FrameCounter, timeout: float = 1800) -> dict:
    """Wait until every thumbnail is exact; the refinement bytes were counted all along."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur = page.evaluate("() => window.__awScale")
        if cur.get("exact") is not None:
            page.wait_for_timeout(300)
            counter.phase = None
            return {"exact": cur["exact"], "bytes_refine": counter.bytes.get("refine", 0)}
        page.wait_for_timeout(100)
    raise TimeoutError("thumbnails never became exact")


# -- report -------------------------------------------------------------------------------------
def mb(x):
    return f"{x / 1e6:.2f} MB"


def sec(x):
    return f"{x:.1f} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1024,2048,4096")
    ap.add_argument("--runs", type=int, default=3, help="measured displays per T (after one warm-up)")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--zooms", type=int, default=5)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-flows", action="store_true")
    ap.add_argument("--skip-explorer", action="store_true", help="no Explorer display at the largest T")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    t_start = time.monotonic()
    load_before = load()

    memory = {}
    if not args.skip_memory:
        for T in sizes:
            memory[T] = measure_memory(T)
            print(f"T={T} memory: {json.dumps(memory[T])}", flush=True)
    flows = {}
    if not args.skip_flows:
        for T in sizes:
            flows[T] = {mode: measure_flows(T, mode) for mode in ("plain", "grad")}
            print(f"T={T} flows: {json.dumps(flows[T])}", flush=True)
    browser = {"rows": {}, "errors": 0}
    if not args.skip_browser:
        browser = browser_runs(sizes, max(1, args.runs), args.clicks, args.zooms, not args.skip_explorer)
    elapsed = time.monotonic() - t_start
    load_after = load()

    def verdict(T, key, value):
        if T != TARGET_T or math.isnan(value):
            return ""
        return " ✅" if value <= TARGETS[key] else " ❌"

    lines = [
        "| T | (m) kernel peak RSS (Δ over model) | q/k held | capture | widgets built (preview) | "
        "(b) bytes to first display | refinement bytes | (d) first draw | (e) all thumbnails exact | "
        "(c) head switch | (c') switch during refinement | (z) zoom tile |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for T in sizes:
        m = memory.get(T, {})
        b = browser["rows"].get(T, {})
        runs = b.get("runs", [])[1:] or b.get("runs", [])
        peak = m.get("peak_mb", float("nan"))
        mem = f"{peak:.0f} MB (+{peak - m['model_mb']:.0f})" if m else "-"
        draws = [x["both"] for x in runs]
        lines.append(
            f"| {T} | {mem}{verdict(T, 'rss_mb', peak)} | {m.get('qk_mb', float('nan')):.0f} MiB "
            f"| {sec(m['capture_s']) if m else '-'} "
            f"| {sec(m['matrix_s'] + m['heatmap_s']) if m else '-'} "
            f"| {span([x['bytes_first'] for x in runs], mb)} "
            f"| {span([x['bytes_refine'] for x in runs if x.get('exact') is not None], mb)} "
            f"| {span(draws, ms)}{verdict(T, 'draw_ms', med(draws))} "
            f"| {span([x['exact'] / 1000 for x in runs if x.get('exact') is not None], sec)} "
            f"| {span(b.get('click_ms', []), ms)}{verdict(T, 'click_ms', med(b.get('click_ms', [])))} "
            f"| {span(b.get('click_during_ms', []), ms)} | {span(b.get('zoom_ms', []), ms)} |"
        )
    lines.append(
        f"| target (T={TARGET_T}) | ≤ {TARGETS['rss_mb'] / 1024:.0f} GB | | | | | | ≤ {TARGETS['draw_ms'] / 1000:.0f} s "
        f"| | ≤ {TARGETS['click_ms']:.0f} ms | | |"
    )
    table = "\n".join(lines)
    flines = [
        "| T | rollout route, last token | rollout route, middle token | attention route, last / middle "
        "| head statistics [L, H] | Explorer built | peak RSS | capture | capture + streamed grad_rollout route "
        "(ratio) | its peak RSS | grad route for another keep |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for T in sizes:
        f = flows.get(T)
        if not f:
            continue
        p, g = f["plain"], f["grad"]
        ratio = g["capture_s"] / p["capture_s"]
        peak = max(p["peak_mb"], g["peak_mb"])
        rv = p["rollout_last_s"]
        mark = (lambda ok: (" ✅" if ok else " ❌") if T == TARGET_T else "")
        flines.append(
            f"| {T} | {sec(rv)}{mark(rv <= TARGETS['route_s'])} | {sec(p['rollout_middle_s'])} "
            f"| {sec(p['attention_last_s'])} / {sec(p['attention_middle_s'])} | {sec(p['stats_s'])} "
            f"| {sec(p['explorer_s'])} | {p['peak_mb']:.0f} MB{mark(p['peak_mb'] <= TARGETS['rss_mb'])} "
            f"| {sec(p['capture_s'])} | {sec(g['capture_s'])} ({ratio:.2f}x){mark(ratio <= TARGETS['grad_ratio'])} "
            f"| {g['peak_mb']:.0f} MB{mark(g['peak_mb'] <= TARGETS['rss_mb'])} | {g['grad_route_s'] * 1000:.0f} ms |"
        )
    flines.append(
        f"| target (T={TARGET_T}) | ≤ {TARGETS['route_s']:.0f} s | | | | | ≤ {TARGETS['rss_mb'] / 1024:.0f} GB | "
        f"| ≤ {TARGETS['grad_ratio']:.0f}x | ≤ {TARGETS['rss_mb'] / 1024:.0f} GB | |"
    )
    flow_table = "\n".join(flines) if flows else "(not run: --skip-flows)"
    ex_lines = []
    for T, b in browser["rows"].items():
        if "explorer_draw_ms" in b:
            jobs = b["explorer_jobs"]
            ex_lines.append(
                f"| {T} | {ms(b['explorer_draw_ms'])} | {span(b['explorer_click_during_ms'], ms)} "
                f"| {sec(jobs.get('route_s', float('nan')))} | {sec(jobs.get('stats_s', float('nan')))} "
                f"| {sec(jobs.get('thumbs_s', float('nan')))} "
                f"| {span(b['explorer_click_ms'], ms)}{verdict(T, 'click_ms', med(b['explorer_click_ms']))} |"
            )
    explorer_table = (
        "| T | first draw (matrix + heatmap) | head switch while route + statistics run | default route done "
        "| head statistics done | exact thumbnails done | head switch after |\n|---|---|---|---|---|---|---|\n" + "\n".join(ex_lines)
        if ex_lines else "(not run)"
    )
    import torch

    env = browser_env(f"torch {torch.__version__}") + f" · load average before {load_before}, after {load_after}"
    kernel_rss = ", ".join(f"T={T}: {r['kernel_rss_mb']:.0f} MB" for T, r in browser["rows"].items())
    capture_kernel = ", ".join(f"T={T}: {r['capture_s']:.1f} s" for T, r in browser["rows"].items())
    zoom_src = ", ".join(f"T={T}: {r.get('zoom_source', '?')}" for T, r in browser["rows"].items())
    cold = ", ".join(
        f"T={T}: {ms(r['runs'][0]['both'])}" for T, r in browser["rows"].items() if r.get("runs")
    )
    preview_cells = ", ".join(
        f"T={T}: {r['runs'][-1].get('previewCells', '?')}" for T, r in browser["rows"].items() if r.get("runs")
    )
    doc = f"""# Long-context benchmark (benchmarks/bench_scale.py)

{env}

GPT-2 from a config, {MODEL['n_layer']} layers × {MODEL['n_head']} heads, hidden size {MODEL['n_embd']}
(head size {MODEL['n_embd'] // MODEL['n_head']}), random weights, T random token ids; `trace_lazy` →
`LazyTrace`; `AttentionMatrix` + `AttentionHeatmap` (overview ≤ 1024 px per side), linked.
Browser figures: median (min–max) of {args.runs} displays after one warm-up; clicks and zooms on
the last display.

{table}

- (m) one fresh Python process per T (`ru_maxrss`), doing what the kernel does: build the model,
  capture, build both widgets, wait for every exact thumbnail, fetch overviews, a mean map and
  tiles. It includes Python + torch + transformers + the model (the Δ is what the trace and the
  widgets add). The Jupyter kernel of the browser run reached a peak RSS of {kernel_rss or '-'}
  (all sizes in one process, sizes in increasing order).
- capture = `trace_lazy` (one sdpa forward of the 32-layer model + copying q/k), not part of the
  display; in the browser run's kernel: {capture_kernel or '-'}.
- (b) websocket payload bytes the page received from "run cell" until both panels drew; the
  refinement (per-layer chunks of exact thumbnails + the final exact state) comes after it.
- (d) includes the kernel building the widgets (preview thumbnails: one sampled query row per
  thumbnail pixel row; and the heatmap overview); cells still on the preview at first draw:
  {preview_cells or '-'} (all of them, by design: the panel marks them and says "preview").
- (e) exact thumbnails cost a full softmax per head (L·H·T²/2 exponentials for a causal model),
  computed by a background thread on one core, one layer at a time (selected layer first).
- (c) `get_map` of a head at T > 1024 is a max-pooled overview computed from q/k (one full
  softmax of that head, in row blocks). (c') is the same while (e) is running.
- (z) what the zoomed view came from (tile = fetched from the kernel, map = cropped from the
  full-resolution map already in the page): {zoom_src or '-'}.
- Cold first display (warm-up run, not in the medians): {cold or '-'}.
### (f) Flows, gradients and head statistics on the LazyTrace

{flow_table}

- One fresh process per T and mode (`ru_maxrss`). "plain": `trace_lazy`, then
  `flows.route_graph(trace, method, token, keep=0.8, max_edges_per_layer=80)` (each layer's
  head-mean map recomputed from q/k, one layer in memory), `flows.head_stats(trace)` (every
  head, reduced in row blocks), `aw.Explorer(trace)`. "grad": `trace_lazy(...,
  grad_rollout=True)`: one forward + one backward whose hooks walk the gradient-rollout route
  of the last position down the layers (no `[H, T, T]` gradient is stored); the last column is
  re-pruning the stored route for another `keep`.

### (x) The Explorer on the same LazyTrace (browser, largest T)

{explorer_table}

- `aw.Explorer(trace)`: matrix, heatmap, flow (its default route, of the last token, computed in
  the background with progress), head summary (statistics in the background) and the
  methods-agreement note. Route / statistics / thumbnail times are from building the Explorer,
  in the kernel, with the three background jobs and the page's requests sharing the CPUs; "head
  switch after" is measured once all three are done.

- Whole run: {elapsed:.0f} s. Console errors from our modules: {browser['errors']}.
"""
    print(table)
    out = write_results(args.out, doc)
    print(f"\nwrote {out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
