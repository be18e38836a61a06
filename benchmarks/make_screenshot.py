"""Screenshot of the Explorer in JupyterLab for the README (real browser, demo model).

    python benchmarks/make_screenshot.py [--out notebooks/img/explorer.png] [--theme light|dark]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser import harness as H  # noqa: E402

SOURCE = """import attn_widgets as aw
model, tokenizer = aw.demo_model()
trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
explorer = aw.Explorer(trace, method="rollout", keep=0.8)
explorer.select(layer=2, head=7, token=8)
explorer"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "notebooks" / "img" / "explorer.png"))
    ap.add_argument("--theme", choices=["light", "dark"], default="light")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with H.JupyterServer("lab", notebooks=None) as server, sync_playwright() as pw:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SOURCE)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, server.root / "explorer.ipynb")
        browser = H.launch_browser(pw)
        page = H.NotebookPage(browser, server, "explorer.ipynb", viewport=(1500, 2600)).open()
        if args.theme == "dark":
            page.page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.page.wait_for_timeout(1500)
        out = page.page.locator(".aw-explorer").first
        out.screenshot(path=args.out)
        print("wrote", args.out)
        page.close()
        browser.close()


if __name__ == "__main__":
    main()
