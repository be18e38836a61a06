// AttentionHeatmap view: the selected head's token x token map (canvas) with token
// labels, and a sentence strip coloured by the selected token's row or column.
import { decode, maxOf } from "./lib/codec.js";
import { lutCss, lutIndex, paint, textOn, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, onWidthChange, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { printable, truncate } from "./lib/layout.js";
import { attachExport } from "./lib/exportbar.js";
import { createClient, Lru, mapKey } from "./lib/requests.js";
import {
  covers,
  formatView,
  hitView,
  isFull,
  mapBox,
  rangeLabels,
  recordExtent,
  rectToView,
  sourceRect,
  tileKey,
  valueAt,
  viewFromZoom,
  viewLayout,
  zoomBy,
  zoomFromView,
} from "./lib/zoom.js";
import {
  hitPatch,
  imageLayout,
  paintOverlay,
  patchGrid,
  patchToken,
  patchValues,
  stripAxis,
  tokenPatch,
} from "./lib/vision.js";

/** Colour a token chip by its value on the 0..vmax scale (null: uncoloured, clickable). */
function colourToken(el, value, vmax, lut) {
  if (value === null || value === undefined) {
    el.style.background = "";
    el.style.color = "";
    delete el.dataset.value;
    el.title = "click to select this token";
    return;
  }
  const idx = lutIndex(value, vmax);
  el.style.background = lutCss(lut, idx);
  el.style.color = textOn(lut, idx);
  el.dataset.value = value.toFixed(4);
  el.title = value.toFixed(4);
}

function render({ model, el }) {
  ensureStyles(el);
  const panel = h("div", "aw-panel aw-heatmap");
  const title = h("div", "aw-title");
  const controls = h("div", "aw-controls");
  const btnFrom = h("button", "aw-dir-from", "from token");
  const btnTo = h("button", "aw-dir-to", "to token");
  btnFrom.title = "strip: attention the selected token pays to each token (its row)";
  btnTo.title = "strip: attention each token pays to the selected token (its column)";
  const btnMean = h("button", "aw-agg-mean", "mean of heads");
  const btnMax = h("button", "aw-agg-max", "max of heads");
  const btnZoomIn = h("button", "aw-zoom-in", "zoom +");
  const btnZoomOut = h("button", "aw-zoom-out", "zoom \u2212");
  const btnZoomReset = h("button", "aw-zoom-reset", "whole map");
  btnZoomIn.title = "zoom in around the selected token (or drag a rectangle on the map; keys + - 0)";
  btnZoomOut.title = "zoom out";
  btnZoomReset.title = "show the whole map";
  const status = h("span", "aw-sub aw-status");
  controls.append(btnFrom, btnTo, btnMean, btnMax, btnZoomIn, btnZoomOut, btnZoomReset, status);
  const note = h("div", "aw-sub aw-note");
  const error = h("div", "aw-error");
  const canvas = h("canvas", "aw-canvas");
  canvas.tabIndex = 0;
  const band = h("div", "aw-zoom-band");
  band.style.cssText =
    "position:absolute;display:none;pointer-events:none;border:1px dashed var(--jp-brand-color1, #1976d2);" +
    "background:rgba(25,118,210,0.08);";
  const strip = h("div", "aw-strip");
  strip.setAttribute("role", "listbox");
  // Vision traces: the image with the strip's values over its patches; special tokens as chips.
  const vision = h("div", "aw-vision");
  vision.style.cssText = "display:none;gap:10px;align-items:flex-start;margin-top:6px;flex-wrap:wrap;";
  const visionCanvas = h("canvas", "aw-canvas aw-vision-canvas");
  const visionSide = h("div", "aw-vision-side");
  visionSide.style.cssText = "display:flex;flex-direction:column;gap:6px;max-width:260px;";
  const chips = h("div", "aw-strip aw-vision-special");
  chips.style.marginTop = "0";
  const visionNote = h("div", "aw-sub aw-vision-note");
  const btnStrip = h("button", "aw-strip-toggle", "token strip");
  btnStrip.title = "also list every token as a sentence strip under the image";
  btnStrip.style.cssText =
    "font:inherit;padding:1px 8px;cursor:pointer;align-self:flex-start;background:var(--jp-layout-color1, #fff);" +
    "color:inherit;border:1px solid var(--jp-border-color1, #bdbdbd);border-radius:3px;";
  visionSide.append(chips, visionNote, btnStrip);
  vision.append(visionCanvas, visionSide);
  panel.append(title, controls, note, error, canvas, band, vision, strip);
  el.appendChild(panel);
  const tip = tooltip(panel);

  const client = createClient(model);
  const stopExport = attachExport({
    model,
    panel,
    controls,
    kind: "heatmap",
    canvases: () => [canvas, visionCanvas], // the image overlay only when shown (vision traces)
    redraw: () => draw(),
    selection: () => ({ layer: model.get("layer"), head: model.get("head"), token: model.get("token") }),
  });
  // Maps and tiles by key. Overviews of long texts are 1M values (4 MB) each: fewer of those.
  const small = new Lru(48);
  const big = new Lru(6);
  const cache = {
    get: (k) => small.get(k) || big.get(k),
    set: (k, rec) => (rec.data.length > 1 << 18 ? big : small).set(k, rec),
    clear: () => {
      small.map.clear();
      big.map.clear();
    },
  };
  const pinned = new Map(); // maps embedded in the state (exported pages): never evicted
  const inflight = new Map(); // key -> pending request
  let fetchError = "";
  let lastHead = 0; // the numeric head to return to after "mean"/"max"
  const images = new Lru(8); // painted offscreen canvases per map key + theme
  // A record: {key, map ("layer:head"), data, rows, cols, r0, c0, step, tile, max}; value (i, j)
  // covers tokens r0 + i*step.. x c0 + j*step.. (the block max when step > 1: an overview).
  let current = null;
  let lay = null;
  let hover = null;
  let spans = [];
  let wanted = "";
  const strips = new Lru(64); // exact strip values fetched for pooled maps: "layer:head|dir|token"
  const stripFailed = new Set();
  let drag = null; // {x, y} where a drag on the map started
  let suppressClick = false;
  let labelMemo = { tokens: null, font: "", width: 0 };
  let keyLabelMemo = { tokens: null, font: "", width: 0 }; // cross-attention: key labels on top
  let stripLabels = null; // the tokens the strip lists now (keys or queries for cross-attention)
  let showStrip = false; // vision traces: the token strip under the image, on request
  let vgrid = null; // vision traces: {rows, cols, offset} of the patch grid, else null
  let visionImg = null; // the decoded image as an offscreen canvas {canvas, w, h}
  let visionLay = null;
  let visionHover = null;
  let chipSpans = [];

  function record(key, map, packed, data, extra = {}) {
    const arr = decode(packed, data);
    const rows = arr.shape[0];
    const cols = arr.shape.length > 1 ? arr.shape[1] : 1;
    const step = Number(packed.step || extra.step || 1);
    return { key, map, data: arr.data, rows, cols, r0: extra.r0 || 0, c0: extra.c0 || 0, step, tile: !!extra.tile, max: maxOf(arr.data) };
  }

  function store(layer, head, packed, data, pin = false) {
    const key = mapKey(layer, head);
    const rec = record(key, key, packed, data);
    if (pin) pinned.set(rec.key, rec);
    else cache.set(rec.key, rec);
    return rec;
  }

  // Maps the kernel pushes with a selection change (ahead of the state update).
  const onPushed = (msg, buffers) => {
    if (!msg || msg.type !== "map" || !msg.push || !buffers || !buffers.length) return;
    try {
      store(msg.layer, msg.head, msg, buffers[0]);
    } catch (err) {
      fetchError = `could not read a map sent by the kernel: ${err.message}`;
    }
  };
  model.on("msg:custom", onPushed);

  function storeTile(msg, data) {
    const view = { r0: msg.r0, r1: msg.r1, c0: msg.c0, c1: msg.c1 };
    const rec = record(tileKey(msg.layer, msg.head, view), mapKey(msg.layer, msg.head), msg, data, {
      r0: msg.r0,
      c0: msg.c0,
      step: msg.step,
      tile: true,
    });
    cache.set(rec.key, rec);
    return rec;
  }

  function nTokens() {
    return model.get("tokens").length;
  }

  /** Cross-attention: rows are the queries (`tokens`), columns the keys (`key_tokens`). */
  function isCross() {
    return (model.get("key_tokens") || []).length > 0;
  }

  function keyLabels() {
    return isCross() ? model.get("key_tokens") : model.get("tokens");
  }

  function nKeys() {
    return keyLabels().length;
  }

  /** What the strip is about: {subject, labels, axis, selected} (see lib/vision.js). */
  function axis(dir = model.get("direction")) {
    return stripAxis({
      cross: isCross(),
      dir,
      token: model.get("token"),
      keyToken: model.get("key_token"),
      tokens: model.get("tokens"),
      keyTokens: keyLabels(),
    });
  }

  function currentView() {
    return viewFromZoom(model.get("zoom"), nTokens(), nKeys());
  }

  function setView(view) {
    setTraits(model, { zoom: view ? zoomFromView(view, nTokens(), nKeys()) : [] });
  }

  /** One request per key, however many change events ask for it. */
  function fetchOnce(key, type, payload) {
    let pending = inflight.get(key);
    if (!pending) {
      pending = client.request(type, payload);
      inflight.set(key, pending);
      pending.then(
        () => inflight.delete(key),
        () => inflight.delete(key),
      );
    }
    return pending;
  }

  function preload() {
    const init = model.get("initial_map");
    if (init && init.data) store(init.layer, init.head, init);
    const pre = model.get("preloaded") || {};
    for (const [key, packed] of Object.entries(pre)) {
      const [layer, head] = key.split(":");
      store(layer, head, packed, undefined, true);
    }
  }

  function buildStrip(tokens = axis().labels, name = axis().axis) {
    strip.replaceChildren();
    // Special-token marks are known for the queries (`special`), not for cross-attention keys.
    const special = name === "keys" ? [] : model.get("special") || [];
    stripLabels = tokens;
    strip.dataset.axis = name;
    spans = tokens.map((tok, i) => {
      const s = h("span", special[i] ? "aw-tok aw-special" : "aw-tok", tok);
      s.dataset.index = String(i);
      s.setAttribute("role", "option");
      strip.appendChild(s);
      return s;
    });
  }

  async function ensureMap() {
    const layer = model.get("layer");
    const head = model.get("head");
    const key = mapKey(layer, head);
    if (typeof head === "number") lastHead = head;
    const view = currentView();
    const full = isFull(view, nTokens(), nKeys());
    // A full-resolution map (short texts) serves every zoom locally; a max-pooled overview
    // (long texts) only the whole map: a zoomed region is fetched as a tile.
    const base = pinned.get(key) || cache.get(key);
    const useBase = base && (full || covers(base, view));
    const want = useBase || full ? key : tileKey(layer, head, view);
    wanted = want;
    const hit = useBase ? base : pinned.get(want) || cache.get(want);
    if (hit) {
      current = hit;
      status.textContent = "";
      fetchError = "";
      draw();
      return;
    }
    // While a tile loads, the overview of the same head (if any) is shown zoomed: blurry,
    // labelled as an overview, and at once.
    if (base && (!current || current.map !== key || !covers(current, view))) {
      current = base;
      draw();
    }
    status.textContent = "loading\u2026";
    try {
      const payload = full ? { layer, head } : { layer, head, r0: view.r0, r1: view.r1, c0: view.c0, c1: view.c1 };
      const { msg, buffers } = await fetchOnce(want, full ? "get_map" : "get_tile", payload);
      const rec = cache.get(want) || (full ? store(msg.layer, msg.head, msg, buffers[0]) : storeTile(msg, buffers[0]));
      if (rec.key === wanted) {
        current = rec;
        status.textContent = "";
        fetchError = "";
        draw();
      }
    } catch (err) {
      if (want === wanted) {
        status.textContent = "";
        const where = full ? "" : ` (tokens ${formatView(view)})`;
        fetchError = `could not load layer ${layer}, head ${head}${where}: ${err.message}`;
        error.textContent = fetchError;
      }
    }
  }

  function mapImage(rec, bg) {
    const k = `${rec.key}|${bg}`;
    let img = images.get(k);
    if (img) return img;
    img = document.createElement("canvas");
    img.width = rec.cols;
    img.height = rec.rows;
    const id = new ImageData(rec.cols, rec.rows);
    paint(rec.data, rec.max, themeLut(bg), id.data);
    img.getContext("2d").putImageData(id, 0, 0);
    images.set(k, img);
    return img;
  }

  /** The token's exact row (dir "from") or column ("to") from a full-resolution record
   * that spans it end to end, else null. */
  function localStrip(rec, token, dir) {
    if (!rec || (rec.step || 1) !== 1) return null;
    const nq = nTokens();
    const nk = nKeys();
    const e = recordExtent(rec);
    if (dir === "from") {
      if (e.c0 > 0 || e.c1 < nk || token < e.r0 || token >= e.r1) return null;
      const i = token - e.r0;
      return Float32Array.from(rec.data.subarray(i * rec.cols, i * rec.cols + nk));
    }
    if (e.r0 > 0 || e.r1 < nq || token < e.c0 || token >= e.c1) return null;
    const j = token - e.c0;
    const out = new Float32Array(nq);
    for (let i = 0; i < nq; i++) out[i] = rec.data[i * rec.cols + j];
    return out;
  }

  function stripKey(token, dir) {
    return `${mapKey(model.get("layer"), model.get("head"))}|${dir}|${token}`;
  }

  function stripValues(token, dir) {
    const key = mapKey(model.get("layer"), model.get("head"));
    if (current && current.map === key) {
      const v = localStrip(current, token, dir);
      if (v) return v;
    }
    const base = pinned.get(key) || cache.get(key);
    return localStrip(base, token, dir) || strips.get(stripKey(token, dir)) || null;
  }

  /** Pooled maps cannot give exact strip values: fetch the row / column as a 1 x T tile. */
  async function fetchStrip(token, dir) {
    const k = stripKey(token, dir);
    if (stripFailed.has(k)) return;
    const layer = model.get("layer");
    const head = model.get("head");
    const payload =
      dir === "from"
        ? { layer, head, r0: token, r1: token + 1, c0: 0, c1: nKeys() }
        : { layer, head, r0: 0, r1: nTokens(), c0: token, c1: token + 1 };
    try {
      const { msg, buffers } = await fetchOnce(`strip|${k}`, "get_tile", payload);
      strips.set(k, decode(msg, buffers[0]).data);
      if (stripKey(axis().subject, model.get("direction")) === k) draw();
    } catch (err) {
      stripFailed.add(k);
      fetchError = `could not load the strip for token ${token}: ${err.message}`;
      error.textContent = fetchError;
    }
  }

  function labelWidth(ctx, tokens, font, keys = false) {
    let memo = keys ? keyLabelMemo : labelMemo;
    if (memo.tokens !== tokens || memo.font !== font) {
      let w = 0;
      // Measure at most ~2000 labels: beyond that the widest is within a hair of the max.
      const stride = Math.max(1, Math.floor(tokens.length / 2000));
      for (let i = 0; i < tokens.length; i += stride) w = Math.max(w, ctx.measureText(truncate(printable(tokens[i]), 14)).width);
      memo = { tokens, font, width: w };
      if (keys) keyLabelMemo = memo;
      else labelMemo = memo;
    }
    return memo.width;
  }

  function draw() {
    const th = theme(panel);
    const tokens = model.get("tokens");
    const n = tokens.length;
    const cross = isCross();
    const keys = keyLabels();
    const nk = keys.length;
    const keyTok = cross ? model.get("key_token") : null;
    const layer = model.get("layer");
    const head = model.get("head");
    const token = model.get("token");
    const dir = model.get("direction");
    const headText = typeof head === "number" ? `head ${head}` : `${head} of heads`;
    const view = currentView();
    const full = isFull(view, n, nk);
    const zoomText = full ? "" : ` \u00b7 queries ${view.r0}\u2013${view.r1 - 1} \u00d7 keys ${view.c0}\u2013${view.c1 - 1}`;
    title.textContent = `layer ${layer} \u00b7 ${headText}${zoomText}`;
    btnFrom.setAttribute("aria-pressed", String(dir === "from"));
    btnTo.setAttribute("aria-pressed", String(dir === "to"));
    btnMean.setAttribute("aria-pressed", String(head === "mean"));
    btnMax.setAttribute("aria-pressed", String(head === "max"));
    error.textContent = model.get("error") || fetchError;
    if (!current) return;

    const ctx0 = canvas.getContext("2d");
    const font = 11;
    ctx0.font = `${font}px ${th.code}`;
    const labelW = labelWidth(ctx0, tokens, ctx0.font);
    const left = Math.ceil(Math.min(110, labelW) + 8);
    const avail = (panel.clientWidth || el.clientWidth || 720) - left - 12;
    const size = model.get("size") || Math.max(120, Math.min(avail, 640, Math.max(n, nk) * 36));
    // Cross-attention: key labels on top get their own height, and cells stay square.
    const top = cross ? Math.ceil(Math.min(110, labelWidth(ctx0, keys, ctx0.font, true)) + 8) : left;
    const box = cross ? mapBox(view.r1 - view.r0, view.c1 - view.c0, size) : { w: size, h: size };
    lay = viewLayout({ view, size, left, top, boxW: box.w, boxH: box.h });
    const bw = lay.sizeW;
    const bh = lay.sizeH;
    const ctx = sizeCanvas(canvas, lay.width, lay.height);
    ctx.fillStyle = th.background;
    ctx.fillRect(0, 0, lay.width, lay.height);
    ctx.imageSmoothingEnabled = false;
    const src = sourceRect(current, view);
    if (src) {
      const d = src.dst;
      ctx.drawImage(
        mapImage(current, th.background),
        src.sx, src.sy, src.sw, src.sh,
        lay.left + d.x * bw, lay.top + d.y * bh, d.w * bw, d.h * bh,
      );
    }
    const step = current.step || 1;
    const exact = covers(current, view);
    note.textContent = exact
      ? ""
      : step > 1
        ? `overview: each cell is the max of ${step}\u00d7${step} token pairs (drag a rectangle or use zoom + for full resolution)`
        : "loading the zoomed region\u2026";

    // Selected token: its row (dir "from") or column (dir "to"); hover: a crosshair.
    // Cross-attention: the subject is the query `token` ("from") or the key `key_token` ("to").
    const cw = lay.cellW;
    const ch = lay.cellH;
    const ax = axis(dir);
    const subj = ax.subject;
    if (subj !== null && subj !== undefined && subj < (dir === "from" ? n : nk)) {
      ctx.strokeStyle = th.warn;
      ctx.lineWidth = 2;
      if (dir === "from" && subj >= view.r0 && subj < view.r1) {
        ctx.strokeRect(lay.left, lay.top + (subj - view.r0) * ch, bw, Math.max(ch, 1));
      } else if (dir === "to" && subj >= view.c0 && subj < view.c1) {
        ctx.strokeRect(lay.left + (subj - view.c0) * cw, lay.top, Math.max(cw, 1), bh);
      }
    }
    const other = cross ? ax.selected : null; // cross: the other axis' selection, dashed
    if (other !== null && other !== undefined) {
      ctx.strokeStyle = th.warn;
      ctx.lineWidth = 1;
      ctx.setLineDash([3, 2]);
      if (dir === "from" && other >= view.c0 && other < view.c1) {
        ctx.strokeRect(lay.left + (other - view.c0) * cw, lay.top, Math.max(cw, 1), bh);
      } else if (dir === "to" && other >= view.r0 && other < view.r1) {
        ctx.strokeRect(lay.left, lay.top + (other - view.r0) * ch, bw, Math.max(ch, 1));
      }
      ctx.setLineDash([]);
    }
    if (hover && hover.kind === "cell") {
      ctx.strokeStyle = th.accent;
      ctx.lineWidth = 1;
      ctx.strokeRect(
        lay.left + (hover.col - view.c0) * cw, lay.top + (hover.row - view.r0) * ch, Math.max(cw, 1), Math.max(ch, 1),
      );
    }

    // Labels, thinned so they never overlap; selection and hover always labelled.
    const given = (x) => x !== null && x !== undefined;
    const always = [token, hover && hover.row, hover && hover.col].filter(given);
    ctx.font = `${font}px ${th.code}`;
    ctx.textBaseline = "middle";
    const strong = (i) => i === token || (hover && (i === hover.row || i === hover.col));
    // Cross-attention: rows and columns are different tokens, each axis with its own selection.
    const rowAlways = cross ? [token, hover && hover.row].filter(given) : always;
    const colAlways = cross ? [keyTok, hover && hover.col].filter(given) : always;
    const strongRow = cross ? (i) => i === token || (hover && i === hover.row) : strong;
    const strongCol = cross ? (i) => i === keyTok || (hover && i === hover.col) : strong;
    for (const i of rangeLabels(view.r0, view.r1, ch, font, rowAlways)) {
      ctx.fillStyle = strongRow(i) ? th.foreground : th.muted;
      ctx.textAlign = "right";
      ctx.fillText(truncate(printable(tokens[i]), 14), lay.left - 4, lay.top + (i - view.r0 + 0.5) * ch);
    }
    for (const i of rangeLabels(view.c0, view.c1, cw, font, colAlways)) {
      ctx.fillStyle = strongCol(i) ? th.foreground : th.muted;
      ctx.save();
      ctx.translate(lay.left + (i - view.c0 + 0.5) * cw, lay.top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(truncate(printable(keys[i]), 14), 0, 0);
      ctx.restore();
    }
    ctx.fillStyle = th.muted;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.font = `10px ${th.font}`;
    ctx.fillText(`max ${current.max.toFixed(3)}`, 2, 2);

    drawStrip(th, token, dir);
    // Map geometry in canvas CSS px, for tests and tools that point at a cell.
    canvas.dataset.left = String(lay.left);
    canvas.dataset.top = String(lay.top);
    canvas.dataset.size = String(size);
    canvas.dataset.width = String(bw); // the map's box: size x size unless cross-attention
    canvas.dataset.height = String(bh);
    panel.dataset.cross = cross ? "1" : "0";
    panel.dataset.keys = String(nk);
    panel.dataset.keyToken = given(keyTok) ? String(keyTok) : "";
    panel.dataset.stripAxis = ax.axis;
    panel.dataset.shown = current.map;
    panel.dataset.zoom = formatView(view);
    panel.dataset.step = String(exact ? 1 : step);
    panel.dataset.source = current.tile ? "tile" : step > 1 ? "overview" : "map";
    panel.dataset.token = token === null || token === undefined ? "" : String(token);
    panel.dataset.direction = dir;
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  function drawStrip(th, _token, dir) {
    // Self-attention: the subject `token` over the tokens. Cross-attention: "from" lists the
    // keys coloured by the query `token`'s row, "to" the queries by the `key_token`'s column.
    const ax = axis(dir);
    if (stripLabels !== ax.labels || spans.length !== ax.labels.length) buildStrip(ax.labels, ax.axis);
    const lut = themeLut(th.background);
    const subj = ax.subject;
    const has = subj !== null && subj !== undefined && subj < (dir === "from" ? nTokens() : nKeys());
    const vals = has ? stripValues(subj, dir) : null;
    if (has && !vals) fetchStrip(subj, dir);
    const vmax = vals ? maxOf(vals) : 0;
    const sel = ax.selected;
    drawVision(th, lut, vals, has ? subj : null, dir);
    spans.forEach((s, i) => {
      s.classList.toggle("aw-selected", i === sel);
      s.setAttribute("aria-selected", String(i === sel));
      colourToken(s, vals ? vals[i] : null, vmax, lut);
    });
  }

  function selectToken(i) {
    setTraits(model, { token: i });
    draw();
  }

  /**
   * Cross-attention clicks. A query (row label, or a query in the strip) becomes `token` and
   * the strip shows its row ("from"); a key (column label, or a key in the strip) becomes
   * `key_token` and the strip shows its column ("to"); a cell sets both, keeping the direction.
   */
  function selectCross(kind, i, j) {
    if (kind === "cell") setTraits(model, { token: i, key_token: j });
    else if (kind === "row") setTraits(model, { token: i, direction: "from" });
    else setTraits(model, { key_token: i, direction: "to" });
    draw();
  }

  // -- vision traces: the image, the overlay over its patches, the special tokens as chips --
  function decodeVision() {
    visionImg = null;
    vgrid = patchGrid(model.get("patch_grid"), model.get("patch_offset"), nTokens());
    const img = model.get("image");
    if (!vgrid || !img || !img.data) return;
    const d = decode(img); // uint8 [H, W, 3]
    const [ih, iw] = d.shape;
    const c = document.createElement("canvas");
    c.width = iw;
    c.height = ih;
    const id = new ImageData(iw, ih);
    for (let p = 0, q = 0; p < iw * ih; p++, q += 3) {
      id.data[p * 4] = d.data[q];
      id.data[p * 4 + 1] = d.data[q + 1];
      id.data[p * 4 + 2] = d.data[q + 2];
      id.data[p * 4 + 3] = 255;
    }
    c.getContext("2d").putImageData(id, 0, 0);
    visionImg = { canvas: c, w: iw, h: ih };
    chipSpans = [];
  }

  function buildChips() {
    const tokens = model.get("tokens");
    chips.replaceChildren();
    chipSpans = [];
    for (let i = 0; i < vgrid.offset; i++) {
      const s = h("span", "aw-tok aw-special aw-chip", tokens[i]);
      s.dataset.index = String(i);
      chips.appendChild(s);
      chipSpans.push(s);
    }
  }

  function drawVision(th, lut, vals, subj, dir) {
    if (!visionImg || !vgrid) {
      vision.style.display = "none";
      strip.style.display = "";
      delete panel.dataset.overlay;
      delete panel.dataset.patchGrid;
      return;
    }
    vision.style.display = "flex";
    strip.style.display = showStrip ? "" : "none";
    btnStrip.setAttribute("aria-pressed", String(showStrip));
    btnStrip.textContent = showStrip ? "hide token strip" : "token strip";
    const maxW = Math.max(120, Math.min(360, (panel.clientWidth || el.clientWidth || 720) - 200));
    visionLay = imageLayout({ imgW: visionImg.w, imgH: visionImg.h, rows: vgrid.rows, cols: vgrid.cols, maxW, maxH: 360 });
    const vl = visionLay;
    const ctx = sizeCanvas(visionCanvas, vl.width, vl.height);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(visionImg.canvas, 0, 0, vl.width, vl.height);
    let pmax = 0;
    if (vals) {
      const pv = patchValues(vals, vgrid);
      pmax = pv.max;
      const ov = document.createElement("canvas");
      ov.width = vgrid.cols;
      ov.height = vgrid.rows;
      const id = new ImageData(vgrid.cols, vgrid.rows);
      paintOverlay(pv.data, pv.max, lut, id.data);
      ov.getContext("2d").putImageData(id, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(ov, 0, 0, vl.width, vl.height);
    }
    const at = subj === null || subj === undefined ? null : tokenPatch(subj, vgrid);
    if (at) {
      ctx.strokeStyle = th.warn;
      ctx.lineWidth = 2;
      ctx.strokeRect(at.col * vl.cellW + 1, at.row * vl.cellH + 1, Math.max(1, vl.cellW - 2), Math.max(1, vl.cellH - 2));
    }
    if (visionHover) {
      ctx.strokeStyle = th.accent;
      ctx.lineWidth = 1;
      ctx.strokeRect(visionHover.col * vl.cellW + 0.5, visionHover.row * vl.cellH + 0.5, vl.cellW - 1, vl.cellH - 1);
    }
    // Special tokens ([CLS], ...) have no patch: chips coloured on the scale of all tokens.
    if (chipSpans.length !== vgrid.offset) buildChips();
    const vmax = vals ? maxOf(vals) : 0;
    chipSpans.forEach((c, i) => {
      c.classList.toggle("aw-selected", i === subj);
      colourToken(c, vals ? vals[i] : null, vmax, lut);
    });
    const tokens = model.get("tokens");
    visionNote.textContent = vals
      ? `${dir === "from" ? "attention from" : "attention to"} ${printable(tokens[subj])} [${subj}] ` +
        `over the ${vgrid.rows}×${vgrid.cols} patches (opacity: 0 … max ${pmax.toFixed(3)}); click a patch`
      : "click a patch or a token to see its attention over the image";
    visionCanvas.dataset.rows = String(vgrid.rows);
    visionCanvas.dataset.cols = String(vgrid.cols);
    visionCanvas.dataset.width = String(vl.width);
    visionCanvas.dataset.height = String(vl.height);
    panel.dataset.overlay = vals ? "1" : "0";
    panel.dataset.patchGrid = `${vgrid.rows}x${vgrid.cols}`;
    panel.dataset.overlayMax = vals ? pmax.toFixed(4) : "";
  }

  const onVisionMove = (ev) => {
    if (!visionLay || !vgrid) return;
    const p = localPoint(visionCanvas, ev);
    const hit = hitPatch(visionLay, p.x, p.y);
    const changed = JSON.stringify(hit) !== JSON.stringify(visionHover);
    visionHover = hit;
    if (changed) draw();
    if (hit) {
      const i = patchToken(hit.row, hit.col, vgrid);
      const v = spans[i] && spans[i].dataset.value;
      const where = localPoint(panel, ev);
      tip.show(`${printable(model.get("tokens")[i])} [${i}]${v === undefined ? "" : `\n${v}`}`, where.x, where.y);
    } else tip.hide();
  };
  const onVisionLeave = () => {
    visionHover = null;
    tip.hide();
    draw();
  };
  const onVisionClick = (ev) => {
    if (!visionLay || !vgrid) return;
    const p = localPoint(visionCanvas, ev);
    const hit = hitPatch(visionLay, p.x, p.y);
    if (hit) selectToken(patchToken(hit.row, hit.col, vgrid));
  };
  const onChipClick = (ev) => {
    const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
    if (span && span.dataset.index !== undefined) selectToken(Number(span.dataset.index));
  };

  const onMove = (ev) => {
    if (!lay || !current) return;
    const p = localPoint(canvas, ev);
    if (drag) {
      const dx = p.x - drag.x;
      const dy = p.y - drag.y;
      if (Math.abs(dx) >= 5 || Math.abs(dy) >= 5) {
        const cr = canvas.getBoundingClientRect();
        const pr = panel.getBoundingClientRect();
        band.style.display = "block";
        band.style.left = `${cr.left - pr.left + Math.min(p.x, drag.x)}px`;
        band.style.top = `${cr.top - pr.top + Math.min(p.y, drag.y)}px`;
        band.style.width = `${Math.abs(dx)}px`;
        band.style.height = `${Math.abs(dy)}px`;
      }
    }
    const hit = hitView(lay, p.x, p.y);
    const prev = hover;
    hover = hit;
    if (JSON.stringify(prev) !== JSON.stringify(hit)) draw();
    const tokens = model.get("tokens");
    const keys = keyLabels();
    const where = localPoint(panel, ev);
    if (hit && hit.kind === "cell") {
      const v = valueAt(current, hit.row, hit.col);
      const step = current.step || 1;
      const what = Number.isNaN(v) ? "loading\u2026" : step > 1 ? `${v.toFixed(4)} (max of ${step}\u00d7${step})` : v.toFixed(4);
      tip.show(
        `${printable(tokens[hit.row])} [${hit.row}] \u2192 ${printable(keys[hit.col])} [${hit.col}]\n${what}`,
        where.x,
        where.y,
      );
    } else if (hit) {
      const i = hit.kind === "row" ? hit.row : hit.col;
      const label = hit.kind === "row" ? tokens[i] : keys[i];
      const what = isCross() ? (hit.kind === "row" ? " (query)" : " (key)") : "";
      tip.show(`${printable(label)} [${i}]${what}`, where.x, where.y);
    } else tip.hide();
  };
  const onLeave = () => {
    hover = null;
    tip.hide();
    draw();
  };
  const onClick = (ev) => {
    if (!lay) return;
    if (suppressClick) {
      suppressClick = false;
      return;
    }
    const p = localPoint(canvas, ev);
    const hit = hitView(lay, p.x, p.y);
    if (!hit) return;
    if (isCross()) selectCross(hit.kind, hit.kind === "col" ? hit.col : hit.row, hit.col);
    else selectToken(hit.kind === "col" ? hit.col : hit.row);
  };
  // Drag a rectangle on the map to zoom into it.
  const onDown = (ev) => {
    if (!lay || ev.button !== 0) return;
    const p = localPoint(canvas, ev);
    const hit = hitView(lay, p.x, p.y);
    drag = hit && hit.kind === "cell" ? { x: p.x, y: p.y } : null;
  };
  const onUp = (ev) => {
    if (!drag) return;
    const p = localPoint(canvas, ev);
    const view = rectToView(lay, drag.x, drag.y, p.x, p.y);
    drag = null;
    band.style.display = "none";
    if (view) {
      suppressClick = true;
      setView(view);
    }
  };
  const zoomStep = (factor) => {
    const tok = model.get("token");
    const key = isCross() ? model.get("key_token") : tok;
    const at = {};
    if (tok !== null && tok !== undefined) at.row = tok;
    if (key !== null && key !== undefined) at.col = key;
    setView(zoomBy(currentView(), factor, { nRows: nTokens(), nCols: nKeys(), ...at }));
  };
  const onStripClick = (ev) => {
    const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
    if (!span || span.dataset.index === undefined) return;
    const i = Number(span.dataset.index);
    const listed = strip.dataset.axis;
    if (listed === "keys") selectCross("col", i);
    else if (listed === "queries") selectCross("row", i);
    else selectToken(i);
  };
  const onKey = (ev) => {
    // Arrows move the strip's subject: the key `key_token` for cross-attention "to".
    const crossTo = isCross() && model.get("direction") === "to";
    const n = crossTo ? nKeys() : nTokens();
    const tok = crossTo ? model.get("key_token") : model.get("token");
    let next = tok === null || tok === undefined ? 0 : tok;
    if (ev.key === "ArrowDown" || ev.key === "ArrowRight") next = Math.min(n - 1, next + 1);
    else if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") next = Math.max(0, next - 1);
    else if (ev.key === "Escape") next = null;
    else if (ev.key === "+" || ev.key === "=") {
      ev.preventDefault();
      zoomStep(2);
      return;
    } else if (ev.key === "-") {
      ev.preventDefault();
      zoomStep(0.5);
      return;
    } else if (ev.key === "0") {
      ev.preventDefault();
      setView(null);
      return;
    } else return;
    ev.preventDefault();
    if (crossTo) {
      setTraits(model, { key_token: next });
      draw();
    } else selectToken(next);
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("mousedown", onDown);
  window.addEventListener("mouseup", onUp);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("keydown", onKey);
  strip.addEventListener("click", onStripClick);
  visionCanvas.addEventListener("mousemove", onVisionMove);
  visionCanvas.addEventListener("mouseleave", onVisionLeave);
  visionCanvas.addEventListener("click", onVisionClick);
  chips.addEventListener("click", onChipClick);
  btnStrip.onclick = () => {
    showStrip = !showStrip;
    draw();
  };
  btnFrom.onclick = () => setTraits(model, { direction: "from" });
  btnTo.onclick = () => setTraits(model, { direction: "to" });
  const aggregate = (agg) => () => {
    const head = model.get("head");
    if (typeof head === "number") lastHead = head;
    setTraits(model, { head: head === agg ? lastHead : agg });
  };
  btnMean.onclick = aggregate("mean");
  btnMax.onclick = aggregate("max");
  btnZoomIn.onclick = () => zoomStep(2);
  btnZoomOut.onclick = () => zoomStep(0.5);
  btnZoomReset.onclick = () => setView(null);

  const onSelection = () => ensureMap();
  const onTokens = () => {
    cache.clear();
    pinned.clear();
    images.map.clear();
    strips.map.clear();
    stripFailed.clear();
    labelMemo = { tokens: null, font: "", width: 0 };
    keyLabelMemo = { tokens: null, font: "", width: 0 };
    current = null;
    decodeVision();
    buildStrip();
    preload();
    ensureMap();
  };
  const onVision = () => {
    decodeVision();
    draw();
  };
  model.on("change:layer", onSelection);
  model.on("change:head", onSelection);
  model.on("change:zoom", onSelection);
  model.on("change:token", draw);
  model.on("change:key_token", draw);
  model.on("change:key_tokens", onTokens);
  model.on("change:image", onVision);
  model.on("change:patch_grid", onVision);
  model.on("change:patch_offset", onVision);
  model.on("change:direction", draw);
  model.on("change:error", draw);
  model.on("change:size", draw);
  model.on("change:tokens", onTokens);
  const stopWatching = onWidthChange(panel, draw);

  try {
    decodeVision();
    buildStrip();
    preload();
    ensureMap();
  } catch (err) {
    error.textContent = `could not draw the heatmap: ${err.message}`;
  }

  return () => {
    stopWatching();
    model.off("msg:custom", onPushed);
    client.dispose();
    stopExport();
    window.removeEventListener("mouseup", onUp);
    model.off("change:layer", onSelection);
    model.off("change:head", onSelection);
    model.off("change:zoom", onSelection);
    model.off("change:token", draw);
    model.off("change:key_token", draw);
    model.off("change:key_tokens", onTokens);
    model.off("change:image", onVision);
    model.off("change:patch_grid", onVision);
    model.off("change:patch_offset", onVision);
    model.off("change:direction", draw);
    model.off("change:error", draw);
    model.off("change:size", draw);
    model.off("change:tokens", onTokens);
  };
}

export default { render };
