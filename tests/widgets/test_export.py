"""HTML export without a browser: size cap and argument errors (the page itself is tested in
tests/browser/test_export.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import attn_widgets as aw


def _big_trace(T: int = 200) -> aw.AttentionTrace:
    a = np.random.default_rng(1).random((6, 12, T, T)).astype(np.float32) + 0.01
    a /= a.sum(-1, keepdims=True)
    return aw.AttentionTrace.from_tensors(a, [f"w{i}" for i in range(T)])


def _doc(path) -> dict:
    m = re.search(r'<script type="application/json" id="aw-data">(.*?)</script>', path.read_text(), re.S)
    return json.loads(m.group(1))


def test_size_cap_leaves_maps_out_with_a_message(tmp_path):
    tr = _big_trace()
    hm = aw.AttentionHeatmap(tr, layer=3, head=5)
    cap = 2 * 1024 * 1024
    out = aw.save_html(tmp_path / "capped.html", hm, aw.AttentionMatrix(tr), max_bytes=cap)
    assert out.stat().st_size <= cap * 1.05
    doc = _doc(out)
    assert any("head maps left out (size cap)" in n for n in doc["notes"])
    kept = doc["panels"][0]["state"]["preloaded"]
    assert "3:5" in kept and "3:0" in kept          # the selected layer comes first
    assert 0 < len(kept) < 6 * 14
    assert "head maps left out" in out.read_text()  # said on the page, not only in the data


def test_everything_embedded_when_small(tmp_path, minilm_trace):
    out = aw.save_html(tmp_path / "all.html", aw.AttentionHeatmap(minilm_trace), aw.AttentionFlow(minilm_trace))
    doc = _doc(out)
    assert len(doc["panels"][0]["state"]["preloaded"]) == 6 * 14
    routes = doc["panels"][1]["extras"]["routes"]
    assert sorted(routes) == sorted(["attention", "rollout", "flow", "grad_rollout", "attn_grad"])
    assert all(len(r) == minilm_trace.n_tokens for r in routes.values())
    assert doc["notes"] == []


def test_flow_export_embeds_routes_at_keep_1_shown_token_first(minilm_trace):
    from attn_widgets._wire import json_nbytes
    from attn_widgets.flows.route import route_graph

    f = aw.AttentionFlow(minilm_trace, method="attention", keep=0.6, token=5)
    _state, extras, notes = f.export_extras(10_000_000)
    g = extras["routes"]["attention"]["5"]["graphs"][0]
    rg = route_graph(minilm_trace, "attention", 5, keep=1.0, max_edges_per_layer=f.max_edges_per_layer)
    assert g["count"] == rg.n_edges and g["keep"] == 1.0  # the page prunes to its slider's keep
    one = json_nbytes(extras["routes"]["attention"]["5"])
    _state, small, notes = f.export_extras(3 * one)
    kept = [(m, t) for m, r in small["routes"].items() for t in r]
    assert kept[0] == ("attention", "5") and len(kept) < 5 * minilm_trace.n_tokens
    assert sum(json_nbytes(e) for r in small["routes"].values() for e in r.values()) <= 3 * one
    assert notes and "left out" in notes[0]


def test_refuses_bad_arguments(tmp_path, minilm_trace):
    with pytest.raises(ValueError, match="max_bytes"):
        aw.save_html(tmp_path / "x.html", aw.AttentionHeatmap(minilm_trace), max_bytes=1000)
    with pytest.raises(TypeError, match="cannot export"):
        aw.save_html(tmp_path / "x.html", object())
    with pytest.raises(ValueError, match="nothing to export"):
        aw.save_html(tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_script_breakout_is_escaped(tmp_path):
    toks = ["</script><script>alert(1)</script>", "<!--", "ok"]
    a = np.full((1, 1, 3, 3), 1 / 3, dtype=np.float32)
    out = aw.save_html(tmp_path / "x.html", aw.AttentionHeatmap(aw.AttentionTrace.from_tensors(a, toks)))
    text = out.read_text()
    assert "</script><script>alert(1)" not in text
    assert text.count("</script>") == 3  # data, host, boot: nothing from the tokens
    assert _doc(out)["panels"][0]["state"]["tokens"] == toks


def test_head_summary_exports_its_statistics(tmp_path, minilm_trace):
    s = aw.HeadSummary(minilm_trace, metric="distance", layer=2, head=3)
    out = s.save_html(tmp_path / "summary.html")
    panel = _doc(out)["panels"][0]
    assert panel["kind"] == "summary"
    st = panel["state"]
    assert (st["layer"], st["head"], st["metric"]) == (2, 3, "distance")
    assert st["metrics"] == s.available
    import base64

    got = np.frombuffer(base64.b64decode(st["stats"]["distance"]["data"]["$b64"]), dtype="<f4").reshape(6, 12)
    np.testing.assert_allclose(got, minilm_trace.head_stats()["distance"], rtol=1e-6)
