"""The Flow panel's route graph in JupyterLab: the method switch changes the drawn edge
set, the keep slider changes the number of drawn edges monotonically, the panel has a
legend, a 512-token Explorer labels at most ~40 flow rows, and a click on a token row
traces that token in the kernel too. Each test starts from a state its action changes."""

from __future__ import annotations

import itertools
import json

import nbformat
import pytest

from . import harness as H

pytestmark = pytest.mark.browser

FLOW = ".aw-panel.aw-flow"
SHORT = """import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
flow = aw.AttentionFlow(trace, method="rollout", keep=0.7)
flow"""
LONG_TEXT = " ".join(["The committee reviewed the proposal, noting that the budget was large but the plan was sound."] * 30)
LONG = f"""import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, {LONG_TEXT!r}, max_length=512)
explorer = aw.Explorer(trace)
print(trace.n_tokens)
explorer"""


def _open(browser, server, name, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, server.root / name)
    page = H.NotebookPage(browser, server, name, viewport=(1500, 1400)).open(run=False)
    H.run_all(page.page)
    H.wait_executed(page.page, 180)
    page.page.wait_for_function(
        "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=FLOW, timeout=90000
    )
    return page


@pytest.fixture(scope="module")
def short_page(browser, jupyter_server):
    page = _open(browser, jupyter_server, "aw_flow_route_short.ipynb", SHORT)
    yield page
    page.close()


def _kernel(p, expr: str):
    return json.loads(p.kernel_exec(f"import json; print(json.dumps({expr}))"))


def _edges(page) -> int:
    return int(page.get_attribute(FLOW, "data-edges"))


def test_method_switch_changes_the_drawn_edge_set(short_page):
    p, page = short_page, short_page.page
    H.wait_dataset(page, FLOW, {"method": "rollout"})
    sig = page.get_attribute(FLOW, "data-edge-sig")
    seen = {"rollout": sig}
    for m in ("attention", "grad_rollout", "flow"):
        page.select_option(f"{FLOW} select.aw-method", m)
        H.wait_dataset(page, FLOW, {"method": m}, timeout=60)
        seen[m] = page.get_attribute(FLOW, "data-edge-sig")
        assert p.wait_kernel("print(flow.method, flow.status != 'computing')", f"{m} True", timeout=60)
        assert _edges(page) == _kernel(p, "flow.drawn_edges")
    assert len(set(seen.values())) == len(seen), seen  # every method draws its own route
    page.select_option(f"{FLOW} select.aw-method", "rollout")
    H.wait_dataset(page, FLOW, {"method": "rollout", "edgeSig": sig})


def test_keep_slider_changes_drawn_edges_monotonically(short_page):
    p, page = short_page, short_page.page
    H.wait_dataset(page, FLOW, {"keep": "0.7", "method": "rollout"})
    counts = {0.7: _edges(page)}
    for keep in ("0.85", "1", "0.6", "0.5"):
        page.locator(f"{FLOW} input.aw-keep").fill(keep)
        H.wait_dataset(page, FLOW, {"keep": keep})
        counts[float(keep)] = _edges(page)
        assert _kernel(p, "[flow.keep, flow.drawn_edges]") == [float(keep), counts[float(keep)]]
    ordered = [counts[k] for k in sorted(counts)]
    assert ordered == sorted(ordered) and ordered[0] < ordered[-1], counts
    page.locator(f"{FLOW} input.aw-keep").fill("0.7")
    H.wait_dataset(page, FLOW, {"keep": "0.7"})


def test_flow_panel_has_a_legend(short_page):
    page = short_page.page
    legend = page.locator(f"{FLOW} .aw-legend")
    assert legend.count() == 1 and legend.is_visible()
    text = legend.inner_text()
    assert "width = share of its output" in text and "carry" in text and "%" in text
    assert not page.locator(f"{FLOW} .aw-flow-capped").inner_text().strip()  # 13 tokens: no cap


def test_click_a_token_row_traces_it_and_the_kernel_follows(short_page):
    p, page = short_page, short_page.page
    p.kernel_exec("flow.token = None")
    H.wait_dataset(page, FLOW, {"token": ""})
    default = page.get_attribute(FLOW, "data-route-token")
    assert default == str(_kernel(p, "flow.route_token"))
    target = 4 if default != "4" else 5
    canvas = page.locator(f"{FLOW} canvas.aw-canvas").first
    d = canvas.evaluate("c => ({left: +c.dataset.left, colW: +c.dataset.colW, rowY: JSON.parse(c.dataset.rowY)})")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + d["left"] + 3 * d["colW"], box["y"] + d["rowY"][str(target)])
    H.wait_dataset(page, FLOW, {"token": str(target), "routeToken": str(target), "scoresFor": str(target)})
    assert p.wait_kernel("print(flow.token, flow.route_token, flow.graphs[0]['token'])", f"{target} {target} {target}")


def test_512_token_explorer_labels_at_most_40_flow_rows(browser, jupyter_server):
    p = _open(browser, jupyter_server, "aw_flow_route_long.ipynb", LONG)
    page = p.page
    try:
        assert p.wait_kernel("print(trace.n_tokens)", "512", timeout=60)
        H.wait_dataset(page, FLOW, {"routeToken": str(_kernel(p, "explorer.flow.route_token"))})
        rows, gaps = int(page.get_attribute(FLOW, "data-rows")), int(page.get_attribute(FLOW, "data-gaps"))
        assert 2 <= rows <= 40 and gaps >= 1, (rows, gaps)
        # Labelled rows are at least 10 px apart (click targets) and never overlap.
        ys = sorted(json.loads(page.get_attribute(f"{FLOW} canvas.aw-canvas", "data-row-y")).values())
        assert len(ys) == rows and min(b - a for a, b in itertools.pairwise(ys)) >= 10
        # The flow panel's canvas fits on a screen (no 512-row wall).
        assert page.locator(f"{FLOW} canvas.aw-canvas").bounding_box()["height"] < 1000
        # rows="all" shows every token, scrolling inside the panel.
        page.select_option(f"{FLOW} select.aw-rows", "all")
        H.wait_dataset(page, FLOW, {"rows": "512"})
        box = page.locator(f"{FLOW} .aw-flow-scroll").first.bounding_box()
        assert box["height"] <= 660
        assert p.wait_kernel("print(explorer.flow.rows)", "all")
    finally:
        p.close()
