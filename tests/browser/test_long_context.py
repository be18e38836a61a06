"""Long contexts in the browser: a T = 1024 LazyTrace in JupyterLab / Notebook 7. The matrix
draws a labelled preview and fills in exact thumbnails from the kernel; the heatmap shows a
max-pooled overview, and zooming (drag, buttons, Python) fetches full-resolution tiles."""

from __future__ import annotations

import json

import nbformat
import pytest

from . import harness as H
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

NB = "aw_long_context_browser_test.ipynb"
T = 1024
SOURCE = f"""import attn_widgets as aw
import ipywidgets as widgets
from attn_widgets.widgets import matrix as _matrix
_matrix.SYNC_THUMB_COST = 0  # small model: force the progressive (preview, then exact) path
model, tok = aw.capture.long_context_model("gpt2", n_layer=4, n_head=8, n_embd=64, n_positions={T})
trace = aw.trace_lazy(model, tok, "the cat sat on the mat because it was warm . " * 120, max_length={T})
assert trace.n_tokens == {T}, trace
matrix = aw.AttentionMatrix(trace)
heatmap = aw.AttentionHeatmap(trace, overview_size=256)
aw.link(matrix, heatmap)
heatmap.select(layer=1, head=3, token=700)
widgets.VBox([matrix, heatmap])"""


@pytest.fixture(scope="module")
def long_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1400, 1600)).open()
    yield page
    page.close()


def _geometry(page) -> dict:
    canvas = page.locator(f"{HEATMAP} canvas.aw-canvas").first
    canvas.scroll_into_view_if_needed()
    return canvas.evaluate(
        """(c) => { const r = c.getBoundingClientRect();
        return {x: r.left, y: r.top, left: +c.dataset.left, top: +c.dataset.top, size: +c.dataset.size}; }"""
    )


def _point(g: dict, row: float, col: float, view=(0, T, 0, T)) -> tuple[float, float]:
    r0, r1, c0, c1 = view
    return (
        g["x"] + g["left"] + (col - c0 + 0.5) * g["size"] / (c1 - c0),
        g["y"] + g["top"] + (row - r0 + 0.5) * g["size"] / (r1 - r0),
    )


def test_matrix_preview_then_exact_thumbnails(long_page):
    page = long_page.page
    # Exact thumbnails arrive layer by layer as custom messages; the panel says when all are exact.
    H.wait_dataset(page, MATRIX, {"thumbs": "exact", "pending": "0"}, timeout=60)
    assert long_page.kernel_exec("print(matrix.thumbs_pending, matrix.wait_thumbnails(0))").strip() == "0 True"
    stats = H.canvas_stats(page, f"{MATRIX} canvas.aw-canvas")
    assert stats["colours"] > 8, stats
    assert page.locator(f"{MATRIX} .aw-note").text_content() == ""


def test_heatmap_starts_with_a_labelled_overview(long_page):
    page = long_page.page
    H.wait_dataset(page, HEATMAP, {"shown": "1:3", "zoom": f"0:{T}:0:{T}", "source": "overview", "step": "4"})
    assert "overview" in page.locator(f"{HEATMAP} .aw-note").text_content()
    assert page.locator(f"{HEATMAP} .aw-tok").count() == T
    # The strip is exact (fetched as a 1 x T tile), not read off the pooled overview.
    H.wait_dataset(page, HEATMAP, {"token": "700"})
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s + ' .aw-tok')].every((e) => e.dataset.value !== undefined)",
        arg=HEATMAP,
        timeout=30000,
    )
    kernel = json.loads(long_page.kernel_exec("import json; print(json.dumps([float(v) for v in heatmap.strip_values()]))"))
    got = H.strip_values(page)
    assert max(abs(a - b) for a, b in zip(got, kernel)) < 2e-3


def test_drag_zooms_and_fetches_a_full_resolution_tile(long_page):
    page = long_page.page
    long_page.kernel_exec("heatmap.zoom = []")
    H.wait_dataset(page, HEATMAP, {"zoom": f"0:{T}:0:{T}", "source": "overview"})
    g = _geometry(page)
    x0, y0 = _point(g, 600, 560)
    x1, y1 = _point(g, 663, 719)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    zoom = page.wait_for_function(
        "(s) => { const d = document.querySelector(s).dataset;"
        " return d.source === 'tile' && d.step === '1' && d.zoom !== '0:1024:0:1024' && d.zoom; }",
        arg=HEATMAP,
        timeout=30000,
    ).json_value()
    r0, r1, c0, c1 = (int(v) for v in zoom.split(":"))
    # The rectangle's cells (within a cell of rounding at 1024 tokens on a few hundred px).
    assert abs(r0 - 600) <= 3 and abs(r1 - 664) <= 3 and abs(c0 - 560) <= 3 and abs(c1 - 720) <= 3, zoom
    assert long_page.wait_kernel("print(heatmap.zoom)", str([r0, r1, c0, c1])) == str([r0, r1, c0, c1])
    # A click after the drag still selects a token, in zoomed coordinates.
    g = _geometry(page)
    page.mouse.click(*_point(g, r0 + 5, c0 + 7, (r0, r1, c0, c1)))
    H.wait_dataset(page, HEATMAP, {"token": str(r0 + 5), "zoom": zoom})
    stats = H.canvas_stats(page, f"{HEATMAP} canvas.aw-canvas")
    assert stats["colours"] > 8, stats


def test_buttons_python_and_head_switch_keep_the_zoom(long_page):
    page = long_page.page
    long_page.kernel_exec("heatmap.token = None; heatmap.zoom = [0, 64, 0, 64]")  # zoom steps centre on the view
    H.wait_dataset(page, HEATMAP, {"zoom": "0:64:0:64", "source": "tile", "step": "1"})
    # Switching heads in the matrix keeps the zoom and fetches that head's tile.
    x, y = H.matrix_cell_point(page, layer=2, head=5)
    page.mouse.click(x, y)
    H.wait_dataset(page, HEATMAP, {"shown": "2:5", "zoom": "0:64:0:64", "source": "tile", "step": "1"})
    page.locator(f"{HEATMAP} button.aw-zoom-out").click()
    H.wait_dataset(page, HEATMAP, {"zoom": "0:128:0:128", "step": "1"})
    page.locator(f"{HEATMAP} button.aw-zoom-reset").click()
    H.wait_dataset(page, HEATMAP, {"zoom": f"0:{T}:0:{T}", "source": "overview", "shown": "2:5"})
    assert long_page.wait_kernel("print(heatmap.zoom)", "[]") == "[]"


def test_no_console_errors_from_our_modules(long_page):
    ours = H.our_errors(long_page.log)
    assert not ours, "console errors from attn_widgets:\n" + "\n".join(e["text"] for e in ours)
