"""Thin widget classes: traits, layout, linking. No attention math here."""

from .agreement import MethodAgreement
from .explorer import Explorer
from .export import save_html
from .flow import AttentionFlow
from .heatmap import AttentionHeatmap
from .link import SelectionLink, link
from .matrix import AttentionMatrix
from .summary import HeadSummary

__all__ = ["AttentionMatrix", "AttentionHeatmap", "AttentionFlow", "HeadSummary", "MethodAgreement", "Explorer", "save_html", "link", "SelectionLink"]
