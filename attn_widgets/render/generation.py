"""Prompt and generated tokens: where the boundary is, and its colour.

A trace from :func:`attn_widgets.trace_generate` says in ``meta["prompt_length"]`` (``P``)
that tokens ``0 .. P-1`` are the prompt and ``P .. T-1`` were generated (``meta["generated"]``,
bool ``[T]``, the same fact as a mask). :func:`prompt_length` reads and checks it once for
every panel and figure; 0 means "not a generation": nothing is drawn. Colours and sizes:
``style.json`` ``generation`` (the JS views read the same section through
``js/lib/generation.js``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .style import STYLE, luminance, resolve_theme

__all__ = ["GENERATION", "generation_colour", "prompt_length"]

#: ``style.json`` ``generation``: colours (light / dark), line, band and tick sizes, words.
GENERATION: dict[str, Any] = STYLE["generation"]


def prompt_length(trace: Any) -> int:
    """``P`` when ``trace`` is a generation (tokens ``P ..`` were generated), else 0.

    Read from ``trace.meta["prompt_length"]`` and, when present, checked against
    ``trace.meta["generated"]``; a trace without either is not a generation. A trace with
    only ``meta["generated"]`` gets ``P`` from it (it must then mark a non-empty suffix).

    Raises
    ------
    ValueError, TypeError
        When the marks are malformed (``P`` not an int with ``1 <= P < T``, a mask of
        the wrong shape or one that disagrees with ``P``), or when the trace is a
        cross-attention trace (rows and columns are different sequences).
    """
    meta = getattr(trace, "meta", None) or {}
    if not isinstance(meta, dict) or ("prompt_length" not in meta and "generated" not in meta):
        return 0
    n = int(trace.n_tokens)
    p_raw = meta.get("prompt_length")
    gen_raw = meta.get("generated")
    p: int | None = None
    if p_raw is not None:
        if isinstance(p_raw, bool) or not isinstance(p_raw, (int, np.integer)):
            raise TypeError(f"trace.meta['prompt_length']: expected an int, received {type(p_raw).__name__} {p_raw!r}")
        p = int(p_raw)
        if not 1 <= p < n:
            raise ValueError(
                f"trace.meta['prompt_length']: expected 1 <= prompt_length < {n} (the trace's {n} tokens: "
                f"a non-empty prompt and at least one generated token), received {p}"
            )
    if gen_raw is not None:
        mask = np.asarray(gen_raw)
        if mask.shape != (n,) or mask.dtype != bool:
            raise ValueError(
                f"trace.meta['generated']: expected a bool mask of shape [{n}], received "
                f"{mask.dtype} of shape {list(mask.shape)}"
            )
        first = int(np.argmax(mask)) if mask.any() else n
        if not (first >= 1 and first < n and mask[first:].all()):
            raise ValueError(
                "trace.meta['generated']: expected False for a non-empty prompt, then True for every "
                f"generated token to the end; received True at positions {np.flatnonzero(mask)[:8].tolist()}"
            )
        if p is not None and p != first:
            raise ValueError(
                f"trace.meta['generated']: marks tokens {first}.. as generated but "
                f"trace.meta['prompt_length'] is {p}"
            )
        p = first
    if p is None:
        return 0
    if getattr(trace, "is_cross", False):
        raise ValueError(
            "trace.meta['prompt_length']: prompt / answer marks apply to self-attention traces; "
            "this trace is cross-attention (its keys are another sequence)"
        )
    return p


def generation_colour(theme: str | dict = "light") -> str:
    """The boundary and generated-token colour (``'#rrggbb'``) on ``theme``'s background."""
    bg = resolve_theme(theme)["background"]
    dark = luminance(bg) < float(STYLE["colormap"]["dark_luminance"])
    return GENERATION["dark" if dark else "light"]
