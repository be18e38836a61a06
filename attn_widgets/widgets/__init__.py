"""Thin widget classes: traits, layout, linking. No attention math here."""

from .flow import AttentionFlow
from .heatmap import AttentionHeatmap
from .link import SelectionLink, link
from .matrix import AttentionMatrix

__all__ = ["AttentionMatrix", "AttentionHeatmap", "AttentionFlow", "link", "SelectionLink"]
