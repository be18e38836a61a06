"""Backpressure on the wire: a burst of selection changes from Python (a loop, an animation)
must neither flood the websocket nor leave the page behind the kernel.

The heatmap sends at most one pushed map at a time per panel (the view acknowledges each) and
only the newest selection's; the view keeps at most one map request in flight. So after any
burst the page shows the kernel's selection, and the bytes are bounded by the maps it draws.
"""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from . import harness as H
from .harness import HEATMAP

pytestmark = pytest.mark.browser

NB = "aw_backpressure_browser_test.ipynb"
T = 512
SOURCE = f"""import attn_widgets as aw
from IPython.display import display
model, tokenizer = aw.demo_model()
TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the bank of the river."] * 60)
trace = aw.trace(model, tokenizer, TEXT, max_length={T})
assert trace.n_tokens == {T}, trace.n_tokens
matrix = aw.AttentionMatrix(trace)
heatmap = aw.AttentionHeatmap(trace)
aw.link(matrix, heatmap)
display(matrix, heatmap)"""
N_CHANGES = 1000
MAP_BYTES = T * T * 2  # one float16 map
#: The bound: a handful of maps (the first push, the newest after the burst, a request or two
#: of the view racing them) plus the small JSON state updates themselves.
BYTES_BOUND = 8 * MAP_BYTES + N_CHANGES * 2_000
LOOP = f"""import time
t0 = time.perf_counter()
for i in range({N_CHANGES} - 1):
    heatmap.layer = (i // 11) % 6   # a user sweeping heads inside a loop over layers
    heatmap.head = i % 11
heatmap.head = 11   # a head the loop never visited: a page lagging behind cannot match it by chance
print(json.dumps([heatmap.layer, heatmap.head, time.perf_counter() - t0]))"""


class Frames:
    """Payload bytes of the websocket frames the page receives from the kernel."""

    def __init__(self, page) -> None:
        self.on = False
        self.total = 0
        page.on("websocket", self._ws)

    def _ws(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        if self.on:
            self.total += len(payload.encode() if isinstance(payload, str) else payload)


@pytest.fixture(scope="module")
def burst_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1400, 1600))
    frames = Frames(page.page)
    page.open()
    H.wait_dataset(page.page, HEATMAP, {"shown": "0:0"}, timeout=60)
    yield page, frames
    page.close()


def test_a_burst_of_selection_changes_settles_fast_with_bounded_bytes(burst_page):
    p, frames = burst_page
    page = p.page
    p.kernel_exec("import json")
    # A different state first: the page shows 0:0; the burst ends on another head.
    assert page.get_attribute(HEATMAP, "data-shown") == "0:0"
    page.wait_for_timeout(500)
    frames.total, frames.on = 0, True
    layer, head, loop_s = json.loads(p.kernel_exec(LOOP, timeout=300))
    t_end = time.monotonic()
    assert (layer, head) != (0, 0)
    want = f"{layer}:{head}"
    H.wait_dataset(page, HEATMAP, {"shown": want}, timeout=10)
    settle_s = time.monotonic() - t_end
    page.wait_for_timeout(1500)  # anything still on its way counts too
    frames.on = False
    # Page and kernel agree, and stay so.
    assert page.get_attribute(HEATMAP, "data-shown") == want
    assert p.kernel_exec("print(heatmap.layer, heatmap.head)").strip() == f"{layer} {head}"
    print(f"burst: {N_CHANGES} changes in {loop_s:.2f} s, settled {settle_s:.2f} s after, {frames.total} bytes")
    assert settle_s < 5, f"the page took {settle_s:.1f} s to show the kernel's selection"
    assert frames.total < BYTES_BOUND, f"{frames.total} bytes for {N_CHANGES} changes (bound {BYTES_BOUND})"
    # The map drawn is the kernel's map for that head (not a stale one).
    drawn = page.eval_on_selector(HEATMAP, "e => e.dataset.shown")
    assert drawn == want
    assert not H.our_errors(p.log), H.our_errors(p.log)
