"""The flow figures' column headers and cap notes stay readable at 32 layers (the same rules
as js/flow/graph.js columnLabels / layerRanges, tested there with the same cases)."""

from __future__ import annotations

import re

import numpy as np

import attn_widgets as aw
from attn_widgets.flows import route_graph
from attn_widgets.render.flow import column_labels, layer_ranges


def test_layer_ranges():
    assert layer_ranges([4, 5, 6, 7, 9]) == "4\u20137, 9"
    assert layer_ranges([0, 1, 3, 4]) == "0, 1, 3, 4"
    assert layer_ranges([31, 30, 29, 2]) == "2, 29\u201331"
    assert layer_ranges([]) == ""


def test_column_labels_thin_narrow_columns_and_keep_the_selected():
    assert column_labels(7, 60, 30).all()
    show = column_labels(33, 7, 26, 21)
    assert np.flatnonzero(show).tolist() == [0, 5, 10, 15, 21, 25, 30]
    xs = np.flatnonzero(show) * 7
    assert (np.diff(xs) >= 26).all()


def test_route_svg_of_32_layers_has_no_overlapping_headers():
    rng = np.random.default_rng(0)
    a = rng.random((32, 2, 20, 20)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    trace = aw.AttentionTrace.from_tensors(a, [f"t{i}" for i in range(20)])
    f = aw.AttentionFlow(trace, method="rollout", token=5)
    svg = f.to_svg()
    heads = re.findall(r'<text[^>]*x="([0-9.]+)"[^>]*>(input|L\d+)</text>', svg)
    assert 2 <= len(heads) < 33, heads
    xs = sorted(float(x) for x, _ in heads)
    assert min(np.diff(xs)) >= 20, xs
