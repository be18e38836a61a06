"""The Explorer in JupyterLab and Notebook 7: click the Flow panel and the bqplot head summary,
move the keep slider, switch to the dark theme; every panel and the kernel follow."""

from __future__ import annotations

import json

import nbformat
import pytest

from . import harness as H
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

FLOW = ".aw-panel.aw-flow"
NB = "aw_explorer_browser_test.ipynb"
SOURCE = """import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
explorer = aw.Explorer(trace, method="rollout", keep=0.9)
explorer.select(layer=2, head=7, token=3)
explorer"""
HOSTILE = ['<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>", "&amp; \u202eevil"]
HOSTILE_CELL = f"""import numpy as np
hostile = aw.AttentionHeatmap(aw.AttentionTrace.from_tensors(np.full((1, 1, 3, 3), 1 / 3, dtype=np.float32), {HOSTILE!r}), token=0)
hostile"""
SEL = "import json; print(json.dumps([explorer.selection, explorer.flow.token, explorer.flow.keep, explorer.flow.drawn_edges]))"


@pytest.fixture(scope="module")
def explorer_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE), nbformat.v4.new_code_cell(HOSTILE_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1500, 1400)).open()
    page.page.wait_for_function(
        "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=FLOW, timeout=60000
    )
    yield page
    page.close()


def _state(p) -> list:
    return json.loads(p.kernel_exec(SEL))


def _flow_point(page, row: int, col: int) -> tuple[float, float]:
    box = page.locator(f"{FLOW} canvas.aw-canvas").first.bounding_box()
    d = page.eval_on_selector(
        f"{FLOW} canvas.aw-canvas",
        "c => ({left: +c.dataset.left, colW: +c.dataset.colW, rowY: JSON.parse(c.dataset.rowY)})",
    )
    return box["x"] + d["left"] + col * d["colW"], box["y"] + d["rowY"][str(row)]


def test_flow_click_traces_token_everywhere(explorer_page):
    p, page = explorer_page, explorer_page.page
    H.wait_dataset(page, FLOW, {"token": "3"})
    x, y = _flow_point(page, row=6, col=6)  # token 6 at the top layer
    page.mouse.click(x, y)
    H.wait_dataset(page, FLOW, {"token": "6", "scoresFor": "6"})
    H.wait_dataset(page, FLOW, {"routeToken": "6"})
    assert int(page.get_attribute(FLOW, "data-edges")) > 0
    H.wait_dataset(page, HEATMAP, {"token": "6"})
    assert p.wait_kernel("print(explorer.token, explorer.heatmap.token, explorer.flow.token)", "6 6 6") == "6 6 6"
    # The strip under the flow shows the kernel's rollout row for that token.
    got = page.eval_on_selector_all(f"{FLOW} .aw-flow-strip .aw-tok", "es => es.map(e => Number(e.dataset.value))")
    want = json.loads(p.kernel_exec("import json; print(json.dumps(trace.rollout()[-1, 6].tolist()))"))
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-3


def test_flow_column_click_sets_layer(explorer_page):
    p, page = explorer_page, explorer_page.page
    box = page.locator(f"{FLOW} canvas.aw-canvas").first.bounding_box()
    d = page.eval_on_selector(f"{FLOW} canvas.aw-canvas", "c => ({left: +c.dataset.left, top: +c.dataset.top, colW: +c.dataset.colW})")
    page.mouse.click(box["x"] + d["left"] + 5 * d["colW"], box["y"] + d["top"] / 2)  # header of column 5 = layer 4
    H.wait_dataset(page, MATRIX, {"layer": "4"})
    assert p.wait_kernel("print(explorer.layer)", "4") == "4"


def test_keep_reduces_drawn_edges(explorer_page):
    p, page = explorer_page, explorer_page.page
    H.wait_dataset(page, FLOW, {"keep": "0.9"})
    before = int(page.get_attribute(FLOW, "data-edges"))
    slider = page.locator(f"{FLOW} input.aw-keep")
    slider.fill("0.5")  # a range input: fill sets the value and fires input + change
    H.wait_dataset(page, FLOW, {"keep": "0.5"})
    after = int(page.get_attribute(FLOW, "data-edges"))
    assert 0 < after < before
    sel, _token, keep, drawn = _state(p)
    assert keep == 0.5 and drawn == after


