"""Prompt and generated tokens: the ``prompt_length`` fact every panel syncs (present for a
``trace_generate`` trace, in-memory or lazy; 0 otherwise; validated; read-only from the
page) and the boundary the SVG figures draw (heatmap map lines, labels and strip; flow rows,
gaps split at the boundary). Config-built models, nothing downloaded."""

from __future__ import annotations

import re

import numpy as np
import pytest

import attn_widgets as aw
from attn_widgets.render.flow import route_svg
from attn_widgets.render.generation import GENERATION, generation_colour, prompt_length
from attn_widgets.render.heatmap import heatmap_svg


@pytest.fixture(scope="module")
def gen(gpt2):
    model, tok = gpt2
    return aw.trace_generate(model, tok, "the cat sat on the", max_new_tokens=5, do_sample=False)


@pytest.fixture(scope="module")
def lazy_gen(gpt2, gen):
    """A LazyTrace of the generated sequence, marked as trace_generate marks its traces."""
    model, tok = gpt2
    import torch

    ids = torch.tensor([gen.token_ids])
    lt = aw.trace_lazy(model, tok, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    lt.meta.update(prompt_length=gen.prompt_length, generated=gen.generated)
    return lt


def _with_meta(tr, **meta):
    return aw.AttentionTrace.from_tensors(tr.attentions, list(tr.tokens), meta={**tr.meta, **meta})


# -- the fact --------------------------------------------------------------------------------


def test_every_panel_syncs_the_prompt_length_of_a_generation(gen):
    tr = gen.trace
    p = gen.prompt_length
    assert 1 <= p < tr.n_tokens and tr.meta["prompt_length"] == p
    panels = [aw.AttentionMatrix(tr), aw.AttentionHeatmap(tr), aw.AttentionFlow(tr)]
    for w in panels:
        assert w.prompt_length == p
        state = w.get_state(key="prompt_length")
        assert state == {"prompt_length": p}  # one int on the wire
    ex = aw.Explorer(gen)
    assert [w.prompt_length for w in (ex.matrix, ex.heatmap, ex.flow)] == [p, p, p]


def test_a_lazy_generation_has_the_fact_too(lazy_gen, gen):
    assert lazy_gen.on_demand
    assert aw.AttentionHeatmap(lazy_gen).prompt_length == gen.prompt_length
    assert aw.AttentionMatrix(lazy_gen).prompt_length == gen.prompt_length


def test_other_traces_have_no_boundary(minilm_trace, gpt2):
    model, tok = gpt2
    for tr in (minilm_trace, aw.trace(model, tok, "the cat sat"), aw.trace_lazy(model, tok, "the cat sat")):
        assert prompt_length(tr) == 0
        h = aw.AttentionHeatmap(tr, token=1)
        assert h.prompt_length == 0
        svg = h.to_svg()
        assert "aw-gen" not in svg and "aw-generated" not in svg
    flow = aw.AttentionFlow(minilm_trace)
    assert flow.prompt_length == 0 and "aw-gen" not in flow.to_svg()


def test_only_generated_marks_give_the_boundary(gen):
    tr = gen.trace
    only_mask = _with_meta(tr)
    only_mask.meta.pop("prompt_length")  # the trace's meta is its own copy
    assert prompt_length(only_mask) == gen.prompt_length


@pytest.mark.parametrize(
    ("meta", "error", "words"),
    [
        ({"prompt_length": 0}, ValueError, "1 <= prompt_length < 12"),
        ({"prompt_length": 12}, ValueError, "received 12"),
        ({"prompt_length": True}, TypeError, "expected an int"),
        ({"prompt_length": 3.0}, TypeError, "expected an int"),
        ({"prompt_length": 6}, ValueError, "marks tokens 7.. as generated but trace.meta['prompt_length'] is 6"),
        ({"generated": [False] * 12}, ValueError, "a non-empty prompt"),
        ({"generated": np.ones(12, bool)}, ValueError, "a non-empty prompt"),
        ({"generated": np.zeros(5, bool)}, ValueError, "shape [12]"),
        ({"generated": np.r_[np.zeros(6, bool), [True, False], np.ones(4, bool)]}, ValueError, "to the end"),
    ],
)
def test_malformed_marks_are_refused_naming_the_field(gen, meta, error, words):
    tr = _with_meta(gen.trace, **meta)
    with pytest.raises(error) as exc:
        aw.AttentionHeatmap(tr)
    assert "trace.meta[" in str(exc.value) and words in str(exc.value)


def test_cross_attention_traces_refuse_the_marks(gen):
    rng = np.random.default_rng(0)
    a = rng.random((1, 2, 4, 6)).astype(np.float32)
    a /= a.sum(-1, keepdims=True)
    tr = aw.AttentionTrace.from_tensors(a, [f"q{i}" for i in range(4)], key_tokens=[f"k{i}" for i in range(6)],
                                        meta={"prompt_length": 2})
    with pytest.raises(ValueError, match="cross-attention"):
        prompt_length(tr)


def test_the_page_cannot_rewrite_the_fact(gen):
    h = aw.AttentionHeatmap(gen.trace)
    h.set_state({"prompt_length": 2, "token": 3})
    assert h.prompt_length == gen.prompt_length and h.token == 3
    with pytest.raises(TypeError, match="unknown argument"):
        aw.AttentionHeatmap(gen.trace, prompt_length=2)


def test_the_generation_colour_reads_on_both_themes():
    assert generation_colour("light") == GENERATION["light"]
    assert generation_colour("dark") == GENERATION["dark"]
    assert generation_colour({"background": "#000000"}) == GENERATION["dark"]


# -- the figures -----------------------------------------------------------------------------


def _attr(tag: str, name: str) -> float:
    return float(re.search(rf'\b{name}="([-\d.]+)"', tag).group(1))


def _map_box(svg: str) -> tuple[float, float, float, float]:
    rect = re.search(r"<rect [^>]*class=\"aw-map-border\"[^>]*/>", svg).group(0)
    return _attr(rect, "x"), _attr(rect, "y"), _attr(rect, "width"), _attr(rect, "height")


def _boundary_lines(svg: str) -> list[str]:
    return [m for m in re.findall(r"<line [^>]*/>", svg) if 'class="aw-gen-boundary"' in m and GENERATION["light"] in m]


def test_heatmap_svg_draws_the_boundary_between_row_and_column_p(gen):
    tr = gen.trace
    p, n = gen.prompt_length, tr.n_tokens
    svg = heatmap_svg(tr, 1, 0, token=n - 1)
    x, y, w, h = _map_box(svg)
    lines = _boundary_lines(svg)
    assert len(lines) == 2
    horiz = [ln for ln in lines if _attr(ln, "y1") == _attr(ln, "y2")]
    vert = [ln for ln in lines if _attr(ln, "x1") == _attr(ln, "x2")]
    assert _attr(horiz[0], "y1") == pytest.approx(y + p * h / n, abs=0.01)
    assert _attr(vert[0], "x1") == pytest.approx(x + p * w / n, abs=0.01)
    # Answer labels (rows and columns) styled, prompt ones not; the key explains it.
    assert svg.count("aw-row-label aw-generated") == n - p
    assert svg.count("aw-col-label aw-generated") == n - p
    assert 'class="aw-gen-legend"' in svg and f"tokens {p}\u2013{n - 1} generated" in svg
    # The strip: one marker, right before token p's chip; every answer chip underlined.
    strip = svg[svg.index('<g class="aw-strip"'):]
    assert strip.count('class="aw-gen-boundary"') == 1 and strip.count("aw-gen-underline") == n - p
    chips = re.findall(r'class="aw-strip-token"|class="aw-gen-boundary"', strip)
    assert chips.index('class="aw-gen-boundary"') == p
    # Dark: the dark colour.
    dark = heatmap_svg(tr, 1, 0, token=n - 1, theme="dark")
    assert GENERATION["dark"] in dark and GENERATION["light"] not in dark


def test_heatmap_svg_of_an_all_answer_region_has_the_column_line_only(gen):
    tr = gen.trace
    p, n = gen.prompt_length, tr.n_tokens
    svg = heatmap_svg(tr, 0, "mean", region=(p, n, 0, n))
    lines = _boundary_lines(svg)
    assert len(lines) == 1 and _attr(lines[0], "x1") == _attr(lines[0], "x2")
    x, _y, w, _h = _map_box(svg)
    assert _attr(lines[0], "x1") == pytest.approx(x + p * w / n, abs=0.01)


def _label_y(svg: str, index_text: str) -> list[float]:
    return [float(m) for m in re.findall(rf'<text [^>]*y="([-\d.]+)"[^>]*>{re.escape(index_text)}</text>', svg)]


def test_flow_svg_draws_the_boundary_between_the_prompt_and_answer_rows(gen):
    tr = gen.trace
    p, n = gen.prompt_length, tr.n_tokens
    flow = aw.AttentionFlow(tr, method="rollout", rows="all")
    svg = flow.to_svg()
    g = re.search(r'<g class="aw-gen-boundary">(.*?)</g>', svg).group(1)
    yb = _attr(re.findall(r"<line [^>]*/>", g)[1], "y1")
    ys = {}
    for m in re.finditer(r'<text [^>]*y="([-\d.]+)"[^>]*class="aw-token-label[^"]*"[^>]*>', svg):
        ys.setdefault(len(ys), float(m.group(1)))
    rows = sorted(ys.values())
    assert len(rows) == n
    assert rows[p - 1] < yb < rows[p]
    assert svg.count("aw-token-label aw-generated") == n - p
    assert f"prompt | answer: tokens {p}\u2013{n - 1} generated" in svg
    assert "aw-gen" not in route_svg(flow.graphs, list(tr.tokens), rows="all")  # no fact, no marks


def test_route_svg_splits_a_gap_that_holds_prompt_and_answer_tokens(gen):
    tr = gen.trace
    p, n = gen.prompt_length, tr.n_tokens
    flow = aw.AttentionFlow(tr, method="rollout", rows="route")
    g = dict(flow.graphs[0])
    from attn_widgets._wire import pack

    # Label the first and last tokens only: one gap 1 .. n-2 across the boundary.
    g["rows"] = pack(np.array([0, n - 1], np.int32), "int32")
    plain = route_svg([g], list(tr.tokens), rows="route")
    assert re.findall(r'class="aw-gap">([^<]*)<', plain) == [f"\u2026 {n - 2} tokens"]
    split = route_svg([g], list(tr.tokens), rows="route", prompt_length=p)
    assert re.findall(r'class="aw-gap">([^<]*)<', split) == [f"\u2026 {p - 1} tokens", f"\u2026 {n - 1 - p} tokens"]
    assert split.count('<g class="aw-gen-boundary">') == 1
    with pytest.raises(ValueError, match="prompt_length"):
        route_svg([g], list(tr.tokens), prompt_length=-1)
