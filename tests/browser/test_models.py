"""Other model kinds in the browser (JupyterLab and Notebook 7): a T5 cross-attention trace
(decoder queries x source keys, not square) in the matrix and the heatmap, and a ViT trace
whose heatmap shows the image with the selected token's attention over its patches.

Tiny configs with random weights: nothing is downloaded."""

from __future__ import annotations

import json

import nbformat
import pytest

from . import harness as H

pytestmark = pytest.mark.browser

NB = "aw_models_browser_test.ipynb"
CROSS = ".aw-test-cross .aw-panel.aw-heatmap"
CROSS_MATRIX = ".aw-test-cross .aw-panel.aw-matrix"
VIT = ".aw-test-vit .aw-panel.aw-heatmap"

SETUP = """import json
import numpy as np
import torch
import ipywidgets as widgets
import attn_widgets as aw
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration, ViTConfig, ViTForImageClassification
from attn_widgets.capture.demo import _minilm_path

torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(_minilm_path())
t5 = T5ForConditionalGeneration(T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                         num_decoder_layers=2, num_heads=4, decoder_start_token_id=0,
                                         pad_token_id=0, eos_token_id=102)).eval()
s2s = aw.trace_seq2seq(t5, tok, "the cat sat on the mat", target_text="le chat est assis")
cross = s2s.cross
assert cross.n_tokens != cross.n_keys"""
CROSS_CELL = """cmatrix = aw.AttentionMatrix(cross)
cheat = aw.AttentionHeatmap(cross, layer=1, head=2, token=1)
aw.link(cheat, cmatrix)  # the first panel's selection wins
widgets.VBox([cmatrix, cheat]).add_class("aw-test-cross")"""
VIT_CELL = """vit = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64, num_labels=3)).eval()
yy, xx = np.mgrid[0:32, 0:32]
image = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], -1).astype(np.uint8)
pixels = torch.tensor(image / 127.5 - 1, dtype=torch.float32).permute(2, 0, 1)
vt = aw.trace_image(vit, pixels, image=image)
vheat = aw.AttentionHeatmap(vt, token=0)
widgets.VBox([vheat]).add_class("aw-test-vit")"""


@pytest.fixture(scope="module")
def models_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (SETUP, CROSS_CELL, VIT_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1400, 1400)).open()
    for sel in (CROSS, VIT):
        page.page.wait_for_function(
            "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=sel, timeout=60000
        )
    yield page
    page.close()


def _kernel(p, expr: str):
    return json.loads(p.kernel_exec(f"print(json.dumps({expr}))"))


def _map_geometry(page, root: str) -> dict:
    canvas = page.locator(f"{root} canvas.aw-canvas").first
    canvas.scroll_into_view_if_needed()
    return canvas.evaluate(
        """(c) => { const r = c.getBoundingClientRect();
        return {x: r.left, y: r.top, left: +c.dataset.left, top: +c.dataset.top,
                w: +c.dataset.width, h: +c.dataset.height}; }"""
    )


def _strip(page, root: str) -> list:
    return page.evaluate(
        """(root) => [...document.querySelectorAll(root + " .aw-strip:not(.aw-vision-special) .aw-tok")].map(
            (s) => ({text: s.textContent, value: s.dataset.value === undefined ? null : Number(s.dataset.value)}))""",
        root,
    )


def _close(got: list, want: list, tol: float = 2e-3) -> bool:
    return len(got) == len(want) and all(g is not None and abs(g - w) < tol for g, w in zip(got, want))


def test_cross_heatmap_rows_are_queries_columns_keys(models_page):
    p, page = models_page, models_page.page
    nq, nk = _kernel(p, "[cross.n_tokens, cross.n_keys]")
    H.wait_dataset(page, CROSS, {"cross": "1", "keys": str(nk), "token": "1", "direction": "from",
                                 "stripAxis": "keys", "shown": "1:2"})
    # The map keeps square cells: its box is nk wide and nq tall.
    g = _map_geometry(page, CROSS)
    assert abs(g["w"] / nk - g["h"] / nq) < 1e-6 or min(g["w"], g["h"]) == 48, g
    # "from": the strip lists the KEY (source) tokens, coloured by query 1's row.
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s + ' .aw-strip .aw-tok')].every((e) => e.dataset.value !== undefined)",
        arg=CROSS, timeout=20000,
    )
    strip = _strip(page, CROSS)
    assert [s["text"] for s in strip] == _kernel(p, "list(cross.key_tokens)")
    assert _close([s["value"] for s in strip], _kernel(p, "cheat.strip_values().tolist()"))
    # The matrix shows the non-square thumbnails and says they are cross-attention.
    H.wait_dataset(page, CROSS_MATRIX, {"thumbShape": f"{nq}x{nk}", "layer": "1", "head": "2"})
    assert "cross-attention" in page.locator(f"{CROSS_MATRIX} .aw-note").text_content()
    assert H.canvas_stats(page, f"{CROSS_MATRIX} canvas.aw-canvas")["colours"] > 8


