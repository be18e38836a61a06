"""attn_widgets: linked, clickable JupyterLab widgets for transformer attention.

>>> import attn_widgets as aw
>>> model, tok = aw.demo_model()
>>> trace = aw.trace(model, tok, "the cat sat on the mat")
>>> aw.link(aw.AttentionMatrix(trace), aw.AttentionHeatmap(trace))
"""

from __future__ import annotations

from .capture import demo_model, tiny_gpt2, trace
from .trace import AttentionTrace
from .widgets import AttentionFlow, AttentionHeatmap, AttentionMatrix, SelectionLink, link

__version__ = "0.1.0"

__all__ = [
    "AttentionTrace",
    "trace",
    "demo_model",
    "tiny_gpt2",
    "AttentionMatrix",
    "AttentionHeatmap",
    "AttentionFlow",
    "link",
    "SelectionLink",
    "__version__",
]
