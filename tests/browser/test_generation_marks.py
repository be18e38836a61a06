"""Prompt and generated tokens in JupyterLab: an Explorer on a ``trace_generate`` trace draws
the prompt | answer boundary on the heatmap (map lines, styled labels), its sentence strip (a
marker before the first generated token, answer chips underlined), the flow rows (a line
between the prompt and answer rows, answer rows in the generation colour) and the matrix
(ticks), each with its legend entry; zooming into the answer moves the boundary; a plain
trace's panel shows none of it. Both sides are read: the kernel's ``prompt_length`` and what
the page draws (data-* geometry, canvas pixels, the DOM)."""

from __future__ import annotations

import json

import nbformat
import pytest

from attn_widgets.render.generation import GENERATION

from . import harness as H

pytestmark = pytest.mark.browser

EX = ".aw-explorer"
HEAT = f"{EX} .aw-panel.aw-heatmap"
FLOW = f"{EX} .aw-panel.aw-flow"
MATRIX = f"{EX} .aw-panel.aw-matrix"
PLAIN = ".aw-plain .aw-panel.aw-heatmap"
SOURCE = """import attn_widgets as aw
model, tokenizer = aw.tiny_gpt2(n_layer=2, n_head=4, n_embd=32)
gen = aw.trace_generate(model, tokenizer, "the cat sat on the mat because", max_new_tokens=6, do_sample=False)
explorer = aw.Explorer(gen)
explorer.flow.rows = "all"
explorer.select(layer=1, head=0, token=gen.n_tokens - 1)
print(gen.prompt_length, gen.n_tokens)
explorer"""
PLAIN_SOURCE = """plain = aw.AttentionHeatmap(aw.trace(model, tokenizer, "the cat sat on the mat"), token=2)
plain.add_class("aw-plain")
plain"""

# Is there a pixel of (about) `rgb` within `r` CSS px of (x, y) on the canvas?
NEAR = """([sel, x, y, r, rgb]) => {
  const c = document.querySelector(sel);
  const k = c.width / c.getBoundingClientRect().width;
  const x0 = Math.max(0, Math.floor((x - r) * k)), y0 = Math.max(0, Math.floor((y - r) * k));
  const w = Math.ceil(2 * r * k) + 1, h = Math.ceil(2 * r * k) + 1;
  const d = c.getContext("2d").getImageData(x0, y0, w, h).data;
  for (let i = 0; i < d.length; i += 4)
    if (Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 90) return true;
  return false;
}"""


def _rgb(hex_colour: str) -> list[int]:
    h = hex_colour.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


@pytest.fixture(scope="module")
def gen_page(browser, jupyter_server):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE), nbformat.v4.new_code_cell(PLAIN_SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / "aw_generation_marks.ipynb")
    p = H.NotebookPage(browser, jupyter_server, "aw_generation_marks.ipynb", viewport=(1500, 1600)).open(run=False)
    H.run_all(p.page)
    H.wait_executed(p.page, 180)
    for sel in (HEAT, FLOW, MATRIX, PLAIN):
        p.page.wait_for_function(
            "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=sel, timeout=90000
        )
    yield p
    p.close()


def _sizes(p) -> tuple[int, int]:
    got = json.loads(p.kernel_exec(
        "import json; print(json.dumps([explorer.heatmap.prompt_length, explorer.flow.prompt_length, "
        "explorer.matrix.prompt_length, gen.prompt_length, gen.n_tokens]))"))
    assert got[0] == got[1] == got[2] == got[3] > 0, got
    return got[3], got[4]


def test_heatmap_map_and_strip_mark_the_answer(gen_page):
    p, page = gen_page, gen_page.page
    P, T = _sizes(p)
    p.kernel_exec("explorer.heatmap.zoom = []")
    H.wait_dataset(page, HEAT, {"promptLength": P, "zoom": f"0:{T}:0:{T}", "token": T - 1})
    canvas = page.locator(f"{HEAT} canvas.aw-canvas").first
    d = canvas.evaluate("c => ({...c.dataset})")
    assert d["boundaryRow"] == str(P) and d["boundaryCol"] == str(P)
    left, top, w, h = (float(d[k]) for k in ("left", "top", "width", "height"))
    colour = _rgb(GENERATION["light"])
    sel = f"{HEAT} canvas.aw-canvas"
    # The line between rows P - 1 and P (and columns): generation-coloured pixels right there,
    # none half a row away (inside a cell).
    assert page.evaluate(NEAR, [sel, left + w * 0.25, top + P * h / T, 1.5, colour])
    assert page.evaluate(NEAR, [sel, left + P * w / T, top + h * 0.8, 1.5, colour])
    assert not page.evaluate(NEAR, [sel, left + w * 0.25, top + (P - 0.5) * h / T, 1.5, colour])
    # The strip: one marker, right before token P; the answer chips (only they) styled.
    strip = page.evaluate(f"""() => {{
      const box = document.querySelector('{HEAT} div.aw-strip[role="listbox"]');
      const marks = box.querySelectorAll(".aw-gen-boundary");
      return {{marks: marks.length, next: marks[0] && marks[0].nextElementSibling.dataset.index,
        text: marks[0] && marks[0].textContent,
        generated: [...box.querySelectorAll(".aw-tok.aw-generated")].map((s) => +s.dataset.index),
        shadow: [...box.querySelectorAll(".aw-tok")].map((s) => getComputedStyle(s).boxShadow)}};
    }}""")
    assert strip["marks"] == 1 and strip["next"] == str(P) and strip["text"] == GENERATION["labels"][1]
    assert strip["generated"] == list(range(P, T))
    assert all("none" != s and s for s in strip["shadow"][P:]) and all(s == "none" for s in strip["shadow"][:P])
    legend = page.locator(f"{HEAT} .aw-gen-legend")
    assert legend.count() == 1 and legend.is_visible() and f"tokens {P}\u2013{T - 1} generated" in legend.inner_text()


