"""Contribution capture on every supported architecture: decomposition completeness, value norms
and ALTI against slow references written from the papers' equations, grouped-query attention.

Architectures: the real demo MiniLM and config-built BERT (post-LN), GPT-2 (pre-LN, Conv1D),
Llama (pre-RMSNorm, rotary, grouped-query attention with biases), T5 encoder (RMS norm without
bias or mean, relative position bias) and BART encoder (post-LN). Config-built models get random
biases and norm weights, so a bias or norm handled wrongly cannot hide behind zero / one.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.contrib import (
    ContributionRecorder,
    block_vectors,
    compute_contributions,
)
from attn_widgets.flows import alti

from .conftest import VOCAB

SENTENCE = "The cat sat on the mat because it was warm."
ARCHS = ["minilm", "bert", "gpt2", "llama", "t5", "bart"]


def _randomize(model, seed=1):
    """Random biases and norm weights (initialisation leaves them at 0 / 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    return model


def _build(arch, request):
    if arch == "minilm":
        return request.getfixturevalue("minilm")[0]
    torch.manual_seed(0)
    if arch == "bert":
        from transformers import BertConfig, BertModel

        model = BertModel(BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, attn_implementation="eager",
        ))
    elif arch == "gpt2":
        model = copy.deepcopy(request.getfixturevalue("gpt2")[0])
    elif arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
            max_position_embeddings=64, bos_token_id=101, eos_token_id=102, pad_token_id=0,
            attn_implementation="eager",
        ))
    elif arch == "t5":
        model = copy.deepcopy(request.getfixturevalue("t5"))
    elif arch == "bart":
        model = copy.deepcopy(request.getfixturevalue("bart"))
    model.eval()
    model.set_attn_implementation("eager")
    return _randomize(model)


@pytest.fixture(scope="module", params=ARCHS)
def arch_run(request):
    """(arch, model, per-layer pieces from an independent forward, capture results)."""
    arch = request.param
    model = _build(arch, request)
    tok = request.getfixturevalue("tok")
    enc = tok(SENTENCE, return_tensors="pt")
    enc = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    runner = model.get_encoder() if arch in ("t5", "bart") else model
    layers = _layers(arch, model)
    real, handles = {}, []
    for i, layer in enumerate(layers):
        handles.append(_real_output_hook(arch, layer, real, i))
    try:
        with ContributionRecorder(model) as rec, torch.no_grad():
            out = runner(**enc, output_attentions=True, output_hidden_states=True, return_dict=True)
    finally:
        for h in handles:
            h.remove()
    blocks = rec.blocks()
    res = compute_contributions(blocks, out.attentions)
    return {
        "arch": arch, "model": model, "layers": layers, "blocks": blocks, "res": res,
        "attn": [a[0].double() for a in out.attentions],
        "hidden": [h[0].double() for h in out.hidden_states], "real": real,
    }


def _layers(arch, model):
    if arch in ("minilm", "bert"):
        return list(model.encoder.layer)
    if arch == "gpt2":
        return list(model.transformer.h)
    if arch == "llama":
        return list(model.model.layers)
    if arch == "t5":
        return list(model.get_encoder().block)
    return list(model.get_encoder().layers)


def _real_output_hook(arch, layer, store, i):
    """The attention block's real output, residual (and post-LN norm) included."""
    def keep(x):
        store[i] = (x[0] if isinstance(x, tuple) else x)[0].detach().double()

    if arch in ("minilm", "bert"):
        return layer.attention.output.LayerNorm.register_forward_hook(lambda m, a, o: keep(o))
    if arch == "bart":
        return layer.self_attn_layer_norm.register_forward_hook(lambda m, a, o: keep(o))
    if arch == "t5":
        return layer.layer[0].register_forward_hook(lambda m, a, o: keep(o))
    norm = layer.ln_2 if arch == "gpt2" else layer.post_attention_layernorm
    return norm.register_forward_pre_hook(lambda m, a: keep(a[0]))


def _weights(arch, layer, model):
    """Reference pieces from the weights, float64: (value-input norm fn or None, W_V [d, Hkv*dh],
    b_V, W_O [H*dh, d], b_O, post-LN (gamma, beta, eps) or None, H, Hkv)."""
    c = model.config
    dd = lambda t: None if t is None else t.detach().double()
    if arch in ("minilm", "bert"):
        att = layer.attention
        ln = att.output.LayerNorm
        return (None, dd(att.self.value.weight).T, dd(att.self.value.bias), dd(att.output.dense.weight).T,
                dd(att.output.dense.bias), (dd(ln.weight), dd(ln.bias), ln.eps), c.num_attention_heads,
                c.num_attention_heads)
    if arch == "gpt2":
        d = c.n_embd
        w, b = dd(layer.attn.c_attn.weight), dd(layer.attn.c_attn.bias)
        return (layer.ln_1, w[:, 2 * d:], b[2 * d:], dd(layer.attn.c_proj.weight), dd(layer.attn.c_proj.bias),
                None, c.n_head, c.n_head)
    if arch == "llama":
        sa = layer.self_attn
        return (layer.input_layernorm, dd(sa.v_proj.weight).T, dd(sa.v_proj.bias), dd(sa.o_proj.weight).T,
                dd(sa.o_proj.bias), None, c.num_attention_heads, c.num_key_value_heads)
    if arch == "t5":
        sa = layer.layer[0]
        return (sa.layer_norm, dd(sa.SelfAttention.v.weight).T, None, dd(sa.SelfAttention.o.weight).T, None,
                None, c.num_heads, c.num_heads)
    sa, ln = layer.self_attn, layer.self_attn_layer_norm
    return (None, dd(sa.v_proj.weight).T, dd(sa.v_proj.bias), dd(sa.out_proj.weight).T, dd(sa.out_proj.bias),
            (dd(ln.weight), dd(ln.bias), ln.eps), c.encoder_attention_heads, c.encoder_attention_heads)


