// AttentionMatrix view: layers x heads grid of max-pooled thumbnails on one canvas.
// Parts: thumbs.js (the thumbnail arrays, chunks and catch-up), draw.js (the canvas),
// input.js (mouse and keys). Messages are those of lib/protocol.js.
import { disposer, ensureStyles, h, listen, onWidthChange } from "../lib/dom.js";
import { scaleControls } from "../lib/legend.js";
import { createClient, MSG, onPush } from "../lib/protocol.js";
import { attachViewExport, firstDraw, onTraits, viewState } from "../lib/view.js";
import { draw } from "./draw.js";
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
  d.legendBox = h("div", "aw-legend-box-matrix"); // the colour bar (lib/legend.js)
  d.panel.append(d.title, d.controls, d.legendBox, d.note, d.error, d.canvas);
  el.appendChild(d.panel);
  return d;
}

function render({ model, el }) {
  ensureStyles(el);
  const dom = buildDom(el);
  const v = viewState(model, el, dom, {
    client: createClient(model),
    thumbs: null, // see thumbs.thumbsFromTrait
    tiles: null, // pre-painted ImageData per cell
    lutKey: "",
    lay: null,
    exactLayers: new Set(), // layers received as chunks: a later snapshot never undoes them
  });
  v.draw = () => draw(v);
  // Legend names in compare mode: which colour means which trace is larger.
  v.names = () => [model.get("model_name") || "trace", model.get("compare_name") || "compare"];
  const scaleUi = scaleControls(model);
  v.controls.insertBefore(scaleUi.el, v.controls.firstChild);
  const stop = disposer();
  stop.add(() => v.client.dispose());
  stop.add(
    attachViewExport(v, "matrix", {
      canvases: () => [v.canvas],
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
    v.tiles = null; // a shared scale may change with the new layers: repaint all
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
      ...onTraits(["layer", "head", "error", "cell_size", "cap"], v.draw), // cap: the legend's words (the kernel re-sends thumbs)
      ...onTraits(["scale", "norm"], () => {
        scaleUi.sync();
        v.draw();
      }),
    }),
    onWidthChange(v.panel, v.draw),
  );

  firstDraw(v, "matrix", () => {
    decodeThumbs();
    v.draw();
    catchUp();
  });
  return () => stop.dispose();
}

export default { render };
