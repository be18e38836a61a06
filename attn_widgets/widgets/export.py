"""Standalone HTML export: one file, JS inlined, no CDN, no network, linked without a kernel."""

from __future__ import annotations

import html
import json
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Union

from .._wire import json_nbytes
from ._assets import STATIC

__all__ = ["save_html", "DEFAULT_MAX_BYTES"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def _panels_of(items: Iterable[Any]) -> list[Any]:
    """Panels export themselves (``export_kind``, ``export_state``, ``export_extras``);
    composites list theirs (``export_panels``)."""
    out = []
    for it in items:
        if callable(getattr(type(it), "export_panels", None)):
            out += it.export_panels()
        elif getattr(type(it), "export_kind", None):
            out.append(it)
        else:
            raise TypeError(f"save_html: cannot export a {type(it).__name__}; expected attn_widgets panels or an Explorer")
    if not out:
        raise ValueError("save_html: nothing to export (no Matrix, Heatmap or Flow panel given)")
    return out


def save_html(
    path: str | pathlib.Path,
    *panels: Any,
    title: str = "attn_widgets",
    link: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    progress: Union[bool, Callable[[float, str], None], None] = None,
) -> pathlib.Path:
    """Write the panels to one self-contained HTML file that works offline.

    The views' JavaScript is inlined (no CDN, no network: the page's Content-Security-Policy
    forbids every request). With ``link=True`` the panels share their selection in the page,
    without a kernel. Head maps and per-token flow traces are embedded up to ``max_bytes``;
    beyond that the least relevant ones are left out and the page says so.

    ``progress``: ``True`` prints one line per step to stderr; a callable gets
    ``(fraction done, what)`` after each step. Returns the path written.
    """
    if max_bytes < 1024 * 1024:
        raise ValueError(f"max_bytes: expected at least 1 MiB, received {max_bytes}")
    report = _reporter(progress)
    widgets, notes = _panels_of(panels), []
    esm = {}
    for w in widgets:
        kind = w.export_kind
        src = STATIC / f"{w.export_view}.js"
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing: build the views first (npm run build)")
        esm[kind] = src.read_text(encoding="utf-8")
    host = STATIC / "static_host.js"
    if not host.exists():
        raise FileNotFoundError(f"{host} is missing: build the views first (npm run build)")

    entries = []
    growing = [k for k, w in enumerate(widgets) if w.export_grows]
    steps, done = len(widgets) + len(growing) + 1, 0
    for k, w in enumerate(widgets):
        entries.append({"id": f"aw-panel-{k}", "kind": w.export_kind, "state": w.export_state(), "extras": {}})
        done += 1
        report(done / steps, f"{w.export_kind}: state")
    fixed = json_nbytes(entries) + sum(len(s) for s in esm.values()) + host.stat().st_size
    if fixed > max_bytes:
        raise ValueError(
            f"save_html: the panels alone need {fixed / 1e6:.1f} MB, over max_bytes={max_bytes / 1e6:.1f} MB; "
            "export fewer panels, shorten the text, or raise max_bytes"
        )
    share = (max_bytes - fixed) // max(1, len(growing))
    for k in growing:
        state, extras, more = widgets[k].export_extras(share)
        entries[k]["state"].update(state)
        entries[k]["extras"] = extras
        notes += more
        done += 1
        report(done / steps, f"{widgets[k].export_kind}: embedded data")

    doc = {
        "panels": entries,
        "esm": esm,
        "link": ["layer", "head", "token"] if link else None,
        "max_mb": round(max_bytes / 1e6, 1),
        "notes": notes,
    }
    # "<" escaped so no token text such as "</script>" can end the script element early.
    data = json.dumps(doc, separators=(",", ":")).replace("<", "\\u003c")
    host_src = host.read_text(encoding="utf-8").replace("</script", "<\\/script")
    divs = "\n".join(f'<div class="aw-export-panel" id="{e["id"]}"></div>' for e in entries)
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; img-src data: blob:">
<title>{html.escape(title)}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 16px; }} .aw-export-panel {{ margin: 12px 0; }}
.aw-export-notes {{ color: #616161; font-size: 12px; }}</style>
</head><body>
<h1 style="font-size:16px">{html.escape(title)}</h1>
<ul class="aw-export-notes">{note_html}</ul>
{divs}
<script type="application/json" id="aw-data">{data}</script>
<script>{host_src}</script>
<script>awStatic.mount(JSON.parse(document.getElementById("aw-data").textContent)).catch(function (e) {{
  document.body.dataset.awError = String(e); document.body.append("export failed to start: " + e); }});</script>
</body></html>
"""
    out = pathlib.Path(path)
    out.write_text(page, encoding="utf-8")
    size = out.stat().st_size
    if size > max_bytes * 1.05:
        out.unlink()
        raise ValueError(f"save_html: the file came to {size / 1e6:.1f} MB, over max_bytes; raise max_bytes")
    report(1.0, f"written {size / 1e6:.1f} MB to {out}")
    return out


def _reporter(progress: Any) -> Callable[[float, str], None]:
    if progress is None or progress is False:
        return lambda _f, _what: None
    if progress is True:
        t0 = time.monotonic()
        return lambda f, what: print(f"save_html: {f:4.0%} {what} ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    if not callable(progress):
        raise TypeError(f"progress: expected None, a bool or a callable(fraction, what), received {type(progress).__name__}")
    return progress
