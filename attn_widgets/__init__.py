"""attn_widgets: linked, clickable JupyterLab widgets for transformer attention.

>>> import attn_widgets as aw
>>> model, tok = aw.demo_model()
>>> trace = aw.trace(model, tok, "the cat sat on the mat")
>>> aw.link(aw.AttentionMatrix(trace), aw.AttentionHeatmap(trace))
"""

from __future__ import annotations

from .capture import (
    Seq2SeqTrace,
    demo_model,
    from_transformer_lens,
    tiny_gpt2,
    trace,
    trace_image,
    trace_lazy,
    trace_seq2seq,
    trace_torch,
)
from ._marimo import HeadSummaryCanvas, marimo_panels
from .lazy import LazyTrace
from .trace import AttentionTrace
from .widgets import (
    AttentionFlow,
    AttentionHeatmap,
    AttentionMatrix,
    Explorer,
    HeadSummary,
    SelectionLink,
    link,
    save_html,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionTrace",
    "LazyTrace",
    "trace",
    "trace_lazy",
    "trace_seq2seq",
    "Seq2SeqTrace",
    "trace_image",
    "trace_torch",
    "from_transformer_lens",
    "demo_model",
    "tiny_gpt2",
    "AttentionMatrix",
    "AttentionHeatmap",
    "AttentionFlow",
    "HeadSummary",
    "Explorer",
    "save_html",
    "marimo_panels",
    "HeadSummaryCanvas",
    "link",
    "SelectionLink",
    "__version__",
]
