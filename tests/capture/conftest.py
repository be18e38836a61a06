"""Tiny config-built models for the capture tests (random weights, nothing downloaded)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 30522  # the MiniLM (BERT WordPiece) tokenizer's vocabulary


@pytest.fixture(scope="session")
def tok():
    from transformers import AutoTokenizer

    from attn_widgets.capture.demo import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


def _seeded(build):
    import torch

    torch.manual_seed(0)
    model = build()
    model.eval()
    return model


@pytest.fixture(scope="session")
def t5_config():
    from transformers import T5Config

    return T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
        num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=102,
    )


@pytest.fixture(scope="session")
def t5(t5_config):
    from transformers import T5ForConditionalGeneration

    return _seeded(lambda: T5ForConditionalGeneration(t5_config))


@pytest.fixture(scope="session")
def bart_config():
    from transformers import BartConfig

    return BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=101,
        eos_token_id=102, decoder_start_token_id=102, forced_eos_token_id=None,
    )


@pytest.fixture(scope="session")
def bart(bart_config):
    from transformers import BartForConditionalGeneration

    return _seeded(lambda: BartForConditionalGeneration(bart_config))


@pytest.fixture(scope="session")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    return _seeded(lambda: LlamaForCausalLM(config))


@pytest.fixture(scope="session")
def vit_config():
    from transformers import ViTConfig

    return ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=5,
    )
