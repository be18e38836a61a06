"""The panels' PNG and SVG buttons in a real browser: a notebook with Matrix, Heatmap and
Flow (PNG from the canvas, SVG from the kernel's ``to_svg()``), and an exported HTML page
(no kernel: PNG works, SVG says why it cannot)."""

from __future__ import annotations

import pathlib
import struct
import xml.etree.ElementTree as ET

import nbformat
import numpy as np
import pytest

import attn_widgets as aw

from . import harness as H
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

FLOW = ".aw-panel.aw-flow"
NB = "aw_image_export_browser_test.ipynb"
TOKENS = ["The", "cat", "sat", "on", "the", "warm", "mat"]
SETUP = f"""import numpy as np
import attn_widgets as aw
rng = np.random.default_rng(0)
a = rng.random((3, 4, {len(TOKENS)}, {len(TOKENS)})).astype("float32") + 0.01
a /= a.sum(-1, keepdims=True)
trace = aw.AttentionTrace.from_tensors(a, {TOKENS!r})
m = aw.AttentionMatrix(trace, layer=1, head=2)
hm = aw.AttentionHeatmap(trace, layer=1, head=2, token=2)
fl = aw.AttentionFlow(trace, method="rollout", keep=0.9, token=3)"""
SVG = "{http://www.w3.org/2000/svg}"
PANELS = [(MATRIX, "matrix"), (HEATMAP, "heatmap"), (FLOW, "flow")]


def _trace() -> aw.AttentionTrace:
    rng = np.random.default_rng(0)
    a = rng.random((3, 4, len(TOKENS), len(TOKENS))).astype("float32") + 0.01
    a /= a.sum(-1, keepdims=True)
    return aw.AttentionTrace.from_tensors(a, TOKENS)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _canvas_css(page, sel: str) -> list[tuple[float, float, int, int]]:
    """CSS size and backing size of each canvas of a panel that is drawn and shown."""
    return [
        tuple(x)
        for x in page.eval_on_selector_all(
            f"{sel} canvas.aw-canvas",
            """cs => cs.filter(c => c.getClientRects().length && c.style.width)
                       .map(c => [parseFloat(c.style.width), parseFloat(c.style.height), c.width, c.height])""",
        )
    ]


def _download(page, button: str) -> tuple[str, bytes]:
    with page.expect_download(timeout=30000) as info:
        page.click(button)
    dl = info.value
    return dl.suggested_filename, pathlib.Path(dl.path()).read_bytes()


def _check_png(page, sel: str, kind: str, name: str, data: bytes) -> None:
    assert name.endswith(".png") and f"-{kind}" in name, name
    w, h = _png_size(data)
    H.wait_dataset(page, sel, {"exported": f"png:{len(data)}", "exportedSize": f"{w}x{h}"})
    canvases = _canvas_css(page, sel)
    ratio = page.evaluate("() => window.devicePixelRatio")
    # At least 2x the on-screen CSS size, labels included; two flow graphs side by side (12 px
    # apart) under an 18 px caption band. The canvases themselves are back at screen ratio.
    scale = max(2, ratio)
    if len(canvases) == 1:
        (cw, ch, _bw, _bh), = canvases
        assert (w, h) == (round(cw * scale), round(ch * scale)), (w, h, canvases)
    else:
        assert kind == "flow", canvases
        want_w = sum(round(c[0] * scale) for c in canvases) + (len(canvases) - 1) * round(12 * scale)
        want_h = round(18 * scale) + max(round(c[1] * scale) for c in canvases)
        assert (w, h) == (want_w, want_h), (w, h, canvases)
    for cw, ch, bw, bh in canvases:
        assert (bw, bh) == (round(cw * ratio), round(ch * ratio))


def _check_svg(sel: str, kind: str, name: str, data: bytes, page) -> None:
    assert name.endswith(".svg") and f"-{kind}" in name, name
    H.wait_dataset(page, sel, {"exported": f"svg:{len(data)}"})
    root = ET.fromstring(data.decode("utf-8"))
    assert root.tag == SVG + "svg"
    texts = {e.text for e in root.iter(SVG + "text")}
    if kind == "matrix":
        assert {"L0", "L1", "L2"} <= texts, texts
    else:
        assert set(TOKENS) <= texts, texts


@pytest.fixture(scope="module")
def export_page(browser, jupyter_server):
    cells = [nbformat.v4.new_code_cell(SETUP)] + [nbformat.v4.new_code_cell(v) for v in ("m", "hm", "fl")]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, jupyter_server.root / NB)
    page = H.NotebookPage(browser, jupyter_server, NB, viewport=(1400, 1400)).open()
    page.page.wait_for_function(
        "(s) => Number((document.querySelector(s) || {dataset: {}}).dataset.draws || 0) >= 1", arg=FLOW, timeout=60000
    )
    yield page
    page.close()


def test_png_and_svg_buttons_download_each_panel(export_page):
    page = export_page.page
    for sel, kind in PANELS:
        name, data = _download(page, f"{sel} button.aw-export-png")
        _check_png(page, sel, kind, name, data)
        name, data = _download(page, f"{sel} button.aw-export-svg")
        _check_svg(sel, kind, name, data, page)
        assert not page.eval_on_selector(sel, "e => e.dataset.exportError || ''")
    # The SVG is the kernel's figure for the current selection.
    got = export_page.kernel_exec("print(len(hm.to_svg().encode()))").strip()
    assert page.eval_on_selector(HEATMAP, "e => e.dataset.exported") == f"svg:{got}"
    assert not H.our_errors(export_page.log), export_page.log.dump()


def test_exported_page_png_works_svg_explains(browser, tmp_path):
    tr = _trace()
    other = aw.AttentionTrace.from_tensors(np.asarray(tr.attentions)[:, ::-1].copy(), TOKENS)
    path = aw.save_html(
        tmp_path / "panels.html",
        aw.AttentionMatrix(tr),
        aw.AttentionHeatmap(tr, token=1),
        aw.AttentionFlow(tr, compare=other, method="rollout", keep=0.9),  # two graphs: one PNG
    )
    ctx = browser.new_context(viewport={"width": 1280, "height": 1400}, accept_downloads=True)
    try:
        page = ctx.new_page()
        log = H.ConsoleLog(page)
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-aw-ready='1']", timeout=20000)
        for sel, kind in PANELS:
            name, data = _download(page, f"{sel} button.aw-export-png")
            _check_png(page, sel, kind, name, data)
            if kind == "flow":
                assert len(_canvas_css(page, sel)) == 2
            svg = page.locator(f"{sel} button.aw-export-svg")
            assert "aw-export-unavailable" in svg.get_attribute("class")
            assert "kernel" in svg.get_attribute("title")
            svg.click()
            msg = page.locator(f"{sel} .aw-export-msg")
            assert "needs the Python kernel" in msg.inner_text()
            assert "aw-export-failed" in msg.get_attribute("class")
            assert "kernel" in page.eval_on_selector(sel, "e => e.dataset.exportError")
            assert page.eval_on_selector(sel, "e => e.dataset.exported").startswith("png:")
        assert not log.errors(), log.dump()
    finally:
        ctx.close()
