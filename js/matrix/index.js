// AttentionMatrix view: layers x heads grid of max-pooled thumbnails on one canvas.
// Parts: thumbs.js (the thumbnail arrays, chunks and catch-up), draw.js (the canvas),
// input.js (mouse and keys). Messages are those of lib/protocol.js.
import { disposer, ensureStyles, h, listen, onWidthChange, tooltip } from "../lib/dom.js";
import { attachExport } from "../lib/exportbar.js";
import { createClient, errorLine, MSG, onPush } from "../lib/protocol.js";
import { draw, paintTiles } from "./draw.js";
import { matrixHandlers } from "./input.js";
import { applyLayers, decodeChunk, decodeThumbsReply, mergeReply, pendingCount, thumbsFromTrait } from "./thumbs.js";

function buildDom(el) {
  const d = {};
  d.panel = h("div", "aw-panel aw-matrix");
  d.title = h("div", "aw-title");
  d.note = h("div", "aw-sub aw-note"); // approximations (preview thumbnails) are said here
  d.error = h("div", "aw-error");
  d.canvas = h("canvas", "aw-canvas");
  d.canvas.tabIndex = 0;
  d.canvas.setAttribute("role", "grid");
  d.canvas.setAttribute("aria-label", "attention heads: layers by heads; arrow keys move, Enter selects");
  d.controls = h("div", "aw-controls"); // image export buttons
  d.panel.append(d.title, d.controls, d.note, d.error, d.canvas);
  el.appendChild(d.panel);
  return d;
}

function render({ model, el }) {
  ensureStyles();
  const dom = buildDom(el);
  const v = {
    model,
    el,
    ...dom,
    tip: tooltip(dom.panel),
    errors: errorLine(dom.error, model),
    client: createClient(model),
    thumbs: null, // see thumbs.thumbsFromTrait
    tiles: null, // pre-painted ImageData per cell
    lutKey: "",
    lay: null,
    hover: null,
    exactLayers: new Set(), // layers received as chunks: a later snapshot never undoes them
  };
  v.draw = () => draw(v);
  const stop = disposer();
  stop.add(() => v.client.dispose());
  stop.add(
    attachExport({
      model,
      panel: v.panel,
      controls: v.controls,
      kind: "matrix",
      canvases: () => [v.canvas],
      redraw: () => v.draw(),
      selection: () => ({ layer: model.get("layer"), head: model.get("head") }),
    }),
  );

  function decodeThumbs() {
    v.thumbs = thumbsFromTrait(model.get("thumbs"), v.exactLayers);
    v.tiles = null;
  }

  // Exact layers as they are computed (long contexts).
  const onChunk = (msg, buffers) => {
    if (!v.thumbs) return;
    const c = decodeChunk(msg, buffers);
    for (let l = c.layer0; l < c.layer1; l++) v.exactLayers.add(l);
    applyLayers(v.thumbs, c.layer0, c.layer1, c.maps, c.scales);
    if (v.tiles) paintTiles(v.thumbs, v.lutKey, v.tiles, c.layer0, c.layer1);
    v.draw();
  };

  /** A view opened while exact thumbnails are being computed asks for what exists so far. */
  async function catchUp() {
    if (!v.thumbs || !v.thumbs.pending || !pendingCount(v.thumbs)) return;
    try {
      const { msg, buffers } = await v.client.request(MSG.GET_THUMBS);
      mergeReply(v.thumbs, decodeThumbsReply(msg, buffers), v.exactLayers);
      v.tiles = null;
      v.draw();
    } catch (err) {
      v.errors.set("thumbs", `could not load the thumbnails computed so far: ${err.message}`);
    }
  }

  stop.add(
    onPush(model, MSG.THUMBS_CHUNK, onChunk, { nBuffers: 2 }),
    listen(v.canvas, matrixHandlers(v)),
    listen(model, {
      "change:thumbs": () => {
        decodeThumbs();
        v.draw();
      },
      "change:layer": v.draw,
      "change:head": v.draw,
      "change:error": v.draw,
      "change:cell_size": v.draw,
    }),
    onWidthChange(v.panel, v.draw),
  );

  try {
    decodeThumbs();
    v.draw();
    catchUp();
  } catch (err) {
    v.errors.set("view", `could not draw the matrix: ${err.message}`);
  }
  return () => stop.dispose();
}

export default { render };
