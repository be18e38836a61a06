"""The panels in marimo (anywidget's native host): ``marimo run`` on notebooks/quickstart_marimo.py
in headless Chromium; clicks in the matrix, the heatmap's strip and the head summary move every
panel, and the notebook's reactive cell (Python reading ``explorer.selection``) follows.

marimo draws each anywidget inside an open shadow root: Playwright locators pierce it, plain
``document.querySelector`` does not, so this file waits with locators (``expect``).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from . import harness as H
from .conftest import _skip_or_fail, _skip_reason
from .harness import HEATMAP, MATRIX

pytestmark = pytest.mark.browser

FLOW = ".aw-panel.aw-flow"
SUMMARY = ".aw-panel.aw-summary"
SELECTION = "code.aw-selection"
NOTEBOOK = H.NOTEBOOKS / "quickstart_marimo.py"


class MarimoPage:
    """The app's page and console log (``pages`` lets conftest save artifacts on failure)."""

    def __init__(self, page, server: H.MarimoServer) -> None:
        self.page = page
        self.server = server
        self.log = H.ConsoleLog(page)
        self.pages = [self]


@pytest.fixture(scope="module")
def marimo_app(browser):
    reason = _skip_reason()
    try:
        import marimo  # noqa: F401
    except ImportError:
        reason = reason or "marimo is not installed (pip install -e .[test])"
    if reason:
        _skip_or_fail(reason)
    from playwright.sync_api import expect

    server = H.MarimoServer(NOTEBOOK).start()
    context = browser.new_context(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
    app = MarimoPage(context.new_page(), server)
    try:
        app.page.goto(server.url)
        # The notebook starts on layer 0, head 0, token 1: every click below goes elsewhere.
        for sel in (MATRIX, HEATMAP, FLOW, SUMMARY):
            expect(app.page.locator(sel)).to_have_attribute("data-draws", re.compile(r"[1-9]"), timeout=90_000)
        expect(app.page.locator(HEATMAP)).to_have_attribute("data-shown", "0:0", timeout=30_000)
        expect(app.page.locator(SELECTION)).to_have_text(re.compile(r"^selection: layer 0, head 0, token 1 \("))
    except BaseException:
        H.save_artifacts(app.page, app.log, "marimo-open")
        (H.ARTIFACTS / "marimo-server.log").write_text(server.log_tail(20000))
        context.close()
        server.stop()
        raise
    yield app
    context.close()
    server.stop()


def _expect_data(page, selector: str, **want) -> None:
    from playwright.sync_api import expect

    loc = page.locator(selector)
    for k, v in want.items():
        attr = "data-" + re.sub(r"([A-Z])", lambda m: "-" + m.group(1).lower(), k)
        expect(loc).to_have_attribute(attr, str(v), timeout=20_000)


def _expect_python(page, layer=None, head=None, token=None) -> None:
    """The reactive cell re-ran in the kernel and printed this selection (None: any value)."""
    from playwright.sync_api import expect

    def part(v) -> str:
        return r"\d+" if v is None else re.escape(str(v))

    want = rf"^selection: layer {part(layer)}, head {part(head)}, token {part(token)} \("
    expect(page.locator(SELECTION)).to_have_text(re.compile(want), timeout=20_000)


def _data(page, selector: str, name: str) -> str | None:
    return page.locator(selector).get_attribute(f"data-{name}")


def test_panel_styles_reach_into_marimos_shadow_roots(marimo_app):
    """marimo draws each view in a shadow root; the panels' stylesheet must be inside it
    (else tooltips sit in the page flow and pressed buttons look like the others)."""
    page = marimo_app.page
    for sel in (MATRIX, HEATMAP, FLOW, SUMMARY):
        assert page.locator(f"{sel} .aw-tip").evaluate("e => getComputedStyle(e).position") == "absolute", sel
    pressed = page.locator(f'{HEATMAP} button[aria-pressed="true"]').first
    plain = page.locator(f'{HEATMAP} button[aria-pressed="false"]').first
    bg = "e => getComputedStyle(e).backgroundColor"
    assert pressed.evaluate(bg) != plain.evaluate(bg)


def test_svg_export_answers_through_marimo(marimo_app):
    """The SVG button asks the kernel for the figure (a custom message) and downloads it."""
    page = marimo_app.page
    with page.expect_download(timeout=20_000) as download:
        page.locator(f"{FLOW} .aw-export button", has_text="SVG").first.click()
    svg = pathlib.Path(download.value.path()).read_text(encoding="utf-8")
    assert download.value.suggested_filename.endswith(".svg") and svg.lstrip().startswith(("<?xml", "<svg"))
    assert "<path" in svg or "<line" in svg


def test_matrix_head_click_moves_heatmap_summary_and_python(marimo_app):
    page = marimo_app.page
    assert _data(page, HEATMAP, "shown") != "3:7"  # the click must change something
    x, y = H.matrix_cell_point(page, layer=3, head=7)
    page.mouse.click(x, y)
    _expect_data(page, MATRIX, layer=3, head=7)
    _expect_data(page, HEATMAP, shown="3:7")
    _expect_data(page, SUMMARY, layer=3, head=7)
    _expect_python(page, layer=3, head=7)


def test_heatmap_token_click_moves_flow_and_python(marimo_app):
    page = marimo_app.page
    assert _data(page, HEATMAP, "token") != "6"
    page.locator(f'{HEATMAP} .aw-tok[data-index="6"]').click()
    _expect_data(page, HEATMAP, token=6)
    _expect_data(page, FLOW, token=6)
    _expect_python(page, token=6)
    expect_text = page.locator(SELECTION).text_content()
    assert expect_text.endswith("(mat)"), expect_text  # token 6 of the demo sentence


def test_head_summary_click_moves_matrix_and_python(marimo_app):
    page = marimo_app.page
    assert _data(page, MATRIX, "layer") != "1"
    x, y = H.matrix_cell_point(page, layer=1, head=4, root=SUMMARY)
    page.mouse.click(x, y)
    _expect_data(page, SUMMARY, layer=1, head=4)
    _expect_data(page, MATRIX, layer=1, head=4)
    _expect_data(page, HEATMAP, shown="1:4")
    _expect_python(page, layer=1, head=4)
    assert not H.our_errors(marimo_app.log), H.our_errors(marimo_app.log)
