"""ViT capture: [CLS] + patch tokens, patch grid and display image in meta, default targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attn_widgets as aw
from attn_widgets.capture.huggingface import eager_attention
from attn_widgets.capture.vision import patch_tokens


@pytest.fixture(scope="module")
def vit_cls(vit_config):
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    return ViTForImageClassification(vit_config).eval()


@pytest.fixture(scope="module")
def vit_bare(vit_config):
    from transformers import ViTModel

    torch.manual_seed(0)
    return ViTModel(vit_config).eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_tokens_special_mask_and_meta(vit_cls, pixels):
    tr = aw.trace_image(vit_cls, pixels[0])
    assert tr.tokens[:3] == ("[CLS]", "p(0,0)", "p(0,1)") and tr.tokens[-1] == "p(3,3)"
    assert tr.tokens == patch_tokens(4, 4)
    assert tr.shape == (2, 4, 17, 17) and not tr.causal
    assert tr.special_mask.tolist() == [True] + [False] * 16
    assert tr.meta["patch_grid"] == (4, 4) and tr.meta["patch_size"] == (8, 8) and tr.meta["n_special"] == 1
    img = tr.meta["image"]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.min() == 0 and img.max() == 255
    np.testing.assert_allclose(tr.attentions.sum(-1), 1.0, atol=1e-5)


def test_classifier_default_target_and_gradients_match(vit_cls, pixels):
    assert vit_cls.config._attn_implementation == "sdpa"
    tr = aw.trace_image(vit_cls, pixels, batch_index=1)
    assert vit_cls.config._attn_implementation == "sdpa"
    with eager_attention(vit_cls):
        out = vit_cls(pixel_values=pixels[1:], output_attentions=True)
    pred = int(out.logits[0].argmax())
    assert tr.target == f"logit of predicted class {vit_cls.config.id2label[pred]!r}"
    np.testing.assert_allclose(tr.attentions, torch.stack(out.attentions)[:, 0].detach().numpy(), atol=1e-6)
    ref = torch.autograd.grad(out.logits[0, pred], out.attentions)
    np.testing.assert_allclose(tr.gradients, torch.stack(ref)[:, 0].numpy(), rtol=1e-4, atol=1e-7)
    tr3 = aw.trace_image(vit_cls, pixels[1], target=3)
    assert tr3.target == "logit of class 'LABEL_3'"


def test_bare_model_pooled_norm_target(vit_bare, pixels):
    tr = aw.trace_image(vit_bare, pixels[0])
    assert tr.target == "norm of the pooled output"
    with eager_attention(vit_bare):
        out = vit_bare(pixel_values=pixels[:1], output_attentions=True)
    ref = torch.autograd.grad(out.pooler_output[0].norm(), out.attentions)
    np.testing.assert_allclose(tr.gradients, torch.stack(ref)[:, 0].numpy(), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="integer target needs a model with logits"):
        aw.trace_image(vit_bare, pixels[0], target=1)


def test_other_image_size_interpolates(vit_cls):
    tr = aw.trace_image(vit_cls, torch.randn(3, 48, 40))
    assert tr.meta["patch_grid"] == (6, 5) and tr.n_tokens == 31
    assert tr.tokens[-1] == "p(5,4)" and tr.meta["image"].shape == (48, 40, 3)


def test_image_argument(vit_cls, pixels):
    rgb = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    tr = aw.trace_image(vit_cls, pixels[0], image=rgb, gradients=False)
    np.testing.assert_array_equal(tr.meta["image"], rgb)
    assert tr.gradients is None and tr.target is None
    assert aw.trace_image(vit_cls, pixels[0], image=False, gradients=False).meta["image"] is None
    tr = aw.trace_image(vit_cls, pixels[0].numpy(), image=np.full((32, 32, 3), 0.5), gradients=False)
    assert tr.meta["image"].dtype == np.uint8 and tr.meta["image"].max() == 128


def test_frozen_weights_still_give_gradients(vit_config, pixels):
    from transformers import ViTForImageClassification

    model = ViTForImageClassification(vit_config)
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    tr = aw.trace_image(model, pixels[0])
    assert np.abs(tr.gradients).sum() > 0 and model.training


def test_patch_tokens_labels():
    assert patch_tokens(1, 2, n_special=2) == ("[CLS]", "[DIST]", "p(0,0)", "p(0,1)")
    assert patch_tokens(1, 1, n_special=3) == ("[CLS]", "[REG1]", "[REG2]", "p(0,0)")
