"""Helpers shared by the benchmark scripts: text, statistics, formatting, machine info, results.

Imported as ``benchmarks._common`` after each script has put the repository root on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

# Herman Melville, Moby-Dick (1851), chapter 1, public domain.
PARAGRAPH_SHORT = (
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little and "
    "see the watery part of the world. It is a way I have of driving off the spleen and regulating the "
    "circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly "
    "November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and "
    "bringing up the rear of every funeral I meet; and especially whenever my hypos get such an upper "
    "hand of me, that it requires a strong moral principle to prevent me from deliberately stepping "
    "into the street, and methodically knocking people's hats off, then, I account it high time to get "
    "to sea as soon as I can. This is my substitute for pistol and ball. With a philosophical flourish "
    "Cato throws himself upon his sword; I quietly take to the ship. There is nothing surprising in "
    "this. If they but knew it, almost all men in their degree, some time or other, cherish very nearly "
    "the same feelings towards the ocean with me."
)
PARAGRAPH = PARAGRAPH_SHORT + (
    " There now is your insular city of the Manhattoes, "
    "belted round by wharves as Indian isles by coral reefs; commerce surrounds it with her surf. Right "
    "and left, the streets take you waterward. Its extreme downtown is the battery, where that noble "
    "mole is washed by waves, and cooled by breezes, which a few hours previous were out of sight of "
    "land. Look at the crowds of water-gazers there."
)

# -- page-side JavaScript shared by the browser benchmarks ------------------------------------
def run_cell_js(result: str, on_change: str, attributes: list[str]) -> str:
    """Page JS ``async (idx) => true``: run notebook cell ``idx``, timing it into ``window[result]``.

    ``res.t0`` is the start, ``res.matrix`` / ``res.heatmap`` the ms until the cell's new matrix /
    heatmap panel first reports a draw. ``on_change`` runs after those on every mutation (of the
    children or of ``attributes``), with ``now``, ``m``, ``h``, ``res`` and the observer ``mo`` in
    scope: it completes ``res`` and disconnects ``mo``."""
    return (
        """async (idx) => {
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  const cell = nb.widgets[idx];
  nb.activeCellIndex = idx;
  nb.deselectAll();
  cell.node.scrollIntoView({block: "start"});
  const old = new Set(cell.node.querySelectorAll(".aw-panel"));
  const res = {idx};
  window."""
        + result
        + """ = res;
  const find = (sel) => [...cell.node.querySelectorAll(sel)].find((e) => !old.has(e));
  const check = () => {
    const now = performance.now();
    const m = find(".aw-panel.aw-matrix");
    const h = find(".aw-panel.aw-heatmap");
    if (res.matrix === undefined && m && Number(m.dataset.draws || 0) >= 1) res.matrix = now - res.t0;
    if (res.heatmap === undefined && h && Number(h.dataset.draws || 0) >= 1) res.heatmap = now - res.t0;
"""
        + on_change
        + """  };
  const mo = new MutationObserver(check);
  mo.observe(cell.node, {subtree: true, childList: true, attributes: true, attributeFilter: """
        + json.dumps(attributes, separators=(", ", ":"))
        + """});
  res.t0 = performance.now();
  app.commands.execute("notebook:run-cell");
  return true;
}"""
    )


CELL_DONE_JS = """(idx) => {
  const w = window.jupyterapp.shell.currentWidget;
  const cell = w.content.widgets[idx];
  const k = w.sessionContext.session.kernel;
  const errs = cell.model.outputs.toJSON().filter((o) => o.output_type === "error");
  if (errs.length) return {error: errs.map((o) => o.ename + ": " + o.evalue).join("; ")};
  return {done: cell.model.executionCount !== null && !cell.promptNode.textContent.includes("*") && k.status === "idle"};
}"""

# The start of a click on matrix cell (layer, head) of cell ``idx``: finds the panels, the
# click point and ``want``; rejects if the heatmap already shows that head. The caller appends
# the MutationObserver that resolves, and the dispatch of the click.
CLICK_PREFIX_JS = """([idx, layer, head]) => new Promise((resolve, reject) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[idx];
  const m = cell.node.querySelector(".aw-panel.aw-matrix");
  const h = cell.node.querySelector(".aw-panel.aw-heatmap");
  const c = m.querySelector("canvas.aw-canvas");
  const r = c.getBoundingClientRect();
  const d = c.dataset;
  const x = r.left + Number(d.left) + head * Number(d.pitch) + Number(d.cell) / 2;
  const y = r.top + Number(d.top) + layer * Number(d.pitch) + Number(d.cell) / 2;
  const want = `${layer}:${head}`;
  if (h.dataset.shown === want) return reject(new Error("already showing " + want));
"""
CLICK_DISPATCH_JS = """  const t0 = performance.now();
  c.dispatchEvent(new MouseEvent("click", {clientX: x, clientY: y, bubbles: true, cancelable: true}));
})"""


# -- statistics and formatting ----------------------------------------------------------------
def med(xs):
    return statistics.median(xs) if xs else float("nan")


def span(xs, fmt):
    """``median (min–max)`` of the values that are not None; one value alone, "-" for none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))})" if len(xs) > 1 else fmt(xs[0])


def ms(x):
    return f"{x:.0f} ms"


# -- machine ----------------------------------------------------------------------------------
def load() -> str:
    """The three load averages, or "?" where the platform has none."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return cpu


def browser_env(*versions: str) -> str:
    """Date · platform · CPUs · Python · ``versions`` · JupyterLab · Chromium, for a results page."""
    import jupyterlab

    from tests.browser import harness as H

    try:
        chromium = subprocess.run([H.CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        chromium = "?"
    return " · ".join(
        [
            str(datetime.date.today()),
            platform.platform(),
            f"{os.cpu_count()} CPUs",
            f"Python {platform.python_version()}",
            *versions,
            f"JupyterLab {jupyterlab.__version__}",
            f"{chromium} (headless)",
        ]
    )


# -- notebooks in JupyterLab ------------------------------------------------------------------
def write_notebook(folder: pathlib.Path, name: str, sources: list[str]) -> str:
    """A Python 3 notebook of code cells ``sources`` written to ``folder / name``; returns ``name``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, folder / name)
    return name


@contextlib.contextmanager
def lab_notebook(workdir: pathlib.Path, path: str, viewport: tuple[int, int], artifacts: str):
    """JupyterLab serving ``workdir`` and headless Chromium on notebook ``path`` (not opened yet).

    Yields the harness's ``NotebookPage``; on an error saves a screenshot and the console log
    under ``artifacts``; closes the page and the browser in the end."""
    from playwright.sync_api import sync_playwright

    from tests.browser import harness as H

    with H.JupyterServer("lab", notebooks=workdir) as srv, sync_playwright() as pw:
        browser = H.launch_browser(pw)
        nbp = H.NotebookPage(browser, srv, path, viewport=viewport)
        try:
            yield nbp
        except BaseException:
            H.save_artifacts(nbp.page, nbp.log, artifacts)
            raise
        finally:
            nbp.close()
            browser.close()


# -- results ----------------------------------------------------------------------------------
def write_results(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` (folders made as needed); returns the path."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out
