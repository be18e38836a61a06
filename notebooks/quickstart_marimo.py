import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full")


@app.cell
def _():
    import html

    import marimo as mo

    import attn_widgets as aw

    return aw, html, mo


@app.cell
def _(mo):
    mo.md(
        """
        # attn_widgets in marimo

        The Explorer's panels as marimo UI elements, linked in the kernel: click a head in
        the matrix, a token in the heatmap's strip or in the flow, or a head in the head
        summary; every panel follows, and the cell at the bottom re-runs and prints the
        selection Python sees.
        """
    )
    return


@app.cell
def _(aw):
    # The small MiniLM that ships with attn_widgets (no download).
    model, tokenizer = aw.demo_model()
    trace = aw.trace(model, tokenizer, "The cat sat on the mat because it was warm.")
    return (trace,)


@app.cell
def _(aw, trace):
    explorer = aw.Explorer(trace, method="rollout", keep=0.8)
    explorer.select(layer=0, head=0, token=1)
    # One UI element per panel, bound to names so that cells mentioning them re-run on clicks.
    matrix_ui, heatmap_ui, flow_ui, summary_ui = aw.marimo_panels(explorer)
    return explorer, flow_ui, heatmap_ui, matrix_ui, summary_ui


@app.cell
def _(explorer):
    # The Explorer shows itself in marimo as these four panels (the same elements as above).
    explorer
    return


@app.cell
def _(explorer, flow_ui, heatmap_ui, html, matrix_ui, mo, summary_ui):
    # Mentioning the panels makes this cell re-run on every click in them; the explorer's
    # selection is already current (the panels are linked in the kernel).
    _ = (matrix_ui, heatmap_ui, flow_ui, summary_ui)
    _sel = explorer.selection
    _tok = explorer.trace.tokens[_sel["token"]] if _sel["token"] is not None else "-"
    # Token strings are untrusted text: escaped, never written into the page as HTML.
    mo.Html(
        "<code class='aw-selection'>"
        + html.escape(f"selection: layer {_sel['layer']}, head {_sel['head']}, token {_sel['token']} ({_tok})")
        + "</code>"
    )
    return


if __name__ == "__main__":
    app.run()
