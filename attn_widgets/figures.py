"""Publication figures of the panels, from Python, without a browser.

Pure functions (numpy, ``zlib`` and ``struct`` only: no matplotlib, no PIL, no widgets)
that draw what the panels draw, in the panels' style (``attn_widgets/style.json``, read by
the views too). The code lives in :mod:`attn_widgets.render` (``style``, ``png``, ``svg``
and one module per panel); this module is its public face:

* :func:`matrix_svg`: the layers x heads grid; each cell an embedded PNG of the
  max-pooled thumbnail, vector layer/head labels, the selected cell outlined.
* :func:`heatmap_svg`: one head's map as an embedded, pixel-crisp PNG, vector token
  labels (thinned when T is large), the selected token's row or column outlined, a
  colour bar with vector ticks and, when a token is selected, the sentence strip as
  vector text on coloured boxes.
* :func:`flow_svg`: fully vector; tokens at every layer boundary, the strong edges as
  ``<line>`` elements whose width and opacity follow the weight (positive and negative
  colours), the selected token's paths highlighted.

SVG output is SVG 1.1 XML (``width``, ``height`` and ``viewBox`` set; images through
``xlink:href``). Token text is untrusted: control and bidi-override characters are
replaced as on the panels (``printable``) and everything is XML-escaped.

The rasters (:func:`matrix_raster`, :func:`heatmap_raster`, :func:`flow_raster`) are
the pictures without any text, as ``uint8 [H, W, 3]`` arrays; :func:`encode_png` writes
any such array as a PNG file (a tiny dependency-free encoder).
"""

from __future__ import annotations

from .render.flow import flow_raster, flow_svg
from .render.heatmap import heatmap_raster, heatmap_region, heatmap_svg
from .render.matrix import matrix_maps, matrix_raster, matrix_svg
from .render.png import encode_png, raster_png
from .render.style import (
    DARK_STOPS,
    LIGHT_STOPS,
    THEMES,
    colorize,
    colormap_lut,
    make_lut,
    printable,
    truncate,
)
from .render.style import parse_rgb as _parse_rgb  # noqa: F401  (older imports)
from .render.svg import xml_escape

__all__ = [
    "DARK_STOPS",
    "LIGHT_STOPS",
    "THEMES",
    "colorize",
    "colormap_lut",
    "encode_png",
    "flow_raster",
    "flow_svg",
    "heatmap_raster",
    "heatmap_region",
    "heatmap_svg",
    "make_lut",
    "matrix_maps",
    "matrix_raster",
    "matrix_svg",
    "printable",
    "raster_png",
    "truncate",
    "xml_escape",
]
