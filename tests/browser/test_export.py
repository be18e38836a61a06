"""Standalone HTML export, opened in headless Chromium with every network request blocked."""

from __future__ import annotations

import pytest

import attn_widgets as aw

from . import harness as H

pytestmark = pytest.mark.browser

HOSTILE = 'warm <img src=x onerror="window.__pwned=1"> </script><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm):
    model, tok = minilm
    tr = aw.trace(model, tok, "The cat sat on the mat because it was " + HOSTILE)
    # Tokens straight from untrusted text too, not only what the tokenizer makes of it.
    raw = aw.AttentionTrace.from_tensors(tr.attentions, [HOSTILE[: 8 + i] for i in range(tr.n_tokens)])
    ex = aw.Explorer(tr, method="rollout", keep=0.8)
    path = ex.save_html(tmp_path_factory.mktemp("export") / "explorer.html")
    raw_path = aw.save_html(tmp_path_factory.mktemp("export") / "raw.html", aw.AttentionHeatmap(raw))
    return tr, path, raw_path


def _open_offline(browser, path):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600})
    blocked = []

    def route(r):
        if r.request.url.startswith(("file:", "blob:", "data:")):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    log = H.ConsoleLog(page)
    page.on("dialog", lambda d: (blocked.append("dialog:" + d.message), d.dismiss()))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-aw-ready='1']", timeout=20000)
    return ctx, page, log, blocked


def test_export_draws_and_links_without_kernel_or_network(browser, exported):
    tr, path, _ = exported
    html = path.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    ctx, page, log, blocked = _open_offline(browser, path)
    try:
        for sel in (H.MATRIX, H.HEATMAP, ".aw-panel.aw-flow", ".aw-panel.aw-summary"):
            assert int(page.eval_on_selector(sel, "e => e.dataset.draws || 0")) >= 1, sel
        assert page.eval_on_selector(H.HEATMAP, "e => e.dataset.shown") == "0:0"
        x, y = H.matrix_cell_point(page, 4, 9)
        page.mouse.click(x, y)
        H.wait_dataset(page, H.HEATMAP, {"shown": "4:9"})
        assert page.eval_on_selector(".aw-panel.aw-flow", "e => e.dataset.layer") == "4"
        # Click a word in the heatmap strip: the flow panel traces that token, from embedded tables.
        page.locator(f"{H.HEATMAP} .aw-tok").nth(3).click()
        H.wait_dataset(page, ".aw-panel.aw-flow", {"token": "3", "scoresFor": "3"})
        H.wait_dataset(page, ".aw-panel.aw-flow", {"routeToken": "3"})
        assert int(page.eval_on_selector(".aw-panel.aw-flow", "e => e.dataset.edges")) > 0
        values = page.eval_on_selector_all(".aw-flow-strip .aw-tok", "es => es.map(e => Number(e.dataset.value))")
        expected = tr.rollout()[-1, 3]
        assert max(abs(a - b) for a, b in zip(values, expected)) < 1e-3
        # The head summary (a canvas view in exported pages): click a cell, every panel follows.
        summary = page.locator(".aw-panel.aw-summary canvas.aw-canvas")
        g = summary.evaluate("c => ({l: +c.dataset.left, t: +c.dataset.top, p: +c.dataset.pitch, c: +c.dataset.cell})")
        summary.click(position={"x": g["l"] + 6 * g["p"] + g["c"] / 2, "y": g["t"] + 1 * g["p"] + g["c"] / 2})
        H.wait_dataset(page, H.HEATMAP, {"shown": "1:6"})
        H.wait_dataset(page, H.MATRIX, {"layer": "1", "head": "6"})
        page.locator(".aw-panel.aw-summary button.aw-metric").nth(1).click()
        assert page.get_attribute(".aw-panel.aw-summary", "data-metric") == "distance"
        assert blocked == [] and not log.errors(), (blocked, log.errors())
    except Exception:
        H.save_artifacts(page, log, "export")
        raise
    finally:
        ctx.close()


def test_export_applies_keep_and_method_in_the_page(browser, exported):
    """The exported flow panel re-prunes its embedded routes to the slider's keep and
    switches method in the page; what cannot work offline is hidden."""
    tr, path, _ = exported
    flow = ".aw-panel.aw-flow"
    ctx, page, log, blocked = _open_offline(browser, path)
    try:
        H.wait_dataset(page, flow, {"keep": "0.8", "method": "rollout"})
        before = int(page.get_attribute(flow, "data-edges"))
        sig = page.get_attribute(flow, "data-edge-sig")
        page.locator(f"{flow} input.aw-keep").fill("0.5")
        H.wait_dataset(page, flow, {"keep": "0.5"})
        fewer = int(page.get_attribute(flow, "data-edges"))
        page.locator(f"{flow} input.aw-keep").fill("1")
        H.wait_dataset(page, flow, {"keep": "1"})
        more = int(page.get_attribute(flow, "data-edges"))
        assert 0 < fewer < before < more
        # The page's pruning is route_graph's: same edge count for the default token.
        from attn_widgets.flows.route import route_graph
        from attn_widgets.widgets.flow import AttentionFlow, default_token

        cap = AttentionFlow.class_traits()["max_edges_per_layer"].default_value  # the panel's default
        assert fewer == route_graph(tr, "rollout", default_token(tr), keep=0.5, max_edges_per_layer=cap).n_edges
        assert more == route_graph(tr, "rollout", default_token(tr), keep=1.0, max_edges_per_layer=cap).n_edges
        page.select_option(f"{flow} select.aw-method", "attention")
        H.wait_dataset(page, flow, {"method": "attention"})
        assert page.get_attribute(flow, "data-edge-sig") != sig
        assert page.locator(f"{flow} button.aw-diff").is_hidden()
        assert page.locator(f"{flow} .aw-legend").count() == 1
        assert not page.locator(f"{flow} .aw-error").inner_text().strip()
        assert blocked == [] and not log.errors(), (blocked, log.errors())
    except Exception:
        H.save_artifacts(page, log, "export-flow")
        raise
    finally:
        ctx.close()


def test_export_renders_hostile_tokens_as_text(browser, exported):
    _, path, raw_path = exported
    for p in (path, raw_path):
        ctx, page, log, blocked = _open_offline(browser, p)
        try:
            assert page.evaluate("() => window.__pwned") is None
            assert page.locator("img").count() == 0
            texts = page.eval_on_selector_all(f"{H.HEATMAP} .aw-tok", "es => es.map(e => e.textContent)")
            assert any("<img" in t or "script" in t for t in texts)
            assert blocked == [] and not log.errors(), (blocked, log.errors())
        except Exception:
            H.save_artifacts(page, log, "export-hostile")
            raise
        finally:
            ctx.close()
