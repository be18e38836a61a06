"""The Explorer on a LazyTrace in the browser: a click on a token row of the Flow panel
starts that token's route in the background; the page shows its progress with the previous
route still drawn (dimmed), then draws the new route. The head summary fills when its
background statistics are done. Both jobs are held at a gate in the kernel so the page's
"before" state can be seen; each test starts from a state its action changes."""

from __future__ import annotations

import json

import nbformat
import pytest

from . import harness as H

pytestmark = pytest.mark.browser

FLOW = ".aw-panel.aw-flow"
SUMMARY = ".aw-head-summary"
NB = "aw_lazy_explorer_browser_test.ipynb"
SOURCE = """import threading
import attn_widgets as aw
from attn_widgets.widgets import _lazy
# Gates held by the test: the background jobs wait here until the test opens them.
stats_gate, route_gate = threading.Event(), threading.Event()
route_gate.set()
_stats, _route = _lazy.head_stats, _lazy.route
def _gated_stats(*a, **k):
    stats_gate.wait(120)
    return _stats(*a, **k)
def _gated_route(*a, **k):
    route_gate.wait(120)
    return _route(*a, **k)
_lazy.head_stats, _lazy.route = _gated_stats, _gated_route
model, tok = aw.capture.long_context_model("gpt2", n_layer=3, n_head=4, n_positions=256)
trace = aw.trace_lazy(model, tok, " ".join(["the cat sat on the mat and looked at the dog"] * 5))
explorer = aw.Explorer(trace, method="rollout")
explorer.select(token=5)
explorer"""


@pytest.fixture(scope="module")
def lazy_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1500, 1600)).open()
    page.page.wait_for_function(
        "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=FLOW, timeout=90000
    )
    yield page
    page.close()


def _row_point(page, row: int, col: int) -> tuple[float, float]:
    canvas = page.locator(f"{FLOW} canvas.aw-canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    d = canvas.evaluate("c => ({left: +c.dataset.left, colW: +c.dataset.colW, rowY: JSON.parse(c.dataset.rowY)})")
    return box["x"] + d["left"] + col * d["colW"], box["y"] + d["rowY"][str(row)]


def _cell_fills(page) -> list[str]:
    """The fill of every cell of the bqplot grid (one colour: still blank)."""
    return page.evaluate(
        """(s) => [...document.querySelectorAll(s + ' rect.heatmapcell, ' + s + ' .heatmapcell rect, ' + s + ' g.heatmapcell')]
        .map((r) => getComputedStyle(r).fill)""",
        SUMMARY,
    )


def test_click_a_token_draws_its_lazy_route_after_the_progress(lazy_page):
    p, page = lazy_page, lazy_page.page
    H.wait_dataset(page, FLOW, {"token": "5", "routeToken": "5", "status": "ready", "pending": ""}, timeout=60)
    before = page.get_attribute(FLOW, "data-edge-sig")
    rows = json.loads(page.eval_on_selector(f"{FLOW} canvas.aw-canvas", "c => c.dataset.rowY"))
    target = next(int(r) for r in sorted(rows, key=int, reverse=True) if int(r) != 5)  # a row on 5's route
    p.kernel_exec("route_gate.clear()")
    x, y = _row_point(page, target, 3)
    page.mouse.click(x, y)
    # The job is running: its progress line, the previous route still drawn, dimmed.
    H.wait_dataset(page, FLOW, {"token": str(target), "pending": str(target), "status": "computing",
                                "routeToken": "5", "edgeSig": before})
    assert page.locator(f"{FLOW} .aw-status").text_content() == f"rollout route of token {target}: layer 0/3"
    assert page.eval_on_selector(f"{FLOW} .aw-flow-graphs", "e => getComputedStyle(e).opacity") == "0.4"
    assert p.wait_kernel("print(explorer.flow.status, explorer.flow.job['token'])", f"computing {target}")
    p.kernel_exec("route_gate.set()")
    H.wait_dataset(page, FLOW, {"routeToken": str(target), "status": "ready", "pending": "",
                                "scoresFor": str(target)}, timeout=60)
    assert page.get_attribute(FLOW, "data-edge-sig") != before
    assert page.locator(f"{FLOW} .aw-status").text_content() == ""
    assert page.eval_on_selector(f"{FLOW} .aw-flow-graphs", "e => getComputedStyle(e).opacity") == "1"
    want = f"{target} {target} {target}"
    assert p.wait_kernel("print(explorer.token, explorer.flow.graphs[0]['token'], explorer.heatmap.token)", want) == want
    assert int(page.get_attribute(FLOW, "data-edges")) == int(p.kernel_exec("print(explorer.flow.drawn_edges)"))
    # Exact max-flow is listed but not offered, with the reason.
    opt = page.locator(f"{FLOW} select.aw-method option[value=flow]")
    assert opt.is_disabled() and "unavailable: exact max-flow" in opt.text_content()


def test_summary_fills_when_its_statistics_are_done(lazy_page):
    p, page = lazy_page, lazy_page.page
    status = page.locator(f"{SUMMARY} .aw-summary-status")
    page.wait_for_function("(s) => document.querySelector(s) && document.querySelector(s).textContent.includes("
                           "'head statistics: layer 0/3')", arg=f"{SUMMARY} .aw-summary-status", timeout=60000)
    fills = _cell_fills(page)
    assert len(fills) == 12 and len(set(fills)) == 1, fills  # 3 x 4 cells, blank
    assert p.kernel_exec("print(explorer.summary.computing)").strip() == "True"
    p.kernel_exec("stats_gate.set()")
    page.wait_for_function(
        "(s) => { const c = [...document.querySelectorAll(s + ' rect.heatmapcell, ' + s + ' .heatmapcell rect, ' + s"
        " + ' g.heatmapcell')].map((r) => getComputedStyle(r).fill); return c.length === 12 && new Set(c).size > 3; }",
        arg=SUMMARY,
        timeout=60000,
    )
    assert status.text_content().strip() == ""
    assert p.wait_kernel("print(explorer.summary.computing)", "False") == "False"
    assert "not shown for a LazyTrace" in page.locator(".aw-agreement-note").text_content()
