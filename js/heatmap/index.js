// AttentionHeatmap view: the selected head's token x token map (canvas) with token
// labels, and a sentence strip coloured by the selected token's row or column.
//
// One view state `v` (below) is shared by the parts: cache.js (maps and tiles, fetching),
// draw.js (the canvas), strip.js (the sentence strip), vision.js (image overlay for vision
// traces) and input.js (mouse and keys). Messages are those of lib/protocol.js.
import { disposer, ensureStyles, h, listen, onWidthChange, setTraits } from "../lib/dom.js";
import { Lru } from "../lib/lru.js";
import { AGGREGATES, createClient } from "../lib/protocol.js";
import { attachViewExport, firstDraw, onTraits, viewState } from "../lib/view.js";
import { stripAxis } from "../lib/vision.js";
import { viewFromZoom, zoomFromView } from "../lib/zoom.js";
import { createMapCache, ensureMap, listenForPushes, preload } from "./cache.js";
import { draw } from "./draw.js";
import { mapHandlers, zoomStep } from "./input.js";
import { buildStrip } from "./strip.js";
import { scaleControls } from "../lib/legend.js";
import { decode } from "../lib/codec.js";
import { decodeVision, visionHandlers } from "./vision.js";

/** The panel's elements. */
function buildDom(el) {
  const d = {};
  d.panel = h("div", "aw-panel aw-heatmap");
  d.title = h("div", "aw-title");
  d.controls = h("div", "aw-controls");
  d.btnFrom = h("button", "aw-dir-from", "from token");
  d.btnTo = h("button", "aw-dir-to", "to token");
  d.btnFrom.title = "strip: attention the selected token pays to each token (its row)";
  d.btnTo.title = "strip: attention each token pays to the selected token (its column)";
  // One button per aggregate ("mean", "max"): a second click returns to the last head.
  d.aggButtons = Object.fromEntries(AGGREGATES.map((agg) => [agg, h("button", `aw-agg-${agg}`, `${agg} of heads`)]));
  d.btnZoomIn = h("button", "aw-zoom-in", "zoom +");
  d.btnZoomOut = h("button", "aw-zoom-out", "zoom \u2212");
  d.btnZoomReset = h("button", "aw-zoom-reset", "whole map");
  d.btnZoomIn.title = "zoom in around the selected token (or drag a rectangle on the map; keys + - 0)";
  d.btnZoomOut.title = "zoom out";
  d.btnZoomReset.title = "show the whole map";
  // Value weighting (traces captured with contributions=True): shown only when available.
  d.btnWeight = h("button", "aw-weighting", "value-weighted");
  d.btnWeight.title =
    "map and strip: attention x ||f_h(x_j)|| (the norm of what the head moves from each key), rows normalised";
  d.status = h("span", "aw-sub aw-status");
  d.controls.append(
    d.btnFrom, d.btnTo, ...Object.values(d.aggButtons), d.btnWeight, d.btnZoomIn, d.btnZoomOut, d.btnZoomReset, d.status,
  );
  d.note = h("div", "aw-sub aw-note");
  d.error = h("div", "aw-error");
  d.canvas = h("canvas", "aw-canvas");
  d.canvas.tabIndex = 0;
  d.band = h("div", "aw-zoom-band");
  d.band.style.cssText =
    "position:absolute;display:none;pointer-events:none;border:1px dashed var(--jp-brand-color1, #1976d2);" +
    "background:rgba(25,118,210,0.08);";
  d.strip = h("div", "aw-strip");
  d.strip.setAttribute("role", "listbox");
  // Vision traces: the image with the strip's values over its patches; special tokens as chips.
  d.vision = h("div", "aw-vision");
  d.vision.style.cssText = "display:none;gap:10px;align-items:flex-start;margin-top:6px;flex-wrap:wrap;";
  d.visionCanvas = h("canvas", "aw-canvas aw-vision-canvas");
  const side = h("div", "aw-vision-side");
  side.style.cssText = "display:flex;flex-direction:column;gap:6px;max-width:260px;";
  d.chips = h("div", "aw-strip aw-vision-special");
  d.chips.style.marginTop = "0";
  d.visionNote = h("div", "aw-sub aw-vision-note");
  d.btnStrip = h("button", "aw-strip-toggle", "token strip");
  d.btnStrip.title = "also list every token as a sentence strip under the image";
  d.btnStrip.style.cssText =
    "font:inherit;padding:1px 8px;cursor:pointer;align-self:flex-start;background:var(--jp-layout-color1, #fff);" +
    "color:inherit;border:1px solid var(--jp-border-color1, #bdbdbd);border-radius:3px;";
  side.append(d.chips, d.visionNote, d.btnStrip);
  d.vision.append(d.visionCanvas, side);
  d.mapLegend = h("div", "aw-legend-slot aw-map-legend"); // colour bars (lib/legend.js), see draw.js
  d.stripLegend = h("div", "aw-legend-slot aw-strip-legend");
  d.panel.append(d.title, d.controls, d.mapLegend, d.note, d.error, d.canvas, d.band, d.vision, d.stripLegend, d.strip);
  el.appendChild(d.panel);
  return d;
}