def test_click_a_key_label_shows_its_column_over_the_queries(models_page):
    p, page = models_page, models_page.page
    nq, nk = _kernel(p, "[cross.n_tokens, cross.n_keys]")
    j = nk - 2
    g = _map_geometry(page, CROSS)
    page.mouse.click(g["x"] + g["left"] + (j + 0.5) * g["w"] / nk, g["y"] + g["top"] / 2)  # the column label
    H.wait_dataset(page, CROSS, {"keyToken": str(j), "direction": "to", "stripAxis": "queries", "token": "1"})
    assert p.wait_kernel("print(cheat.key_token, cheat.direction, cheat.token)", f"{j} to 1") == f"{j} to 1"
    # "to": the strip lists the QUERY (decoder) tokens, coloured by key j's column.
    page.wait_for_function(
        "([s, n]) => { const e = [...document.querySelectorAll(s + ' .aw-strip .aw-tok')];"
        " return e.length === n && e.every((x) => x.dataset.value !== undefined); }",
        arg=[CROSS, nq], timeout=20000,
    )
    strip = _strip(page, CROSS)
    assert [s["text"] for s in strip] == _kernel(p, "list(cross.tokens)")
    want = _kernel(p, f"cross.attentions[1, 2, :, {j}].tolist()")
    assert _close([s["value"] for s in strip], want)
    assert _close(want, _kernel(p, "cheat.strip_values().tolist()"), 1e-6)
    # A query's row label: back to "from" with that query.
    page.mouse.click(g["x"] + g["left"] / 2, g["y"] + g["top"] + (nq - 1 + 0.5) * g["h"] / nq)
    H.wait_dataset(page, CROSS, {"token": str(nq - 1), "direction": "from", "stripAxis": "keys"})
    want = f"{nq - 1} from {j}"
    assert p.wait_kernel("print(cheat.token, cheat.direction, cheat.key_token)", want) == want
    # A cell sets both indices and keeps the direction.
    page.mouse.click(g["x"] + g["left"] + 0.5 * g["w"] / nk, g["y"] + g["top"] + 0.5 * g["h"] / nq)
    H.wait_dataset(page, CROSS, {"token": "0", "keyToken": "0", "direction": "from"})
    assert p.wait_kernel("print(cheat.token, cheat.key_token, cheat.direction)", "0 0 from") == "0 0 from"
    # And from Python: the view follows.
    p.kernel_exec("cheat.select(key_token=1); cheat.direction = 'to'")
    H.wait_dataset(page, CROSS, {"keyToken": "1", "direction": "to", "stripAxis": "queries"})


def test_vit_heatmap_overlays_the_image_and_patch_clicks_select(models_page):
    p, page = models_page, models_page.page
    H.wait_dataset(page, VIT, {"patchGrid": "4x4", "overlay": "1", "token": "0"})
    assert page.locator(f"{VIT} .aw-vision-special .aw-tok").all_text_contents() == ["[CLS]"]
    # The token strip is one toggle away.
    assert not page.locator(f"{VIT} .aw-strip:not(.aw-vision-special)").is_visible()
    page.locator(f"{VIT} .aw-strip-toggle").click()
    assert page.locator(f"{VIT} .aw-strip:not(.aw-vision-special)").is_visible()
    vis = page.locator(f"{VIT} canvas.aw-vision-canvas")
    vis.scroll_into_view_if_needed()
    box = vis.bounding_box()
    w, h = float(vis.get_attribute("data-width")), float(vis.get_attribute("data-height"))
    # Click patch (2, 3): token 1 + 2 * 4 + 3 = 12, "p(2,3)".
    page.mouse.click(box["x"] + 3.5 * w / 4, box["y"] + 2.5 * h / 4)
    H.wait_dataset(page, VIT, {"token": "12", "overlay": "1"})
    assert p.wait_kernel("print(vheat.token, vt.tokens[vheat.token])", "12 p(2,3)") == "12 p(2,3)"
    # The overlay's scale is the patches' max of the kernel's strip values.
    vals = _kernel(p, "vheat.strip_values().tolist()")
    H.wait_dataset(page, VIT, {"overlayMax": f"{max(vals[1:]):.4f}"})
    # ... and it is drawn: the strongest patch changes colour when the overlay goes away.
    k = max(range(16), key=lambda i: vals[1 + i])
    r, c = divmod(k, 4)

    def pixel():
        return vis.evaluate(
            """(cv, [fx, fy]) => { const x = Math.floor(fx * cv.width), y = Math.floor(fy * cv.height);
            return Array.from(cv.getContext("2d").getImageData(x, y, 1, 1).data); }""",
            [(c + 0.5) / 4, (r + 0.5) / 4],
        )

    with_overlay = pixel()
    p.kernel_exec("vheat.token = None")
    H.wait_dataset(page, VIT, {"token": "", "overlay": "0"})
    without = pixel()
    # Without a selection the image itself shows: the ramp's colour at that patch's centre.
    image_rgb = [(c * 8 + 4) * 8, (r * 8 + 4) * 8, 128]
    assert sum(abs(a - b) for a, b in zip(without[:3], image_rgb)) < 30, (without, image_rgb)
    assert sum(abs(a - b) for a, b in zip(with_overlay[:3], without[:3])) > 30, (with_overlay, without)
    # A special token's chip selects it.
    page.locator(f"{VIT} .aw-vision-special .aw-tok").first.click()
    H.wait_dataset(page, VIT, {"token": "0"})
    assert p.wait_kernel("print(vheat.token)", "0") == "0"
    assert not [e for e in H.our_errors(p.log)], p.log.dump()
