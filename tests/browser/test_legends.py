"""Legends and colour scales in JupyterLab (the demo model): every panel of the Explorer
that draws colours has an ``.aw-legend`` that says something; ``norm`` set from Python
repaints the heatmap canvas (different pixels) and its legend; the panel's own select
sets the trait in the kernel."""

from __future__ import annotations

import re

import nbformat
import pytest

from . import harness as H
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

NB = "aw_legends_browser_test.ipynb"
SOURCE = """import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
explorer = aw.Explorer(trace)
explorer.select(layer=2, head=7, token=3)
explorer"""
SUMMARY = ".aw-head-summary"
# The panels this branch owns; the Flow panel's legend (js/lib/legend.js too) joins this list
# with the Flow rebuild.
PANELS = [MATRIX, HEATMAP, SUMMARY]

PIXELS = """(sel) => { const c = document.querySelector(sel + ' canvas.aw-canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0; for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
  return h; }"""
LEGEND_TEXT = "(sel) => Array.from(document.querySelectorAll(sel + ' .aw-legend')).map(e => e.textContent.trim())"


@pytest.fixture(scope="module")
def legends_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1500, 1400)).open()
    page.page.wait_for_function(
        "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=HEATMAP, timeout=60000
    )
    yield page
    page.close()


def test_every_panel_has_a_legend_with_text(legends_page):
    page = legends_page.page
    for sel in PANELS:
        page.wait_for_function(
            "(s) => Array.from(document.querySelectorAll(s + ' .aw-legend')).some(e => e.textContent.trim().length > 10)",
            arg=sel, timeout=30000,
        )
    heat = page.evaluate(LEGEND_TEXT, HEATMAP)
    assert any("sqrt scale" in t for t in heat), heat  # the default normalisation is said
    assert any(re.search(r"\)0(\d?\.\d+)+$", t) for t in heat), heat  # and the range: ticks 0 .. max
    assert any("shared per layer" in t for t in page.evaluate(LEGEND_TEXT, MATRIX))
    assert any("entropy" in t for t in page.evaluate(LEGEND_TEXT, SUMMARY))


def test_norm_from_python_repaints_the_heatmap(legends_page):
    p, page = legends_page, legends_page.page
    H.wait_dataset(page, HEATMAP, {"norm": "sqrt"})
    before = page.evaluate(PIXELS, HEATMAP)
    p.kernel_exec("explorer.heatmap.norm = 'linear'")
    H.wait_dataset(page, HEATMAP, {"norm": "linear"})
    after = page.evaluate(PIXELS, HEATMAP)
    assert after != before
    assert any("linear scale" in t for t in page.evaluate(LEGEND_TEXT, HEATMAP))
    # the panel's select drives the kernel
    page.select_option(f"{HEATMAP} select.aw-norm", "log")
    p.wait_kernel("print(explorer.heatmap.norm)", "log")
    H.wait_dataset(page, HEATMAP, {"norm": "log"})
    assert page.evaluate(PIXELS, HEATMAP) not in (before, after)


def test_matrix_scale_from_python_changes_the_legend_and_cells(legends_page):
    p, page = legends_page, legends_page.page
    before = page.evaluate(PIXELS, MATRIX)
    p.kernel_exec("explorer.matrix.scale = 'head'")
    page.wait_for_function(
        "(s) => Array.from(document.querySelectorAll(s + ' .aw-legend')).some(e => e.textContent.includes('each head to its own max'))",
        arg=MATRIX, timeout=30000,
    )
    assert page.evaluate(PIXELS, MATRIX) != before


def test_matrix_cap_from_python_repaints_and_the_legend_says_it(legends_page):
    p, page = legends_page, legends_page.page
    has = "(a) => Array.from(document.querySelectorAll(a[0] + ' .aw-legend')).some(e => e.textContent.includes(a[1]))"
    page.wait_for_function(has, arg=[MATRIX, "capped at p99.5 (above: darkest)"], timeout=30000)  # the default
    before = page.evaluate(PIXELS, MATRIX)
    p.kernel_exec("explorer.matrix.cap = 100")
    page.wait_for_function(f"(a) => !({has})(a)", arg=[MATRIX, "capped at"], timeout=30000)
    page.wait_for_function("(a) => a[1] !== (" + PIXELS + ")(a[0])", arg=[MATRIX, before], timeout=30000)
    p.kernel_exec("explorer.matrix.cap = 90")
    page.wait_for_function(has, arg=[MATRIX, "capped at p90 (above: darkest)"], timeout=30000)
    assert page.evaluate(PIXELS, MATRIX) != before
