"""Models split with accelerate (device_map / offload): capture works and goes to CPU per layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.huggingface import _model_device, _to_cpu_numpy

accelerate = pytest.importorskip("accelerate")

TEXT = "the cat sat on the mat"
PIECES = ["transformer.wte", "transformer.wpe", "transformer.drop", "transformer.h.0",
          "transformer.h.1", "transformer.ln_f", "lm_head"]


@pytest.fixture(scope="module")
def reference(gpt2):
    model, tok = gpt2
    return aw.trace(model, tok, TEXT, position=3)


def _fresh():
    return aw.tiny_gpt2(n_layer=2, n_head=4, n_embd=32)  # same seed as the gpt2 fixture


def test_dispatched_across_cpu_pieces(reference):
    model, tok = _fresh()
    model = accelerate.dispatch_model(model, device_map={p: "cpu" for p in PIECES}, force_hooks=True)
    assert hasattr(model.transformer.h[0], "_hf_hook"), "accelerate hooks are attached"
    tr = aw.trace(model, tok, TEXT, position=3)
    np.testing.assert_allclose(tr.attentions, reference.attentions, atol=1e-6)
    np.testing.assert_allclose(tr.gradients, reference.gradients, rtol=1e-5, atol=1e-7)


def test_layer_offloaded_to_disk(reference, tmp_path):
    model, tok = _fresh()
    device_map = {p: "cpu" for p in PIECES}
    device_map["transformer.h.1"] = "disk"
    model = accelerate.dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path))
    assert model.transformer.h[1].attn.c_attn.weight.device.type == "meta"
    tr = aw.trace(model, tok, TEXT, position=3)
    np.testing.assert_allclose(tr.attentions, reference.attentions, atol=1e-6)
    np.testing.assert_allclose(tr.gradients, reference.gradients, rtol=1e-5, atol=1e-7)


def test_input_device_and_per_layer_cpu_copy():
    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.offloaded = torch.nn.Linear(2, 2, device="meta")
            self.emb = torch.nn.Embedding(4, 2)

        def get_input_embeddings(self):
            return self.emb

    assert _model_device(Stub()).type == "cpu"
    layers = [torch.ones(1, 2, 3, 3, dtype=torch.bfloat16), torch.zeros(1, 2, 3, 3, dtype=torch.float16)]
    out = _to_cpu_numpy(layers)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3, 3)
