"""First-display cost and click latency of AttentionMatrix + AttentionHeatmap in a real browser.

JupyterLab in headless Chromium (the harness of tests/browser), the embedded demo model
(MiniLM, 6 layers x 12 heads), T = 64 and 512 tokens of a real paragraph (cropped with
``max_length``). For each T, one warm-up display, then ``--runs`` measured ones (median):

(a) bytes: payload bytes of every websocket frame the *page* receives on the kernel
    channel, from executing the display cell until the kernel is idle again (the cell
    builds the two widgets, links them and displays them). Also given: the part of it in
    comm messages (widget state), and the widget state size computed on the kernel side
    (JSON + binary buffers of ``get_state()`` for both widgets).
(b) draw: ``performance.now()`` in the page from dispatching "run cell" until both new
    panels report a draw (``data-draws >= 1``, seen by a MutationObserver).
(c) click: ``performance.now()`` in the page from dispatching a click on a matrix cell
    until the heatmap's ``data-shown`` becomes that head (MutationObserver). "new" heads
    need a kernel round trip for the link and one for the map; "seen" heads are in the
    view's cache (link round trip only).

Usage: ``python benchmarks/bench_render.py [--runs 5] [--sizes 64,512]``.
Prints a markdown table and writes benchmarks/results/render.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    CELL_DONE_JS,
    CLICK_DISPATCH_JS,
    CLICK_PREFIX_JS,
    PARAGRAPH,
    RESULTS_DIR,
    browser_env,
    lab_notebook,
    med,
    ms,
    run_cell_js,
    span,
    write_notebook,
    write_results,
)
from tests.browser import harness as H  # noqa: E402

RESULTS = RESULTS_DIR / "render.md"
BUDGET_T = 512
BUDGETS = {"bytes": 1_000_000, "draw_ms": 1000.0, "click_ms": 100.0}

SETUP = f'''
import json, time
import numpy as np
import attn_widgets as aw
from IPython.display import display
from ipywidgets.widgets.widget import _remove_buffers

model, tokenizer = aw.demo_model()
PARAGRAPH = {PARAGRAPH!r}
TEXT = " ".join([PARAGRAPH] * 8)   # long enough for 512 tokens; max_length crops it
traces = {{}}
for T in SIZES:
    traces[T] = aw.trace(model, tokenizer, TEXT, max_length=T)
    assert traces[T].n_tokens == T, (T, traces[T].n_tokens)
state_bytes = {{T: [] for T in SIZES}}
shown = {{}}

def state_size(w):
    state, _paths, buffers = _remove_buffers(w.get_state())
    return len(json.dumps(state, separators=(",", ":"))) + sum(len(memoryview(b).cast("B")) for b in buffers)

def show(T):
    m = aw.AttentionMatrix(traces[T])
    h = aw.AttentionHeatmap(traces[T])
    aw.link(m, h)
    state_bytes[T].append(state_size(m) + state_size(h))
    shown[T] = (m, h)
    display(m, h)
print("ready", {{T: tr.n_tokens for T, tr in traces.items()}})
'''

_RUN_CELL_JS = run_cell_js(
    "__awBench",
    """    if (res.matrix !== undefined && res.heatmap !== undefined) {
      res.both = Math.max(res.matrix, res.heatmap);
      mo.disconnect();
    }
""",
    ["data-draws"],
)

_CLICK_JS = CLICK_PREFIX_JS + """  const timer = setTimeout(() => { mo.disconnect(); reject(new Error("no redraw to " + want + ", shown " + h.dataset.shown)); }, 20000);
  // "loading..." in the status line: the heatmap got the new head from the kernel (link).
  let tLink = null;
  const status = h.querySelector(".aw-status");
  const mo = new MutationObserver(() => {
    if (tLink === null && status && status.textContent.startsWith("loading")) tLink = performance.now() - t0;
    if (h.dataset.shown === want) {
      const t = performance.now() - t0;
      mo.disconnect();
      clearTimeout(timer);
      resolve({total: t, link: tLink});
    }
  });
  mo.observe(h, {attributes: true, attributeFilter: ["data-shown"], subtree: true, childList: true, characterData: true});
