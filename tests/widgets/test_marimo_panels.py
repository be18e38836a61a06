"""marimo support without a browser: aw.marimo_panels, the canvas head summary, the notebook.

The real-browser test (clicks in ``marimo run``) is tests/browser/test_marimo.py.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import traitlets

import attn_widgets as aw
from attn_widgets._wire import unpack

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "quickstart_marimo.py"


@pytest.fixture()
def explorer(minilm_trace):
    return aw.Explorer(minilm_trace).select(layer=0, head=0, token=1)


def test_canvas_summary_carries_the_head_statistics(explorer, minilm_trace):
    canvas = aw.HeadSummaryCanvas(explorer.summary)
    stats = minilm_trace.head_stats()
    assert canvas.metrics == explorer.summary.available and canvas.metric == explorer.summary.metric
    for m in canvas.metrics:
        got = unpack(canvas.stats[m])
        np.testing.assert_allclose(got.reshape(stats[m].shape), stats[m], rtol=1e-6)
    assert (canvas.n_layers, canvas.n_heads) == (6, 12)


def test_marimo_panels_wrap_the_explorers_own_widgets(explorer):
    import marimo as mo
    panels = aw.marimo_panels(explorer)
    assert all(isinstance(p, mo.ui.anywidget) for p in panels)
    assert panels.matrix.widget is explorer.matrix
    assert panels.heatmap.widget is explorer.heatmap
    assert panels.flow.widget is explorer.flow
    assert isinstance(panels.summary.widget, aw.HeadSummaryCanvas)
    assert panels.layout() is not None
    # One set of elements per explorer: marimo sends a widget's clicks to its newest wrapper.
    assert aw.marimo_panels(explorer) is panels
    assert "marimo-anywidget" in explorer._display_().text


def test_canvas_click_moves_the_explorer_and_back(explorer):
    canvas = aw.marimo_panels(explorer).summary.widget
    # A click in the canvas arrives as a state update from the view.
    canvas.set_state({"layer": 2, "head": 5})
    assert explorer.selection == {"layer": 2, "head": 5, "token": 1}
    assert (explorer.heatmap.layer, explorer.heatmap.head, explorer.summary.layer) == (2, 5, 2)
    explorer.select(layer=4, head="mean")
    assert (canvas.layer, canvas.head) == (4, "mean")
    canvas._aw_link.unlink()
    explorer.select(layer=1, head=1)
    assert (canvas.layer, canvas.head) == (4, "mean")


def test_bad_input_names_the_argument(explorer):
    with pytest.raises(TypeError, match="explorer: expected an attn_widgets.Explorer, received AttentionMatrix"):
        aw.marimo_panels(explorer.matrix)
    with pytest.raises(TypeError, match="summary: expected a HeadSummary, received Explorer"):
        aw.HeadSummaryCanvas(explorer)
    canvas = aw.HeadSummaryCanvas(explorer.summary)
    with pytest.raises(traitlets.TraitError, match=r"layer: expected an int with 0 <= layer < 6, received 6"):
        canvas.layer = 6
    with pytest.raises(traitlets.TraitError, match="head: expected an int or one of"):
        canvas.head = "median"
    with pytest.raises(traitlets.TraitError, match="metric: expected one of"):
        canvas.metric = "nope"
    assert (canvas.layer, canvas.head, canvas.metric) == (0, 0, explorer.summary.metric)


def test_notebook_runs_as_a_script_and_prints_the_selection():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart_marimo", NOTEBOOK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    outputs, defs = mod.app.run()
    assert defs["explorer"].selection == {"layer": 0, "head": 0, "token": 1}
    assert defs["matrix_ui"].widget is defs["explorer"].matrix
    assert "selection: layer 0, head 0, token 1 (the)" in outputs[-1].text
    # The explorer's own cell shows its four panels (marimo would say "unsupported" to a VBox).
    import marimo as mo

    assert outputs[-2] is defs["explorer"]
    shown = mo.as_html(outputs[-2]).text
    assert shown.count("<marimo-anywidget") == 4, shown[:500]
    model_ids = {p.widget._model_id for p in aw.marimo_panels(defs["explorer"])}
    assert all(m in shown for m in model_ids)
