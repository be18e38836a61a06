"""The quickstart as a person sees it: run it in JupyterLab / Notebook 7, click the panels,
and check that the other panel and the kernel follow (and the other way round)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from . import harness as H
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

SEL_JSON = "import json; print(json.dumps([matrix.selection, heatmap.selection]))"


def _reset(qs, layer=2, head=7, token=3):
    """Known starting selection, set from Python, and wait until both views show it."""
    qs.kernel_exec(f"heatmap.select(layer={layer}, head={head}, token={token})")
    H.wait_dataset(qs.page, HEATMAP, {"shown": f"{layer}:{head}", "token": token})
    H.wait_dataset(qs.page, MATRIX, {"layer": layer, "head": head})


def _kernel_strip(qs) -> list[float]:
    return json.loads(qs.kernel_exec("import json; print(json.dumps([float(v) for v in heatmap.strip_values()]))"))


def test_panels_draw(quickstart):
    page = quickstart.page
    for sel in (MATRIX, HEATMAP):
        draws = int(page.get_attribute(sel, "data-draws"))
        assert draws >= 1, f"{sel} never drew"
        stats = H.canvas_stats(page, f"{sel} canvas.aw-canvas")
        assert stats and stats["width"] > 50 and stats["height"] > 50, stats
        assert stats["colours"] > 8, f"{sel} canvas looks blank: {stats}"
    n_tokens = int(quickstart.kernel_exec("print(len(trace.tokens))"))
    assert page.locator(f"{HEATMAP} .aw-tok").count() == n_tokens
    # The notebook ended on layer 2, head 7, token 3.
    H.wait_dataset(page, HEATMAP, {"shown": "2:7", "token": "3", "direction": "from"})
    H.wait_dataset(page, MATRIX, {"layer": "2", "head": "7"})


def test_click_head_moves_heatmap_and_kernel(quickstart):
    qs = quickstart
    _reset(qs)
    x, y = H.matrix_cell_point(qs.page, layer=4, head=5)
    qs.page.mouse.click(x, y)
    H.wait_dataset(qs.page, MATRIX, {"layer": "4", "head": "5"})
    # The heatmap only learns of the click through the kernel (link) and then fetches the map.
    H.wait_dataset(qs.page, HEATMAP, {"shown": "4:5", "token": "3"})
    got = json.loads(qs.kernel_exec(SEL_JSON))
    assert got == [{"layer": 4, "head": 5, "token": 3}] * 2
    # What the strip shows is the kernel's strip (float16 on the wire, 4 decimals in the DOM).
    assert np.allclose(H.strip_values(qs.page), _kernel_strip(qs), atol=2e-3)


def test_click_token_changes_strip_and_kernel(quickstart):
    qs = quickstart
    _reset(qs)
    before = H.strip_values(qs.page)
    assert None not in before
    qs.page.locator(f'{HEATMAP} .aw-tok[data-index="6"]').click()
    H.wait_dataset(qs.page, HEATMAP, {"token": "6", "shown": "2:7"})
    after = H.strip_values(qs.page)
    assert after != before, "strip colours did not change after selecting another token"
    assert qs.page.locator(f'{HEATMAP} .aw-tok.aw-selected').get_attribute("data-index") == "6"
    expected = json.dumps([{"layer": 2, "head": 7, "token": 6}] * 2)
    assert qs.wait_kernel(SEL_JSON, expected) == expected
    assert np.allclose(after, _kernel_strip(qs), atol=2e-3)


def test_direction_button(quickstart):
    qs = quickstart
    _reset(qs, token=4)
    qs.page.locator(f"{HEATMAP} button.aw-dir-to").click()
    H.wait_dataset(qs.page, HEATMAP, {"direction": "to"})
    assert qs.wait_kernel("print(heatmap.direction)", "to") == "to"
    assert np.allclose(H.strip_values(qs.page), _kernel_strip(qs), atol=2e-3)
    qs.kernel_exec("heatmap.direction = 'from'")
    H.wait_dataset(qs.page, HEATMAP, {"direction": "from"})


def test_python_selection_moves_views(quickstart):
    qs = quickstart
    _reset(qs)
    qs.kernel_exec("heatmap.select(layer=1, head=3, token=2)")
    H.wait_dataset(qs.page, HEATMAP, {"shown": "1:3", "token": "2"})
    H.wait_dataset(qs.page, MATRIX, {"layer": "1", "head": "3"})
    qs.kernel_exec("matrix.select(layer=5, head=11)")
    H.wait_dataset(qs.page, HEATMAP, {"shown": "5:11", "token": "2"})
    H.wait_dataset(qs.page, MATRIX, {"layer": "5", "head": "11"})
    qs.kernel_exec("heatmap.head = 'mean'")
    H.wait_dataset(qs.page, HEATMAP, {"shown": "5:mean"})
    H.wait_dataset(qs.page, MATRIX, {"layer": "5", "head": "mean"})
    assert np.allclose(H.strip_values(qs.page), _kernel_strip(qs), atol=2e-3)


def test_no_console_errors_from_our_modules(quickstart):
    ours = H.our_errors(quickstart.log)
    assert not ours, "console errors from attn_widgets:\n" + "\n".join(e["text"] for e in ours)
