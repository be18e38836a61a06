"""Model -> AttentionTrace. No widget code here."""

from .demo import demo_model, tiny_gpt2
from .huggingface import eager_attention, model_kind, trace

__all__ = ["trace", "eager_attention", "model_kind", "demo_model", "tiny_gpt2"]
