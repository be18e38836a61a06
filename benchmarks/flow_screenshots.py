"""Screenshots of the Flow panel in real JupyterLab (light and dark): every method at 13
tokens, the Explorer's flow panel at ~500 tokens, and a base vs fine-tuned-like diff.

Usage: ``PYTHONPATH=$PWD python benchmarks/flow_screenshots.py OUTDIR`` (writes flow_*.png,
cropped to the flow panel)."""

from __future__ import annotations

import pathlib
import sys

import nbformat
from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.browser import harness as H

LONG = " ".join(["The committee reviewed the proposal, noting that the budget was large but the plan was sound."] * 30)
SRC = f"""import attn_widgets as aw, numpy as np
model, tokenizer = aw.demo_model()
short = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
flow = aw.AttentionFlow(short, method="rollout", keep=0.8)
display(flow)
other = aw.AttentionTrace.from_tensors(np.roll(short.attentions, 2, axis=0) * 0.6 + short.attentions * 0.4,
                                       short.tokens, model_name="fine-tuned")
diff = aw.AttentionFlow(short, compare=other, labels=["base", "fine-tuned"], compare_mode="diff", token=0)
display(diff)
long = aw.trace(model, tokenizer, {LONG!r}, max_length=512)
explorer = aw.Explorer(long)
display(explorer)
"""


def main(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with H.JupyterServer("lab", notebooks=None) as server, sync_playwright() as pw:
        browser = H.launch_browser(pw)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SRC)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, server.root / "shots.ipynb")
        p = H.NotebookPage(browser, server, "shots.ipynb", viewport=(1500, 1400)).open(run=False)
        H.run_all(p.page)
        H.wait_executed(p.page, 300)
        page = p.page
        page.wait_for_timeout(3000)
        flows = page.locator(".aw-panel.aw-flow")
        for theme in ("light", "dark"):
            if theme == "dark":
                page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
                page.wait_for_timeout(2500)
                p.kernel_exec("flow.token = None; flow.token = 3")  # redraw in the new theme
            for m in ("attention", "rollout", "flow", "grad_rollout", "attn_grad"):
                p.kernel_exec(f"flow.method = {m!r}; flow.token = 3; flow.wait(60)")
                page.wait_for_timeout(800)
                flows.nth(0).screenshot(path=str(out / f"flow_13_{m}_{theme}.png"))
            flows.nth(1).scroll_into_view_if_needed()
            p.kernel_exec("diff.token = 1; diff.token = 0")
            page.wait_for_timeout(800)
            flows.nth(1).screenshot(path=str(out / f"flow_13_diff_{theme}.png"))
            flows.nth(2).scroll_into_view_if_needed()
            p.kernel_exec("explorer.select(token=40)")
            page.wait_for_timeout(1500)
            flows.nth(2).screenshot(path=str(out / f"flow_512_rollout_{theme}.png"))
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
        p.close()
        browser.close()
    print("ok", sorted(x.name for x in out.glob("flow_*.png")))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