def _f_ref(run, layer_idx, kv_of=lambda h, n_heads, n_kv: h // (n_heads // n_kv)):
    """f_h(x_j) = (u_j W_V^{kv(h)} + b_V^{kv(h)}) W_O^h with explicit loops: [H, T, d] float64."""
    arch, model = run["arch"], run["model"]
    norm, wv, bv, wo, _, _, n_heads, n_kv = _weights(arch, run["layers"][layer_idx], model)
    x = run["hidden"][layer_idx]
    with torch.no_grad():
        u = x if norm is None else norm(x.float()).double()
    t, d = x.shape
    dh = wo.shape[0] // n_heads
    f = torch.zeros(n_heads, t, d, dtype=torch.float64)
    for h in range(n_heads):
        g = kv_of(h, n_heads, n_kv)
        for j in range(t):
            v = u[j] @ wv[:, g * dh:(g + 1) * dh]
            if bv is not None:
                v = v + bv[g * dh:(g + 1) * dh]
            f[h, j] = v @ wo[h * dh:(h + 1) * dh]
    return f


def _contrib_ref(run, layer_idx):
    """ALTI c_ij (Ferrando et al. 2022) from the paper's equations, loops over i and j."""
    _, _, _, _, bo, ln, _, _ = _weights(run["arch"], run["layers"][layer_idx], run["model"])
    f = _f_ref(run, layer_idx)
    alpha = run["attn"][layer_idx]
    x = run["hidden"][layer_idx]
    t, d = x.shape
    bo = torch.zeros(d, dtype=torch.float64) if bo is None else bo
    c = np.zeros((t, t))
    for i in range(t):
        z = [sum(alpha[h, i, j] * f[h, j] for h in range(f.shape[0])) + (x[i] if i == j else 0) for j in range(t)]
        pre = sum(z) + bo
        if ln is None:
            parts, y = z, pre
        else:
            gamma, beta, eps = ln
            s = torch.sqrt(((pre - pre.mean()) ** 2).mean() + eps)
            parts = [gamma * (zj - zj.mean()) / s for zj in z]
            y = gamma * (pre - pre.mean()) / s + beta
        for j in range(t):
            c[i, j] = max(0.0, float(y.abs().sum() - (y - parts[j]).abs().sum()))
    return c


def test_decomposition_is_complete(arch_run):
    """sum_j T_i(x_j) + bias equals the block's real output, residual (and norm) included."""
    for layer, block in enumerate(arch_run["blocks"]):
        vecs, bias, y = block_vectors(block, arch_run["attn"][layer].float())
        real = arch_run["real"][layer]
        total = vecs.double().sum(1) + bias.double()
        scale = real.abs().max()
        assert float((total - real).abs().max() / scale) < 1e-4, (arch_run["arch"], layer)
        assert float((y.double() - real).abs().max() / scale) < 1e-4
        # The residual really is inside: the diagonal vectors carry it (no block is all-attention).
        assert block.post_ln == (arch_run["arch"] in ("minilm", "bert", "bart"))


def test_value_norms_match_weights(arch_run):
    for layer in range(len(arch_run["blocks"])):
        ref = torch.linalg.vector_norm(_f_ref(arch_run, layer), dim=-1).numpy()
        np.testing.assert_allclose(arch_run["res"]["value_norms"][layer], ref, rtol=1e-4, atol=1e-6)


def test_mixed_norms_match_loops(arch_run):
    layer = len(arch_run["blocks"]) - 1
    f = _f_ref(arch_run, layer)
    alpha = arch_run["attn"][layer]
    t = alpha.shape[-1]
    ref = np.array([[float(torch.linalg.vector_norm(sum(alpha[h, i, j] * f[h, j] for h in range(f.shape[0]))))
                     for j in range(t)] for i in range(t)])
    np.testing.assert_allclose(arch_run["res"]["mixed_norms"][layer], ref, rtol=1e-4, atol=1e-5)


def test_contributions_match_paper_reference(arch_run):
    for layer in range(len(arch_run["blocks"])):
        ref = _contrib_ref(arch_run, layer)
        got = arch_run["res"]["contributions"][layer]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    if arch_run["arch"] in ("gpt2", "llama"):
        # Causal: a later token contributes nothing to an earlier one.
        c = arch_run["res"]["contributions"]
        assert np.abs(np.triu(c, k=1)).max() == 0


def test_gqa_mapping_matters(request):
    """With num_key_value_heads < num_attention_heads each value head serves a group of query
    heads (repeat_kv: kv head h // (H / H_kv)). A wrong mapping (h % H_kv) is distinguishable."""
    model = _build("llama", request)
    tok = request.getfixturevalue("tok")
    enc = tok(SENTENCE, return_tensors="pt")
    with ContributionRecorder(model) as rec, torch.no_grad():
        out = model(input_ids=enc["input_ids"], output_attentions=True, output_hidden_states=True)
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    res = compute_contributions(rec.blocks(), out.attentions)
    run = {"arch": "llama", "model": model, "layers": _layers("llama", model),
           "hidden": [h[0].double() for h in out.hidden_states]}
    right = torch.linalg.vector_norm(_f_ref(run, 0), dim=-1).numpy()
    wrong = torch.linalg.vector_norm(_f_ref(run, 0, kv_of=lambda h, n, k: h % k), dim=-1).numpy()
    np.testing.assert_allclose(res["value_norms"][0], right, rtol=1e-4)
    assert np.abs(res["value_norms"][0] - wrong).max() > 1e-2 * right.max()


def test_minilm_alti_matches_slow_reference(minilm):
    """aw.trace(contributions=True) on the real MiniLM: ALTI == the paper's equations, 1e-6."""
    model, tok = minilm
    tr = aw.trace(model, tok, SENTENCE, contributions=True)
    enc = tok(SENTENCE, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True, output_hidden_states=True)
    run = {"arch": "minilm", "model": model, "layers": _layers("minilm", model),
           "attn": [a[0].double() for a in out.attentions], "hidden": [h[0].double() for h in out.hidden_states]}
    t = tr.n_tokens
    mats = []
    for layer in range(tr.n_layers):
        c = _contrib_ref(run, layer)
        mats.append(np.array([[c[i, j] / sum(c[i]) for j in range(t)] for i in range(t)]))
    rolled = mats[0]
    for m in mats[1:]:
        rolled = np.array([[sum(m[i, k] * rolled[k, j] for k in range(t)) for j in range(t)] for i in range(t)])
    np.testing.assert_allclose(alti(tr)[-1], rolled, atol=1e-6)
    np.testing.assert_allclose(tr.alti()[-1], rolled, atol=1e-6)
    assert tr.value_norms.shape == (6, 12, t) and tr.mixed_norms.shape == (6, t, t)
    # The capture is the same forward: the attention maps are unchanged by the hooks.
    np.testing.assert_allclose(tr.attentions, torch.stack(out.attentions)[:, 0].numpy(), atol=1e-6)


def test_trace_contributions_gpt2_and_gradients(gpt2):
    model, tok = gpt2
    tr = aw.trace(model, tok, SENTENCE, contributions=True)
    plain = aw.trace(model, tok, SENTENCE)
    np.testing.assert_allclose(tr.gradients, plain.gradients, rtol=1e-5, atol=1e-7)
    assert plain.contributions is None and plain.value_norms is None
    assert tr.contributions.shape == (2, tr.n_tokens, tr.n_tokens)
    np.testing.assert_allclose(tr.alti()[-1].sum(-1), 1.0, atol=1e-9)
    # Hooks are removed after the capture.
    for block in model.transformer.h:
        assert not block.ln_1._forward_pre_hooks and not block.attn.c_attn._forward_hooks


def test_chunking_does_not_change_results(minilm):
    model, tok = minilm
    enc = tok(SENTENCE, return_tensors="pt")
    with ContributionRecorder(model) as rec, torch.no_grad():
        out = model(**enc, output_attentions=True)
    big = compute_contributions(rec.blocks(), out.attentions)
    one_row = compute_contributions(rec.blocks(), out.attentions, chunk_bytes=1)
    # Only float32 rounding may differ (bmm blocks differently): ~eps * ||y_i||_1 on c_ij.
    for k in big:
        np.testing.assert_allclose(big[k], one_row[k], rtol=1e-5, atol=1e-6 * np.abs(big[k]).max())
    assert not np.array_equal(big["contributions"], np.zeros_like(big["contributions"]))


def test_unsupported_model_is_a_clear_error():
    from transformers import ViTConfig, ViTModel

    model = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ValueError, match="model: .*supported model types.*vit"):
        ContributionRecorder(model)


def test_row_by_row_chunks_match(arch_run):
    """One query row per chunk (causal models then skip the keys after it) == one big chunk."""
    attn = [a.float() for a in arch_run["attn"]]
    one_row = compute_contributions(arch_run["blocks"], attn, chunk_bytes=1)
    for k, big in arch_run["res"].items():
        np.testing.assert_allclose(one_row[k], big, rtol=1e-5, atol=1e-6 * np.abs(big).max())
