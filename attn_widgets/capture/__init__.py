"""Model -> AttentionTrace. No widget code here.

* :func:`trace` - decoder-only and encoder-only `transformers` models (GPT-2, Llama, BERT, ...)
* :func:`trace_seq2seq` - encoder-decoder `transformers` models (T5, BART): encoder,
  decoder and cross attention as a :class:`Seq2SeqTrace`
* :func:`trace_image` - vision transformers (ViT): [CLS] + patch tokens
* :func:`trace_torch` - plain PyTorch models built on ``torch.nn.MultiheadAttention``
* :func:`from_transformer_lens` - a TransformerLens activation cache (extra ``lens``)
* :func:`trace_generate` - generate with a causal LM, capture prompt + answer, any
  generated token as the target (a :class:`GenerationTrace`)
* :func:`trace_lazy` - long contexts: queries and keys only, maps on demand (a LazyTrace)
"""

from .demo import demo_model, tiny_gpt2
from .generate import GenerationTrace, estimate_capture_bytes, trace_generate
from .huggingface import eager_attention, model_kind, trace
from .lazy import long_context_model, trace_lazy
from .lens import from_transformer_lens
from .seq2seq import Seq2SeqTrace, trace_seq2seq
from .torch_hooks import trace_torch
from .vision import patch_tokens, trace_image

__all__ = [
    "trace",
    "trace_seq2seq",
    "Seq2SeqTrace",
    "trace_image",
    "patch_tokens",
    "trace_torch",
    "from_transformer_lens",
    "trace_lazy",
    "trace_generate",
    "GenerationTrace",
    "estimate_capture_bytes",
    "long_context_model",
    "eager_attention",
    "model_kind",
    "demo_model",
    "tiny_gpt2",
]
