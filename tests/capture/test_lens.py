"""TransformerLens activation cache -> AttentionTrace (optional extra `lens`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw

tl = pytest.importorskip("transformer_lens")
pytest.importorskip("transformer_lens.model_bridge.sources.native")

TOKENS = ["<bos>", "t1", "t2", "t3", "t4", "t5"]
IDS = torch.tensor([[1, 5, 7, 9, 3, 11]])


@pytest.fixture(scope="module")
def bridge():
    from transformer_lens import TransformerBridge, TransformerBridgeConfig

    cfg = TransformerBridgeConfig(
        d_model=32, d_head=8, n_layers=2, n_ctx=32, n_heads=4, d_mlp=64, d_vocab=50,
        act_fn="gelu", normalization_type="LN", seed=0,
    )
    return TransformerBridge.boot_native(cfg)


def test_patterns_from_run_with_cache(bridge):
    _, cache = bridge.run_with_cache(IDS)
    tr = aw.from_transformer_lens(cache, TOKENS)
    assert tr.shape == (2, 4, 6, 6) and tr.causal and tr.gradients is None and tr.target is None
    ref = np.stack([cache[f"blocks.{l}.attn.hook_pattern"][0].numpy() for l in range(2)])
    np.testing.assert_allclose(tr.attentions, ref, atol=0)
    # A plain dict and a cache without its batch dimension give the same trace.
    plain = {k: cache[k] for k in cache.keys() if k.endswith("hook_pattern")}
    np.testing.assert_array_equal(aw.from_transformer_lens(plain, TOKENS).attentions, tr.attentions)
    _, unbatched = bridge.run_with_cache(IDS, remove_batch_dim=True)
    np.testing.assert_allclose(aw.from_transformer_lens(unbatched, TOKENS).attentions, tr.attentions, atol=1e-6)


def test_gradients_from_backward_caching_hooks(bridge):
    cache, fwd, bwd = bridge.get_caching_hooks(lambda n: n.endswith("hook_pattern"), incl_bwd=True)
    with bridge.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        bridge(IDS)[0, 3, 7].backward()
    bridge.zero_grad(set_to_none=True)
    tr = aw.from_transformer_lens(cache, TOKENS, target="logit 7 at position 3")
    assert tr.target == "logit 7 at position 3"
    assert np.all(tr.gradients[:, :, 4:] == 0) and np.abs(tr.gradients[:, :, :4]).sum() > 0

    # Reference: a zero leaf added to each pattern; d y / d leaf == d y / d pattern.
    deltas = []

    def add_leaf(pattern, hook):
        d = torch.zeros_like(pattern, requires_grad=True)
        deltas.append(d)
        return pattern + d

    logits = bridge.run_with_hooks(IDS, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), add_leaf)])
    ref = torch.autograd.grad(logits[0, 3, 7], deltas)
    np.testing.assert_allclose(tr.gradients, torch.stack([g[0] for g in ref]).numpy(), rtol=1e-4, atol=1e-7)


def test_bad_caches():
    with pytest.raises(ValueError, match="no 'blocks.{layer}.attn.hook_pattern' entries"):
        aw.from_transformer_lens({"blocks.0.hook_resid_pre": torch.zeros(1, 3, 4)}, ["a", "b", "c"])
    a = torch.full((1, 2, 3, 3), 1 / 3)
    with pytest.raises(ValueError, match="layers \\[0, 2\\]"):
        aw.from_transformer_lens({"blocks.0.attn.hook_pattern": a, "blocks.2.attn.hook_pattern": a}, list("abc"))
    with pytest.raises(ValueError, match="tokens: expected 3 tokens"):
        aw.from_transformer_lens({"blocks.0.attn.hook_pattern": a}, ["a"])
    with pytest.raises(TypeError, match="ActivationCache or a dict"):
        aw.from_transformer_lens([a], list("abc"))