/** The view state: elements, caches, what is shown, and the model's derived values. */
function createState(model, el, dom) {
  const v = viewState(model, el, dom, {
    client: createClient(model),
    maps: createMapCache(),
    inflight: new Map(), // key -> pending request
    mapBusy: null, // the key of the one whole-map request in flight (backpressure), else null
    mapAgain: false, // the selection changed while it was in flight
    images: new Lru(8), // painted offscreen canvases per map key + theme
    strips: new Lru(64), // exact strip values fetched for pooled maps: "layer:head|dir|token"
    stripFailed: new Set(),
    current: null, // the record drawn (see cache.makeRecord)
    wanted: "", // the key of the record the selection asks for
    lastHead: 0, // the numeric head to return to after "mean"/"max"
    lay: null,
    spans: [],
    stripLabels: null, // the tokens the strip lists now (keys or queries for cross-attention)
    labelMemo: {}, // widest label per axis ("rows", "keys"), see draw.js
    showStrip: false, // vision traces: the token strip under the image, on request
    vgrid: null, // vision traces: {rows, cols, offset} of the patch grid, else null
    visionImg: null, // the decoded image as an offscreen canvas {canvas, w, h}
    visionLay: null,
    visionHover: null,
    chipSpans: [],
  });
  v.nTokens = () => model.get("tokens").length;
  /** Cross-attention: rows are the queries (`tokens`), columns the keys (`key_tokens`). */
  v.isCross = () => (model.get("key_tokens") || []).length > 0;
  v.keyLabels = () => (v.isCross() ? model.get("key_tokens") : model.get("tokens"));
  v.nKeys = () => v.keyLabels().length;
  /** What the strip is about: {subject, labels, axis, selected} (see lib/vision.js). */
  v.axis = (dir = model.get("direction")) =>
    stripAxis({
      cross: v.isCross(),
      dir,
      token: model.get("token"),
      keyToken: model.get("key_token"),
      tokens: model.get("tokens"),
      keyTokens: v.keyLabels(),
    });
  v.currentView = () => viewFromZoom(model.get("zoom"), v.nTokens(), v.nKeys());
  v.setView = (view) => setTraits(model, { zoom: view ? zoomFromView(view, v.nTokens(), v.nKeys()) : [] });
  v.draw = () => draw(v);
  v.selectToken = (i) => {
    setTraits(model, { token: i });
    v.draw();
  };
  return v;
}