""" + CLICK_DISPATCH_JS

MSG_TYPE = re.compile(rb'"msg_type"\s*:\s*"([a-z_]+)"')


class FrameCounter:
    """Bytes of websocket frames the page receives on kernel channels (while ``on``)."""

    def __init__(self, page) -> None:
        self.on = False
        self.total = 0
        self.comm = 0
        self.frames = 0
        self.get_map = 0
        page.on("websocket", self._ws)

    def _ws(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", self._frame)
            ws.on("framesent", self._sent)

    def _frame(self, payload) -> None:
        if not self.on:
            return
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.total += len(raw)
        self.frames += 1
        m = MSG_TYPE.search(raw[:4096])
        if m and m.group(1).startswith(b"comm_"):
            self.comm += len(raw)

    def _sent(self, payload) -> None:
        raw = payload.encode() if isinstance(payload, str) else bytes(payload)
        if self.on and b'"get_map"' in raw:
            self.get_map += 1

    def reset(self) -> None:
        self.total = self.comm = self.frames = self.get_map = 0


def run_cell(page, idx: int, timeout: float = 300) -> dict:
    page.evaluate(_RUN_CELL_JS, idx)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = page.evaluate(CELL_DONE_JS, idx)
        if st.get("error"):
            raise RuntimeError(f"cell {idx} raised {st['error']}")
        res = page.evaluate("() => window.__awBench")
        if st.get("done") and (idx == 0 or res.get("both") is not None):
            return res
        page.wait_for_timeout(20)
    raise TimeoutError(f"cell {idx} did not finish/draw in {timeout}s: {page.evaluate('() => window.__awBench')}")


def build_notebook(folder: pathlib.Path, sizes: list[int]) -> str:
    cells = [f"SIZES = {sizes!r}\n" + SETUP] + [f"show({T})" for T in sizes]
    return write_notebook(folder, "bench_render.ipynb", cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = max(5, args.runs)
    heads_new = [(1, 1), (2, 3), (3, 5), (4, 7), (5, 9), (1, 11), (2, 0), (3, 2)][: max(runs, 5)]

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="aw-bench-nb-"))
    path = build_notebook(workdir, sizes)
    rows = {}
    t_start = time.monotonic()
    try:
        with lab_notebook(workdir, path, (1400, 1800), "bench_render") as nbp:
            counter = FrameCounter(nbp.page)
            nbp.open(run=False)
            page = nbp.page
            run_cell(page, 0)
            for i, T in enumerate(sizes, start=1):
                r = {"bytes": [], "comm": [], "draw_ms": [], "click_new_ms": [], "click_seen_ms": []}
                for rep in range(runs + 1):  # rep 0: warm-up
                    page.wait_for_timeout(300)  # let earlier frames reach the counter first
                    counter.reset()
                    counter.on = True
                    res = run_cell(page, i)
                    page.wait_for_timeout(300)  # frames already received, still being dispatched
                    counter.on = False
                    if rep == 0:
                        r["cold"] = {"bytes": counter.total, "draw_ms": res["both"]}
                        continue
                    r["bytes"].append(counter.total)
                    r["comm"].append(counter.comm)
                    r["draw_ms"].append(res["both"])
                # Clicks on the last display of this T.
                r["click_link_ms"] = []
                page.wait_for_timeout(300)
                counter.reset()
                counter.on = True
                for layer, head in heads_new:
                    c = page.evaluate(_CLICK_JS, [i, layer, head])
                    r["click_new_ms"].append(c["total"])
                    if c["link"] is not None:
                        r["click_link_ms"].append(c["link"])
                    page.wait_for_timeout(100)
                page.wait_for_timeout(300)
                counter.on = False
                r["click_requests"] = counter.get_map / len(heads_new)
                r["click_bytes"] = counter.total / len(heads_new)
                for layer, head in heads_new[:-1]:  # the last one is showing now
                    r["click_seen_ms"].append(page.evaluate(_CLICK_JS, [i, layer, head])["total"])
                    page.wait_for_timeout(100)
                r["state"] = json.loads(nbp.kernel_exec(f"print(json.dumps(state_bytes[{T}]))"))[1:]
                rows[T] = r
            errors = H.our_errors(nbp.log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - t_start

    def kb(x):
        return f"{x / 1000:.1f} kB"

    def verdict(T, key, value):
        if T != BUDGET_T:
            return ""
        return " ✅" if value <= BUDGETS[key] else " ❌"

    lines = [
        "| T | (a) bytes to page at first display | of which comm msgs | widget state (kernel side) "
        "| (b) run cell → both drawn | (c) click head → heatmap redrawn (new head) | (c') same, head seen before |",
        "|---|---|---|---|---|---|---|",
    ]
    for T, r in rows.items():
        lines.append(
            f"| {T} | {span(r['bytes'], kb)}{verdict(T, 'bytes', med(r['bytes']))} | {span(r['comm'], kb)} "
            f"| {kb(med(r['state']))} | {span(r['draw_ms'], ms)}{verdict(T, 'draw_ms', med(r['draw_ms']))} "
            f"| {span(r['click_new_ms'], ms)}{verdict(T, 'click_ms', med(r['click_new_ms']))} "
            f"| {span(r['click_seen_ms'], ms)} |"
        )
    lines.append(
        f"| budget (T={BUDGET_T}) | ≤ {BUDGETS['bytes'] / 1e6:.0f} MB | | | ≤ {BUDGETS['draw_ms']:.0f} ms "
        f"| ≤ {BUDGETS['click_ms']:.0f} ms | |"
    )
    def split_of(r: dict) -> str:
        link = (
            f"{ms(med(r['click_link_ms']))} until the heatmap got the selection update back from the "
            f"kernel, {ms(med(r['click_new_ms']) - med(r['click_link_ms']))} more until drawn; "
            if r["click_link_ms"]
            else ""
        )
        return (
            f"{link}{r['click_requests']:.1f} `get_map` requests and {kb(r['click_bytes'])} received "
            "per click"
        )

    split = ", ".join(f"T={T}: {split_of(r)}" for T, r in rows.items())
    cold = ", ".join(
        f"T={T}: {kb(r['cold']['bytes'])}, {ms(r['cold']['draw_ms'])}" for T, r in rows.items()
    )
    env = browser_env()
    table = "\n".join(lines)
    doc = f"""# Render benchmark (benchmarks/bench_render.py)

