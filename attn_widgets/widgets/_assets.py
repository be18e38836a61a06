"""Where the built views live (``attn_widgets/static``, written by ``npm run build``)."""

from __future__ import annotations

import pathlib

__all__ = ["STATIC"]

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"


def _esm(name: str) -> pathlib.Path | str:
    path = STATIC / f"{name}.js"
    if not path.exists():
        # A source checkout without a JS build: say so in the notebook instead of a blank cell.
        msg = (
            f"attn_widgets: {path} is missing. Build the views with `npm install && npm run build` "
            "(pip install does this automatically)."
        )
        return "export default { render({ el }) { el.textContent = " + repr(msg) + "; } }"
    return path
