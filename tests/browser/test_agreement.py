"""The methods-agreement table and the heatmap's value-weighted toggle in a real browser:
click a cell / a strip token / the toggle; the page and the kernel both change."""

from __future__ import annotations

import json

import nbformat
import pytest

from . import harness as H
from .harness import HEATMAP

pytestmark = pytest.mark.browser

AGREE = ".aw-panel.aw-agreement"
NB = "aw_agreement_browser_test.ipynb"
SOURCE = """import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.", contributions=True)
explorer = aw.Explorer(trace, method="alti")
explorer.select(layer=2, head=3, token=4)
explorer"""


@pytest.fixture(scope="module")
def agree_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1500, 1600)).open()
    page.page.wait_for_selector(f"{AGREE} td.aw-agree-cell", timeout=60000)
    yield page
    assert H.our_errors(page.log) == [], page.log.dump()
    page.close()


def test_cell_click_shows_both_methods_strips(agree_page):
    p, page = agree_page, agree_page.page
    H.wait_dataset(page, AGREE, {"token": "4", "pair": ""})  # starts with no pair chosen
    assert page.locator(f"{AGREE} .aw-agree-line").count() == 0
    assert page.locator(f"{AGREE} .aw-legend").count() == 1
    n = len(json.loads(p.kernel_exec("import json; print(json.dumps(explorer.agreement.methods))")))
    assert page.locator(f"{AGREE} td.aw-agree-cell").count() == n * n
    # the cell's text is the kernel's correlation
    want = json.loads(p.kernel_exec(
        "import json; print(json.dumps(trace.method_agreement(4)['attention', 'alti']))"))
    cell = page.locator(f'{AGREE} td.aw-agree-cell[data-a="attention"][data-b="alti"]')
    assert abs(float(cell.get_attribute("data-value")) - want) < 1e-5
    cell.click()
    H.wait_dataset(page, AGREE, {"pair": "attention,alti"})
    assert p.wait_kernel("print(explorer.agreement.pair)", "['attention', 'alti']") == "['attention', 'alti']"
    lines = page.eval_on_selector_all(f"{AGREE} .aw-agree-line", "es => es.map(e => e.dataset.method)")
    assert lines == ["attention", "alti"]
    got = page.eval_on_selector_all(
        f'{AGREE} .aw-agree-line[data-method="alti"] .aw-tok', "es => es.map(e => Number(e.dataset.value))")
    ref = json.loads(p.kernel_exec("import json; print(json.dumps(trace.alti()[-1, 4].tolist()))"))
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-5
    # a token in a strip selects it everywhere; the table follows
    page.locator(f'{AGREE} .aw-agree-line[data-method="alti"] .aw-tok[data-index="7"]').click()
    H.wait_dataset(page, AGREE, {"token": "7"})
    assert p.wait_kernel("print(explorer.token, explorer.agreement.table['token'])", "7 7") == "7 7"
    H.wait_dataset(page, HEATMAP, {"token": "7"})


def test_heatmap_value_weighted_toggle(agree_page):
    p, page = agree_page, agree_page.page
    btn = page.locator(f"{HEATMAP} button.aw-weighting")
    assert btn.is_visible() and btn.get_attribute("aria-pressed") == "false"
    tok = int(p.kernel_exec("print(explorer.heatmap.token)"))
    before = H.strip_values(page)
    btn.click()
    assert p.wait_kernel("print(explorer.heatmap.weighting)", "value") == "value"
    page.wait_for_function(f"() => document.querySelector('{HEATMAP} button.aw-weighting').ariaPressed === 'true'")
    ref = json.loads(p.kernel_exec(
        "import json; from attn_widgets.flows.paths import value_weighted_map; "
        f"print(json.dumps(value_weighted_map(trace, None, 2, 3)[{tok}].tolist()))"))
    page.wait_for_function(
        """([root, ref]) => { const v = [...document.querySelectorAll(root + ' .aw-strip .aw-tok')].map(
             (s) => Number(s.dataset.value));
           return v.length === ref.length && v.every((x, i) => Math.abs(x - ref[i]) < 2e-3); }""",
        arg=[HEATMAP, ref], timeout=15000)
    assert max(abs(a - b) for a, b in zip(before, ref)) > 0.05  # it did change
