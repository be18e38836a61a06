// AttentionHeatmap view: the selected head's token x token map (canvas) with token
// labels, and a sentence strip coloured by the selected token's row or column.
import { decode, maxOf } from "./lib/codec.js";
import { lutCss, lutIndex, paint, textOn, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { printable, truncate } from "./lib/layout.js";
import { createClient, Lru, mapKey } from "./lib/requests.js";
import {
  covers,
  formatView,
  hitView,
  isFull,
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

function render({ model, el }) {
  ensureStyles();
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
  panel.append(title, controls, note, error, canvas, band, strip);
  el.appendChild(panel);
  const tip = tooltip(panel);

  const client = createClient(model);
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
  let lastWidth = 0;
  const strips = new Lru(64); // exact strip values fetched for pooled maps: "layer:head|dir|token"
  const stripFailed = new Set();
  let drag = null; // {x, y} where a drag on the map started
  let suppressClick = false;
  let labelMemo = { tokens: null, font: "", width: 0 };

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

  function currentView() {
    const n = nTokens();
    return viewFromZoom(model.get("zoom"), n, n);
  }

  function setView(view) {
    const n = nTokens();
    setTraits(model, { zoom: view ? zoomFromView(view, n, n) : [] });
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

  function buildStrip() {
    strip.replaceChildren();
    const tokens = model.get("tokens");
    const special = model.get("special") || [];
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
    const n = nTokens();
    const full = isFull(view, n, n);
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
    const n = nTokens();
    const e = recordExtent(rec);
    if (dir === "from") {
      if (e.c0 > 0 || e.c1 < n || token < e.r0 || token >= e.r1) return null;
      const i = token - e.r0;
      return Float32Array.from(rec.data.subarray(i * rec.cols, i * rec.cols + n));
    }
    if (e.r0 > 0 || e.r1 < n || token < e.c0 || token >= e.c1) return null;
    const j = token - e.c0;
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = rec.data[i * rec.cols + j];
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
    const n = nTokens();
    const layer = model.get("layer");
    const head = model.get("head");
    const payload =
      dir === "from"
        ? { layer, head, r0: token, r1: token + 1, c0: 0, c1: n }
        : { layer, head, r0: 0, r1: n, c0: token, c1: token + 1 };
    try {
      const { msg, buffers } = await fetchOnce(`strip|${k}`, "get_tile", payload);
      strips.set(k, decode(msg, buffers[0]).data);
      if (stripKey(model.get("token"), model.get("direction")) === k) draw();
    } catch (err) {
      stripFailed.add(k);
      fetchError = `could not load the strip for token ${token}: ${err.message}`;
      error.textContent = fetchError;
    }
  }

  function labelWidth(ctx, tokens, font) {
    if (labelMemo.tokens !== tokens || labelMemo.font !== font) {
      let w = 0;
      // Measure at most ~2000 labels: beyond that the widest is within a hair of the max.
      const stride = Math.max(1, Math.floor(tokens.length / 2000));
      for (let i = 0; i < tokens.length; i += stride) w = Math.max(w, ctx.measureText(truncate(printable(tokens[i]), 14)).width);
      labelMemo = { tokens, font, width: w };
    }
    return labelMemo.width;
  }

  function draw() {
    const th = theme(panel);
    const tokens = model.get("tokens");
    const n = tokens.length;
    const layer = model.get("layer");
    const head = model.get("head");
    const token = model.get("token");
    const dir = model.get("direction");
    const headText = typeof head === "number" ? `head ${head}` : `${head} of heads`;
    const view = currentView();
    const full = isFull(view, n, n);
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
    lastWidth = panel.clientWidth;
    const size = model.get("size") || Math.max(120, Math.min(avail, 640, n * 36));
    lay = viewLayout({ view, size, left, top: left });
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
        lay.left + d.x * size, lay.top + d.y * size, d.w * size, d.h * size,
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
    const cw = lay.cellW;
    const ch = lay.cellH;
    if (token !== null && token !== undefined && token < n) {
      ctx.strokeStyle = th.warn;
      ctx.lineWidth = 2;
      if (dir === "from" && token >= view.r0 && token < view.r1) {
        ctx.strokeRect(lay.left, lay.top + (token - view.r0) * ch, size, Math.max(ch, 1));
      } else if (dir === "to" && token >= view.c0 && token < view.c1) {
        ctx.strokeRect(lay.left + (token - view.c0) * cw, lay.top, Math.max(cw, 1), size);
      }
    }
    if (hover && hover.kind === "cell") {
      ctx.strokeStyle = th.accent;
      ctx.lineWidth = 1;
      ctx.strokeRect(
        lay.left + (hover.col - view.c0) * cw, lay.top + (hover.row - view.r0) * ch, Math.max(cw, 1), Math.max(ch, 1),
      );
    }

    // Labels, thinned so they never overlap; selection and hover always labelled.
    const always = [token, hover && hover.row, hover && hover.col].filter((x) => x !== null && x !== undefined);
    ctx.font = `${font}px ${th.code}`;
    ctx.textBaseline = "middle";
    const strong = (i) => i === token || (hover && (i === hover.row || i === hover.col));
    for (const i of rangeLabels(view.r0, view.r1, ch, font, always)) {
      ctx.fillStyle = strong(i) ? th.foreground : th.muted;
      ctx.textAlign = "right";
      ctx.fillText(truncate(printable(tokens[i]), 14), lay.left - 4, lay.top + (i - view.r0 + 0.5) * ch);
    }
    for (const i of rangeLabels(view.c0, view.c1, cw, font, always)) {
      ctx.fillStyle = strong(i) ? th.foreground : th.muted;
      ctx.save();
      ctx.translate(lay.left + (i - view.c0 + 0.5) * cw, lay.top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(truncate(printable(tokens[i]), 14), 0, 0);
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
    panel.dataset.shown = current.map;
    panel.dataset.zoom = formatView(view);
    panel.dataset.step = String(exact ? 1 : step);
    panel.dataset.source = current.tile ? "tile" : step > 1 ? "overview" : "map";
    panel.dataset.token = token === null || token === undefined ? "" : String(token);
    panel.dataset.direction = dir;
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  function drawStrip(th, token, dir) {
    if (spans.length !== model.get("tokens").length) buildStrip();
    const lut = themeLut(th.background);
    const has = token !== null && token !== undefined && token < nTokens();
    const vals = has ? stripValues(token, dir) : null;
    if (has && !vals) fetchStrip(token, dir);
    const vmax = vals ? maxOf(vals) : 0;
    spans.forEach((s, i) => {
      s.classList.toggle("aw-selected", i === token);
      s.setAttribute("aria-selected", String(i === token));
      if (vals) {
        const idx = lutIndex(vals[i], vmax);
        s.style.background = lutCss(lut, idx);
        s.style.color = textOn(lut, idx);
        s.dataset.value = vals[i].toFixed(4);
        s.title = `${vals[i].toFixed(4)}`;
      } else {
        s.style.background = "";
        s.style.color = "";
        delete s.dataset.value;
        s.title = "click to select this token";
      }
    });
  }

  function selectToken(i) {
    setTraits(model, { token: i });
    draw();
  }

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
    const where = localPoint(panel, ev);
    if (hit && hit.kind === "cell") {
      const v = valueAt(current, hit.row, hit.col);
      const step = current.step || 1;
      const what = Number.isNaN(v) ? "loading\u2026" : step > 1 ? `${v.toFixed(4)} (max of ${step}\u00d7${step})` : v.toFixed(4);
      tip.show(
        `${printable(tokens[hit.row])} [${hit.row}] \u2192 ${printable(tokens[hit.col])} [${hit.col}]\n${what}`,
        where.x,
        where.y,
      );
    } else if (hit) {
      const i = hit.kind === "row" ? hit.row : hit.col;
      tip.show(`${printable(tokens[i])} [${i}]`, where.x, where.y);
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
    selectToken(hit.kind === "col" ? hit.col : hit.row);
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
    const n = nTokens();
    const tok = model.get("token");
    const at = tok === null || tok === undefined ? {} : { row: tok, col: tok };
    setView(zoomBy(currentView(), factor, { nRows: n, nCols: n, ...at }));
  };
  const onStripClick = (ev) => {
    const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
    if (span && span.dataset.index !== undefined) selectToken(Number(span.dataset.index));
  };
  const onKey = (ev) => {
    const n = model.get("tokens").length;
    const tok = model.get("token");
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
    selectToken(next);
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("mousedown", onDown);
  window.addEventListener("mouseup", onUp);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("keydown", onKey);
  strip.addEventListener("click", onStripClick);
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
    current = null;
    buildStrip();
    preload();
    ensureMap();
  };
  model.on("change:layer", onSelection);
  model.on("change:head", onSelection);
  model.on("change:zoom", onSelection);
  model.on("change:token", draw);
  model.on("change:direction", draw);
  model.on("change:error", draw);
  model.on("change:size", draw);
  model.on("change:tokens", onTokens);
  const ro =
    typeof ResizeObserver !== "undefined"
      ? new ResizeObserver(() => {
          if (panel.clientWidth !== lastWidth) draw();
        })
      : null;
  if (ro) ro.observe(panel);

  try {
    buildStrip();
    preload();
    ensureMap();
  } catch (err) {
    error.textContent = `could not draw the heatmap: ${err.message}`;
  }

  return () => {
    if (ro) ro.disconnect();
    client.dispose();
    window.removeEventListener("mouseup", onUp);
    model.off("change:layer", onSelection);
    model.off("change:head", onSelection);
    model.off("change:zoom", onSelection);
    model.off("change:token", draw);
    model.off("change:direction", draw);
    model.off("change:error", draw);
    model.off("change:size", draw);
    model.off("change:tokens", onTokens);
  };
}

export default { render };
