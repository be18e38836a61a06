"""Flow panel click latency in real JupyterLab: click a token row -> its route graph drawn.

On the demo model (MiniLM, 6 x 12) at T = 128 and 512 tokens, for every flow method: the
panel's row of a token is clicked in the browser and the time until the panel has drawn
that token's route (``data-route-token`` and a new ``data-draws``, status not
"computing") is measured with ``performance.now()`` in the page; median over the clicked
tokens. Bytes per click: the packed ``graphs`` + ``scores`` the kernel sends (binary
payload, as on the wire). Also the kernel-side cost of the route alone (``route_graph``
with precomputed layers) for ``flow`` at T = 512 (target: within 2 s).

Usage: ``PYTHONPATH=$PWD python benchmarks/bench_flow_panel.py [--sizes 128,512] [--clicks 3]``.
Prints a markdown table and writes benchmarks/results/flow_panel.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

import nbformat
from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.browser import harness as H

TEXT = " ".join(["The committee reviewed the proposal, noting that the budget was large but the plan was sound."] * 30)
FLOW = ".aw-panel.aw-flow"
METHODS = ("attention", "rollout", "flow", "grad_rollout", "attn_grad")


def _src(n: int) -> str:
    return f"""import attn_widgets as aw, json, time
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, {TEXT!r}, max_length={n})
flow = aw.AttentionFlow(trace)
def wire_bytes():
    def size(x):
        if isinstance(x, dict):
            return sum(size(v) for v in x.values())
        if isinstance(x, list):
            return sum(size(v) for v in x)
        return len(x) if isinstance(x, (bytes, bytearray, memoryview)) else 0
    return size(flow.graphs) + size(flow.scores)
flow"""


def bench(sizes, clicks) -> list[dict]:
    rows = []
    with H.JupyterServer("lab", notebooks=None) as server, sync_playwright() as pw:
        browser = H.launch_browser(pw)
        for n in sizes:
            name = f"bench_flow_{n}.ipynb"
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_src(n))])
            nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(nb, server.root / name)
            p = H.NotebookPage(browser, server, name, viewport=(1500, 1400)).open(run=False)
            H.run_all(p.page)
            H.wait_executed(p.page, 300)
            page = p.page
            page.wait_for_selector(f"{FLOW} canvas.aw-canvas", timeout=60000)
            for m in METHODS:
                p.kernel_exec(f"flow.token = None; flow.method = {m!r}; flow.wait(120)")
                H.wait_dataset(page, FLOW, {"method": m}, timeout=120)
                times, sizes_b = [], []
                for c in range(clicks):
                    canvas = page.locator(f"{FLOW} canvas.aw-canvas").first
                    d = canvas.evaluate("c => ({left: +c.dataset.left, colW: +c.dataset.colW, rowY: JSON.parse(c.dataset.rowY)})")
                    cur = page.get_attribute(FLOW, "data-route-token")
                    cands = [k for k in d["rowY"] if k != cur]
                    tok = cands[(c * 7 + 3) % len(cands)]
                    canvas.scroll_into_view_if_needed()
                    box = canvas.bounding_box()
                    ms = page.evaluate(
                        """([sel, x, y, tok]) => new Promise((resolve) => {
                          const el = document.querySelector(sel);
                          const t0 = performance.now();
                          const draws0 = Number(el.dataset.draws);
                          const check = () => {
                            const ds = el.dataset;
                            if (ds.routeToken === tok && ds.status !== "computing" && Number(ds.draws) > draws0 && ds.scoresFor === tok)
                              resolve(performance.now() - t0);
                            else requestAnimationFrame(check);
                          };
                          const c = el.querySelector("canvas.aw-canvas");
                          const r = c.getBoundingClientRect();
                          c.dispatchEvent(new MouseEvent("click", {clientX: r.left + x, clientY: r.top + y, bubbles: true}));
                          requestAnimationFrame(check);
                        })""",
                        [FLOW, d["left"] + 3 * d["colW"], d["rowY"][tok], tok],
                    )
                    del box
                    times.append(ms)
                    sizes_b.append(int(p.kernel_exec("print(wire_bytes())")))
                edges = int(page.get_attribute(FLOW, "data-edges"))
                labelled = int(page.get_attribute(FLOW, "data-rows"))
                rows.append({"T": n, "method": m, "click_ms": statistics.median(times), "bytes": int(statistics.median(sizes_b)),
                             "edges": edges, "rows": labelled})
                print(rows[-1], flush=True)
            if n == max(sizes):
                out = p.kernel_exec(
                    "import time, statistics\nfrom attn_widgets.flows.route import route_graph, route_layers\n"
                    "lay = route_layers(trace, 'flow'); route_graph(None, 'flow', 0, layers=lay)\n"
                    "ts = []\nfor tk in (0, 100, 300, 500):\n    t0 = time.perf_counter(); route_graph(None, 'flow', tk, layers=lay); ts.append(time.perf_counter() - t0)\n"
                    "print(json.dumps([statistics.median(ts), max(ts)]))")
                med, worst = json.loads(out)
                rows.append({"T": n, "method": "flow route_graph (kernel only)", "click_ms": 1000 * med, "bytes": 0,
                             "edges": 0, "rows": 0, "worst_ms": 1000 * worst})
                print(rows[-1], flush=True)
            p.close()
        browser.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="128,512")
    ap.add_argument("--clicks", type=int, default=3)
    a = ap.parse_args()
    rows = bench([int(s) for s in a.sizes.split(",")], a.clicks)
    lines = ["| T | method | click -> drawn (median ms) | bytes per click | edges drawn | labelled rows |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        extra = f" (worst {r['worst_ms']:.0f})" if "worst_ms" in r else ""
        lines.append(f"| {r['T']} | {r['method']} | {r['click_ms']:.0f}{extra} | {r['bytes']} | {r['edges']} | {r['rows']} |")
    table = "\n".join(lines)
    print(table)
    res = REPO / "benchmarks" / "results"
    res.mkdir(exist_ok=True)
    (res / "flow_panel.md").write_text("# Flow panel: token click -> route drawn (JupyterLab, demo model)\n\n" + table + "\n")


if __name__ == "__main__":
    main()
