"""Pictures of the panels without a browser: SVG and PNG, in the panels' style.

``style`` (the one style spec, ``attn_widgets/style.json``), ``png`` (a dependency-free
encoder), ``svg`` (escaping, elements, colour-bar ticks, the sentence strip) and one module
per panel: ``matrix``, ``heatmap``, ``flow``. :mod:`attn_widgets.figures` re-exports the
public functions.
"""