#: The bqplot rect of a (layer, head) cell: each rect's d3 datum has rowNum / columnNum.
_CELL_JS = """([r, c]) => Array.from(document.querySelectorAll('.aw-head-summary rect.heatmapcell'))
    .findIndex(e => e.__data__ && e.__data__.rowNum === r && e.__data__.columnNum === c)"""
_CELL_STROKE_JS = """([r, c]) => { const e = Array.from(document.querySelectorAll('.aw-head-summary rect.heatmapcell'))
    .find(e => e.__data__ && e.__data__.rowNum === r && e.__data__.columnNum === c);
    return e ? getComputedStyle(e).stroke : null; }"""


def test_head_summary_click_moves_every_panel(explorer_page):
    p, page = explorer_page, explorer_page.page
    cells = page.locator(".aw-head-summary rect.heatmapcell")
    assert cells.count() == 6 * 12
    # A different state first: (2, 7) everywhere, then click the cell of (4, 9).
    p.kernel_exec("explorer.select(layer=2, head=7)")
    H.wait_dataset(page, MATRIX, {"layer": "2", "head": "7"})
    assert p.wait_kernel("print(explorer.summary.mark.selected.tolist())", "[[2, 7]]") == "[[2, 7]]"
    index = page.evaluate(_CELL_JS, [4, 9])
    assert index >= 0, "no bqplot cell for layer 4, head 9"
    cells.nth(index).click()
    assert p.wait_kernel("print(explorer.summary.layer, explorer.summary.head)", "4 9") == "4 9"
    H.wait_dataset(page, MATRIX, {"layer": "4", "head": "9"})
    H.wait_dataset(page, HEATMAP, {"shown": "4:9"})
    sel = _state(p)[0]
    assert (sel["layer"], sel["head"]) == (4, 9)
    assert p.kernel_exec("print(explorer.heatmap.layer, explorer.heatmap.head, explorer.flow.layer)").strip() == "4 9 4"
    # And the other way: a matrix click highlights the summary's cell (bqplot `selected`),
    # in the kernel and on the page (the orange outline moves to the new cell).
    x, y = H.matrix_cell_point(page, layer=3, head=1)
    page.mouse.click(x, y)
    assert p.wait_kernel("print(explorer.summary.mark.selected.tolist())", "[[3, 1]]") == "[[3, 1]]"
    page.wait_for_function(f"(a) => ({_CELL_STROKE_JS})(a) === 'rgb(245, 124, 0)'", arg=[3, 1], timeout=15000)
    assert page.evaluate(_CELL_STROKE_JS, [4, 9]) != "rgb(245, 124, 0)"


def test_dark_theme_changes_panel_background(explorer_page):
    p, page = explorer_page, explorer_page.page
    bg = "(s) => getComputedStyle(document.querySelector(s)).backgroundColor"
    light = page.evaluate(bg, MATRIX)
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function(f"(s) => ({bg})(s) !== {json.dumps(light)}", arg=MATRIX, timeout=20000)
    dark = page.evaluate(bg, MATRIX)
    # The canvas follows too: its corner pixel is the panel background, now dark.
    x, y = H.matrix_cell_point(page, layer=0, head=0)
    page.mouse.click(x, y)  # any redraw picks up the new theme
    px = page.eval_on_selector(
        f"{MATRIX} canvas.aw-canvas", "c => Array.from(c.getContext('2d').getImageData(1, 1, 1, 1).data)"
    )
    try:
        assert light != dark
        assert sum(px[:3]) < 3 * 100, f"canvas background still light: {px}"
    finally:
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    assert not H.our_errors(p.log), H.our_errors(p.log)


def test_hostile_tokens_render_as_text_in_jupyterlab(explorer_page):
    """Token strings are untrusted: in the live notebook they show as text and run nothing."""
    page = explorer_page.page
    strip = page.locator(".aw-panel.aw-heatmap").nth(1).locator(".aw-tok")
    strip.first.wait_for(timeout=30000)
    assert strip.all_text_contents() == HOSTILE
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator(".jp-OutputArea img, .jp-OutputArea script").count() == 0
