"""attn_widgets: linked, clickable JupyterLab widgets for transformer attention.

>>> import attn_widgets as aw
>>> model, tok = aw.demo_model()
>>> trace = aw.trace(model, tok, "the cat sat on the mat")
>>> aw.link(aw.AttentionMatrix(trace), aw.AttentionHeatmap(trace))
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .capture import (
    GenerationTrace,
    Seq2SeqTrace,
    demo_model,
    from_transformer_lens,
    tiny_gpt2,
    trace,
    trace_generate,
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
    MethodAgreement,
    SelectionLink,
    link,
    save_html,
)

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = _version("attn_widgets")
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = [
    "AttentionTrace",
    "LazyTrace",
    "trace",
    "trace_lazy",
    "trace_generate",
    "GenerationTrace",
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
    "MethodAgreement",
    "Explorer",
    "save_html",
    "marimo_panels",
    "HeadSummaryCanvas",
    "link",
    "SelectionLink",
    "__version__",
]