{env}

Demo model (MiniLM, 6 layers × 12 heads), text: a Moby-Dick paragraph repeated, cropped with
`max_length=T`. Median (min–max) of {runs} runs after one warm-up display; clicks: {len(heads_new)} new
heads, then {len(heads_new) - 1} revisits, on the last display.

{table}

- (a) is measured in the **page**: payload bytes of all websocket frames received on the kernel
  channel (Playwright `framereceived`) from executing the display cell (build both widgets, link,
  display) until the kernel is idle again; it includes status / execute_input / execute_reply frames.
  "comm msgs" is the part in `comm_*` messages; "widget state (kernel side)" is JSON + buffers of
  `get_state()` of both widgets, computed in the kernel.
- (b) `performance.now()` in the page, from dispatching `notebook:run-cell` until both *new* panels
  set `data-draws >= 1` (MutationObserver). Includes building the widgets and the trace's thumbnails
  in the kernel, but not the capture (`aw.trace`), which runs in the setup cell.
- (c) `performance.now()` in the page, from dispatching a click on a matrix cell until the heatmap's
  `data-shown` is that head: matrix view → kernel (link) → the heatmap pushes the new head's map
  and then the selection update → decode, paint, draw (a `get_map` request only if no map came).
  Split of (c), medians: {split}.
- Cold first display (warm-up run, not in the medians): {cold}.
- Whole run: {elapsed:.0f} s. Console errors from our modules: {len(errors)}.
"""
    print(table)
    print(f"\nclick split: {split}")
    print(f"cold first display: {cold}; console errors from our modules: {len(errors)}; {elapsed:.0f} s")
    out = write_results(args.out, doc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