def test_zooming_into_the_answer_moves_the_boundary(gen_page):
    p, page = gen_page, gen_page.page
    P, T = _sizes(p)
    H.wait_dataset(page, f"{HEAT} canvas.aw-canvas", {"boundaryRow": P, "boundaryCol": P})
    p.kernel_exec(f"explorer.heatmap.zoom = [{P}, {T}, 0, {T}]")  # answer rows x every key
    H.wait_dataset(page, HEAT, {"zoom": f"{P}:{T}:0:{T}"})
    H.wait_dataset(page, f"{HEAT} canvas.aw-canvas", {"boundaryRow": "", "boundaryCol": P})
    p.kernel_exec("explorer.heatmap.zoom = []")
    H.wait_dataset(page, f"{HEAT} canvas.aw-canvas", {"boundaryRow": P, "boundaryCol": P})


def test_flow_rows_mark_the_answer(gen_page):
    p, page = gen_page, gen_page.page
    P, T = _sizes(p)
    H.wait_dataset(page, FLOW, {"promptLength": P})
    assert p.wait_kernel("print(explorer.flow.rows, explorer.flow.status)", "all ready", timeout=60) == "all ready"
    canvas = page.locator(f"{FLOW} canvas.aw-canvas").first
    page.wait_for_function("(c) => c.dataset.generatedRows !== undefined", arg=canvas.element_handle())
    d = canvas.evaluate("c => ({...c.dataset, rowY: JSON.parse(c.dataset.rowY)})")
    row_y = {int(k): v for k, v in d["rowY"].items()}
    yb = float(d["boundaryY"])
    assert row_y[P - 1] < yb < row_y[P], (row_y, yb)
    assert int(d["generatedRows"]) == sum(1 for i in row_y if i >= P) == T - P
    colour = _rgb(GENERATION["light"])
    sel = f"{FLOW} canvas.aw-canvas"
    x = float(d["left"]) + 0.5 * float(d["colW"])
    assert page.evaluate(NEAR, [sel, x, yb, 1.5, colour])
    assert not page.evaluate(NEAR, [sel, x, row_y[P - 1], 1.5, colour])
    legend = page.locator(f"{FLOW} .aw-gen-legend")
    assert legend.count() == 1 and "generated" in legend.inner_text()
    # The flow's strip of the selected token: the same marker before token P.
    nxt = page.evaluate(f"""() => {{ const m = document.querySelectorAll("{FLOW} .aw-flow-strip .aw-gen-boundary");
      return [m.length, m[0] && m[0].nextElementSibling.dataset.index]; }}""")
    assert nxt == [1, str(P)]


def test_matrix_ticks_and_a_plain_trace_without_marks(gen_page):
    p, page = gen_page, gen_page.page
    P, T = _sizes(p)
    H.wait_dataset(page, MATRIX, {"promptLength": P})
    tick = page.get_attribute(MATRIX, "data-boundary-tick")
    cell = float(page.locator(f"{MATRIX} canvas.aw-canvas").first.get_attribute("data-cell"))
    assert tick and abs(float(tick) - cell * P / T) < 1e-6
    assert page.locator(f"{MATRIX} .aw-gen-legend").count() == 1
    # Not a generation: no fact, nothing drawn, no legend entry.
    assert p.kernel_exec("print(plain.prompt_length)").strip() == "0"
    H.wait_dataset(page, PLAIN, {"promptLength": 0})
    assert page.locator(f"{PLAIN} .aw-gen-legend, {PLAIN} .aw-gen-boundary, {PLAIN} .aw-generated").count() == 0
    assert page.get_attribute(f"{PLAIN} canvas.aw-canvas", "data-boundary-row") == ""