function render({ model, el }) {
  ensureStyles(el);
  const v = createState(model, el, buildDom(el));
  const stop = disposer();
  stop.add(() => v.client.dispose());
  stop.add(
    attachViewExport(v, "heatmap", {
      canvases: () => [v.canvas, v.visionCanvas], // the image overlay only when shown (vision traces)
      selection: () => ({ layer: model.get("layer"), head: model.get("head"), token: model.get("token") }),
    }),
  );
  stop.add(listenForPushes(v));

  const input = mapHandlers(v);
  const vis = visionHandlers(v);
  stop.add(
    listen(v.canvas, input.canvas),
    listen(window, input.window),
    listen(v.strip, input.strip),
    listen(v.visionCanvas, vis.canvas),
    listen(v.chips, vis.chips),
  );
  const aggregate = (agg) => () => {
    const head = model.get("head");
    if (typeof head === "number") v.lastHead = head;
    setTraits(model, { head: head === agg ? v.lastHead : agg });
  };
  const buttons = [
    [v.btnStrip, () => ((v.showStrip = !v.showStrip), v.draw())],
    [v.btnFrom, () => setTraits(model, { direction: "from" })],
    [v.btnTo, () => setTraits(model, { direction: "to" })],
    ...AGGREGATES.map((agg) => [v.aggButtons[agg], aggregate(agg)]),
    [v.btnWeight, () => setTraits(model, { weighting: model.get("weighting") === "value" ? "attention" : "value" })],
    [v.btnZoomIn, () => zoomStep(v, 2)],
    [v.btnZoomOut, () => zoomStep(v, 0.5)],
    [v.btnZoomReset, () => v.setView(null)],
  ];
  for (const [btn, fn] of buttons) stop.add(listen(btn, { click: fn }));

  // A burst of selection updates (a loop in Python) is drawn once per animation frame, not
  // once per update: the page keeps up however fast the kernel changes the selection.
  let frame = 0;
  const onSelection = () => {
    if (frame) return;
    const run = () => {
      frame = 0;
      ensureMap(v);
    };
    frame = typeof requestAnimationFrame === "function" ? requestAnimationFrame(run) : setTimeout(run, 0);
  };
  stop.add(() => frame && (typeof cancelAnimationFrame === "function" ? cancelAnimationFrame(frame) : clearTimeout(frame)));
  const onTokens = () => {
    v.maps.clear();
    v.images.clear();
    v.strips.clear();
    v.stripFailed.clear();
    v.labelMemo = {};
    v.current = null;
    decodeVision(v);
    buildStrip(v);
    preload(v);
    ensureMap(v);
  };
  const showWeighting = () => {
    v.btnWeight.style.display = model.get("value_weighting") ? "" : "none";
    v.btnWeight.setAttribute("aria-pressed", String(model.get("weighting") === "value"));
  };
  // Every map held (and any reply in flight: see v.gen in cache.js) is of the old weighting.
  const onWeighting = () => {
    v.gen = (v.gen || 0) + 1;
    v.maps.clear();
    v.inflight.clear();
    v.images.clear();
    v.strips.clear();
    v.stripFailed.clear();
    v.current = null;
    showWeighting();
    // After setTraits' save_changes: the kernel must see the new weighting before the request.
    queueMicrotask(() => ensureMap(v));
  };
  const onVision = () => {
    decodeVision(v);
    v.draw();
  };
  stop.add(
    listen(model, {
      ...onTraits(["layer", "head", "zoom"], onSelection),
      ...onTraits(["tokens", "key_tokens"], onTokens),
      ...onTraits(["image", "patch_grid", "patch_offset"], onVision),
      ...onTraits(["weighting"], onWeighting),
      ...onTraits(["value_weighting"], showWeighting),
      ...onTraits(["token", "key_token", "direction", "error", "size"], v.draw),
    }),
  );
  stop.add(onWidthChange(v.panel, v.draw));
  // Colour scale and normalisation (traits `scale`, `norm`; heads' maxima in `head_max`).
  const scaleUi = scaleControls(model);
  v.controls.insertBefore(scaleUi.el, v.status);
  v.headMax = () => {
    const t = model.get("head_max");
    if (!t || !t.data) return null;
    if (v.headMaxSrc !== t) {
      v.headMaxSrc = t;
      v.headMaxArr = decode(t).data;
    }
    return v.headMaxArr;
  };
  stop.add(
    listen(model, onTraits(["scale", "norm", "head_max", "cap"], () => {
      scaleUi.sync();
      v.draw();
    })),
  );

  firstDraw(v, "heatmap", () => {
    showWeighting();
    decodeVision(v);
    buildStrip(v);
    preload(v);
    ensureMap(v);
  });

  return () => stop.dispose();
}

export default { render };
