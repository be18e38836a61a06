"""A burst of selection changes from Python: bytes on the websocket and time to settle.

JupyterLab in headless Chromium (the harness of tests/browser), the demo model (MiniLM,
6 layers x 12 heads), T = 512 tokens, an AttentionMatrix linked to an AttentionHeatmap. One
cell runs ``--changes`` selection changes in a loop (``heatmap.layer = ...; heatmap.head =
...``: a user sweeping heads inside a loop over layers). Measured per run (median of
``--runs``):

- bytes: payload bytes of every websocket frame the page receives on the kernel channel from
  the start of the loop until 1.5 s after the page shows the final head;
- loop: seconds the loop took in the kernel;
- settle: seconds from the loop's end (its reply reaching the test) until the heatmap's
  ``data-shown`` is the kernel's final ``layer:head``.

Usage: ``python benchmarks/bench_burst.py [--runs 3] [--changes 1000]``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import lab_notebook, med, write_notebook
from tests.browser import harness as H
from tests.browser.test_backpressure import SOURCE, Frames, T


def loop_code(n: int, offset: int) -> str:
    return f"""import json, time
t0 = time.perf_counter()
for i in range({offset}, {offset + n - 1}):
    heatmap.layer = (i // 11) % 6
    heatmap.head = i % 11
heatmap.head = 11  # never visited by the loop: a lagging page cannot match it by chance
print(json.dumps([heatmap.layer, heatmap.head, time.perf_counter() - t0]))"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--changes", type=int, default=1000)
    args = ap.parse_args(argv)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="aw-bench-burst-"))
    path = write_notebook(workdir, "bench_burst.ipynb", [SOURCE])
    rows = []
    try:
        with lab_notebook(workdir, path, (1400, 1600), "bench_burst") as nbp:
            frames = Frames(nbp.page)
            nbp.open()
            page = nbp.page
            H.wait_dataset(page, H.HEATMAP, {"shown": "0:0"}, timeout=120)
            for run in range(args.runs):
                page.wait_for_timeout(1000)
                frames.total, frames.on = 0, True
                layer, head, loop_s = json.loads(nbp.kernel_exec(loop_code(args.changes, 7 * run + 1), timeout=600))
                t_end = time.monotonic()
                H.wait_dataset(page, H.HEATMAP, {"shown": f"{layer}:{head}"}, timeout=300)
                settle = time.monotonic() - t_end
                page.wait_for_timeout(1500)
                frames.on = False
                rows.append({"bytes": frames.total, "loop_s": loop_s, "settle_s": settle})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    b, lp, st = (med([r[k] for r in rows]) for k in ("bytes", "loop_s", "settle_s"))
    print(f"\n| T | changes | bytes received | loop | settle after the loop |\n|---|---|---|---|---|\n"
          f"| {T} | {args.changes} | {b / 1e6:.2f} MB | {lp:.2f} s | {st:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
