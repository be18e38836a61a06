// Drawing the heatmap canvas: the map image (cached per record and theme), the selection
// and hover outlines, thinned token labels, and the geometry published for tests.
import { paintNorm, themeLut } from "../lib/colormap.js";
import { createLegend, syncGenerationLegend, updateLegend } from "../lib/legend.js";
import { boundaryOffset, generationColour, isGenerated, promptLength } from "../lib/generation.js";
import { sizeCanvas, theme } from "../lib/dom.js";
import { printable, truncate } from "../lib/layout.js";
import { covers, formatView, isFull, mapBox, rangeLabels, sourceRect, viewLayout } from "../lib/zoom.js";
import { COLORMAP, GENERATION, LABELS, SIZES } from "../lib/style.js";
import { drawStrip } from "./strip.js";
import { drawVision } from "./vision.js";

const FONT = LABELS.font_px;
const MAX_CHARS = LABELS.max_chars.heatmap;
const MAX_LABEL_PX = LABELS.max_label_px.heatmap;

const given = (x) => x !== null && x !== undefined;

/** The panel title: layer, head (or aggregate) and, when zoomed, the token ranges. */
export function mapTitle(layer, head, view, full) {
  const headText = typeof head === "number" ? `head ${head}` : `${head} of heads`;
  const zoomText = full ? "" : ` \u00b7 queries ${view.r0}\u2013${view.r1 - 1} \u00d7 keys ${view.c0}\u2013${view.c1 - 1}`;
  return `layer ${layer} \u00b7 ${headText}${zoomText}`;
}

/** The note under the controls: "" when the record shows the view exactly. */
export function overviewNote(exact, step) {
  if (exact) return "";
  return step > 1
    ? `overview: each cell is the max of ${step}\u00d7${step} token pairs (drag a rectangle or use zoom + for full resolution)`
    : "loading the zoomed region\u2026";
}

/** Side of the square map (CSS px): the `size` trait, else fit to the panel at style.json
 * `sizes.heatmap` (per_token px a token, between min and max). */
export function mapSize(sizeTrait, avail, n, nk) {
  const { per_token: per, min, max } = SIZES.heatmap;
  return sizeTrait || Math.max(min, Math.min(avail, max, Math.max(n, nk) * per));
}

/**
 * Which row / column labels are always drawn and which are emphasised. Self-attention: the
 * selected token and the hovered cell's row and column, on both axes. Cross-attention: rows
 * and columns are different tokens, each axis with its own selection (`token` / `keyToken`).
 */
export function labelEmphasis({ cross, token, keyToken, hover }) {
  const hr = hover ? hover.row : null;
  const hc = hover ? hover.col : null;
  if (!cross) {
    const always = [token, hr, hc].filter(given);
    const strong = (i) => i === token || (!!hover && (i === hr || i === hc));
    return { rowAlways: always, colAlways: always, strongRow: strong, strongCol: strong };
  }
  return {
    rowAlways: [token, hr].filter(given),
    colAlways: [keyToken, hc].filter(given),
    strongRow: (i) => i === token || (!!hover && i === hr),
    strongCol: (i) => i === keyToken || (!!hover && i === hc),
  };
}

/**
 * Outlines in view cells, {x, y, w, h, kind}: the strip's subject as its row ("from") or
 * column ("to"), for cross-attention the other axis' selection (kind "other", dashed), and
 * the hovered cell. x / y are cell offsets from the view's corner; w / h are cells, or "all".
 */
export function outlines({ view, dir, subject, other, hover, nq, nk }) {
  const out = [];
  const row = (i, kind) => out.push({ kind, x: 0, y: i - view.r0, w: "all", h: 1 });
  const col = (j, kind) => out.push({ kind, x: j - view.c0, y: 0, w: 1, h: "all" });
  const inRows = (i) => i >= view.r0 && i < view.r1;
  const inCols = (j) => j >= view.c0 && j < view.c1;
  if (given(subject) && subject < (dir === "from" ? nq : nk)) {
    if (dir === "from" && inRows(subject)) row(subject, "subject");
    else if (dir === "to" && inCols(subject)) col(subject, "subject");
  }
  if (given(other)) {
    if (dir === "from" && inCols(other)) col(other, "other");
    else if (dir === "to" && inRows(other)) row(other, "other");
  }
  if (hover && hover.kind === "cell") out.push({ kind: "hover", x: hover.col - view.c0, y: hover.row - view.r0, w: 1, h: 1 });
  return out;
}

/** The lowest top of an attention colour bar over `nKeys` keys (style.json uniform_floor). */
export function uniformFloor(nKeys) {
  return Math.min(1, COLORMAP.uniform_floor / Math.max(1, nKeys | 0));
}

/**
 * The `q`-th percentile (0..100) of the finite values, linear between order statistics
 * (numpy's default); 0 when there are none. render/style.percentile.
 */
export function percentile(values, q) {
  // O(n) selection instead of a sort: this runs on every newly shown head (262k values at
  // T = 512), on the click -> redraw path.
  const n0 = values.length;
  const v = new Float64Array(n0);
  let n = 0;
  for (let i = 0; i < n0; i++) {
    const x = values[i];
    if (Number.isFinite(x)) v[n++] = x;
  }
  if (!n) return 0;
  const pos = ((n - 1) * Math.min(Math.max(q, 0), 100)) / 100;
  const lo = Math.floor(pos);
  const a = v.subarray(0, n);
  const vlo = selectKth(a, lo);
  if (lo + 1 >= n) return vlo;
  let vhi = Infinity; // after selection everything right of `lo` is >= a[lo]: the next order statistic is their min
  for (let i = lo + 1; i < n; i++) if (a[i] < vhi) vhi = a[i];
  return vlo + (vhi - vlo) * (pos - lo);
}

/** The k-th smallest of `a` (0-based), partially reordering `a` in place (Hoare quickselect). */
export function selectKth(a, k) {
  let l = 0;
  let r = a.length - 1;
  while (r > l) {
    const pivot = a[(l + r) >> 1];
    let i = l;
    let j = r;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) r = j;
    else if (k >= i) l = i;
    else break;
  }
  return a[k];
}

/** The record's `cap`-th percentile, memoised on the record (maps do not change). */
export function recordTop(rec, cap) {
  if (!(cap < 100)) return rec.max;
  if (!rec.tops) rec.tops = new Map();
  if (!rec.tops.has(cap)) rec.tops.set(cap, percentile(rec.data, cap));
  return rec.tops.get(cap);
}

/**
 * The top of the map's colour bar: the shown record's max ("head"), the layer's largest
 * head max ("layer") or all heads' ("global"; heads' maxima `headMax` [L * H], null while
 * unknown: then the record's max), at least uniformFloor(nKeys). AttentionHeatmap.colour_top.
 */
export function mapTop(scale, recMax, headMax, layer, H, nKeys) {
  let top = recMax;
  if (scale !== "head" && headMax && headMax.length) {
    top = 0;
    const lo = scale === "layer" ? layer * H : 0;
    const hi = scale === "layer" ? (layer + 1) * H : headMax.length;
    for (let i = lo; i < hi; i++) top = Math.max(top, headMax[i]);
  }
  return Math.max(top, uniformFloor(nKeys));
}

/** The record painted on an offscreen canvas, one pixel a value (cached per theme and scale). */
function mapImage(v, rec, bg, top, norm) {
  const k = `${rec.key}|${bg}|${top}|${norm}`;
  let img = v.images.get(k);
  if (img) return img;
  img = document.createElement("canvas");
  img.width = rec.cols;
  img.height = rec.rows;
  const id = new ImageData(rec.cols, rec.rows);
  paintNorm(rec.data, top, themeLut(bg), id.data, norm);
  img.getContext("2d").putImageData(id, 0, 0);
  v.images.set(k, img);
  return img;
}

/** Widest label (CSS px) among `tokens` in `font`, memoised per token list and font. */
function labelWidth(v, ctx, tokens, font, which) {
  let memo = v.labelMemo[which];
  if (!memo || memo.tokens !== tokens || memo.font !== font) {
    let w = 0;
    // Measure at most ~2000 labels: beyond that the widest is within a hair of the max.
    const stride = Math.max(1, Math.floor(tokens.length / 2000));
    for (let i = 0; i < tokens.length; i += stride) w = Math.max(w, ctx.measureText(truncate(printable(tokens[i]), MAX_CHARS)).width);
    memo = { tokens, font, width: w };
    v.labelMemo[which] = memo;
  }
  return memo.width;
}

function strokeOutline(ctx, lay, th, o) {
  const { cellW: cw, cellH: ch } = lay;
  const w = o.w === "all" ? lay.sizeW : Math.max(cw, 1);
  const hh = o.h === "all" ? lay.sizeH : Math.max(ch, 1);
  ctx.strokeStyle = o.kind === "hover" ? th.accent : th.warn;
  ctx.lineWidth = o.kind === "subject" ? 2 : 1;
  ctx.setLineDash(o.kind === "other" ? [3, 2] : []);
  ctx.strokeRect(lay.left + o.x * cw, lay.top + o.y * ch, w, hh);
  ctx.setLineDash([]);
}

/**
 * The prompt | answer boundary on the map (a generation): the line between rows p - 1 and
 * p and between columns p - 1 and p, where they fall inside the view, over a halo of the
 * background so it reads on any map colour. Returns {row, col}: offsets in cells, or null.
 */
export function drawBoundary(ctx, lay, view, p, th, colour) {
  const row = boundaryOffset(p, view.r0, view.r1);
  const col = boundaryOffset(p, view.c0, view.c1);
  if (row === null && col === null) return { row, col };
  const segs = [];
  // On whole CSS px: an even-width line then covers exact pixel rows, crisp on the map.
  const y = Math.round(lay.top + (row ?? 0) * lay.cellH);
  const x = Math.round(lay.left + (col ?? 0) * lay.cellW);
  if (row !== null) segs.push([lay.left, y, lay.left + lay.sizeW, y]);
  if (col !== null) segs.push([x, lay.top, x, lay.top + lay.sizeH]);
  const stroke = (style, width, alpha) => {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.globalAlpha = alpha;
    ctx.beginPath();
    for (const [x0, y0, x1, y1] of segs) {
      ctx.moveTo(x0, y0);
      ctx.lineTo(x1, y1);
    }
    ctx.stroke();
  };
  stroke(th.background, GENERATION.halo_width, GENERATION.halo_alpha);
  stroke(colour, GENERATION.line_width, 1);
  ctx.globalAlpha = 1;
  return { row, col };
}

/** Draw the whole panel: title, buttons, map, labels, strip (and vision overlay). */
export function draw(v) {
  const { model, panel, el, canvas } = v;
  const th = theme(panel);
  const tokens = model.get("tokens");
  const n = tokens.length;
  const cross = v.isCross();
  const keys = v.keyLabels();
  const nk = keys.length;
  const keyTok = cross ? model.get("key_token") : null;
  const layer = model.get("layer");
  const head = model.get("head");
  const token = model.get("token");
  const dir = model.get("direction");
  const view = v.currentView();
  const full = isFull(view, n, nk);
  v.title.textContent = mapTitle(layer, head, view, full);
  v.btnFrom.setAttribute("aria-pressed", String(dir === "from"));
  v.btnTo.setAttribute("aria-pressed", String(dir === "to"));
  for (const [agg, btn] of Object.entries(v.aggButtons)) btn.setAttribute("aria-pressed", String(head === agg));
  v.errors.show();
  const current = v.current;
  if (!current) return;

  const ctx0 = canvas.getContext("2d");
  ctx0.font = `${FONT}px ${th.code}`;
  const left = Math.ceil(Math.min(MAX_LABEL_PX, labelWidth(v, ctx0, tokens, ctx0.font, "rows")) + 8);
  const avail = (panel.clientWidth || el.clientWidth || 720) - left - 12;
  const size = mapSize(model.get("size"), avail, n, nk);
  // Cross-attention: key labels on top get their own height, and cells stay square.
  const top = cross ? Math.ceil(Math.min(MAX_LABEL_PX, labelWidth(v, ctx0, keys, ctx0.font, "keys")) + 8) : left;
  const box = cross ? mapBox(view.r1 - view.r0, view.c1 - view.c0, size) : { w: size, h: size };
  const lay = viewLayout({ view, size, left, top, boxW: box.w, boxH: box.h });
  v.lay = lay;
  const bw = lay.sizeW;
  const bh = lay.sizeH;
  const ctx = sizeCanvas(canvas, lay.width, lay.height);
  ctx.fillStyle = th.background;
  ctx.fillRect(0, 0, lay.width, lay.height);
  ctx.imageSmoothingEnabled = false;
  const src = sourceRect(current, view);
  const scale = model.get("scale") || "head";
  const norm = model.get("norm") || "linear";
  const cap = Number(model.get("cap") ?? 100);
  const cTop = mapTop(scale, scale === "head" ? recordTop(current, cap) : current.max, v.headMax ? v.headMax() : null, layer, model.get("n_heads"), nk);
  if (src) {
    const d = src.dst;
    ctx.drawImage(
      mapImage(v, current, th.background, cTop, norm),
      src.sx, src.sy, src.sw, src.sh,
      lay.left + d.x * bw, lay.top + d.y * bh, d.w * bw, d.h * bh,
    );
  }
  const step = current.step || 1;
  const exact = covers(current, view);
  v.note.textContent = overviewNote(exact, step);

  // A generation: the prompt | answer boundary (under the selection outlines).
  const gen = cross ? 0 : promptLength(model, n);
  const genColour = generationColour(th.background);
  const bound = drawBoundary(ctx, lay, view, gen, th, genColour);

  // Selected token: its row (dir "from") or column (dir "to"); hover: a crosshair.
  // Cross-attention: the subject is the query `token` ("from") or the key `key_token` ("to").
  const ax = v.axis(dir);
  const hover = v.hover;
  for (const o of outlines({ view, dir, subject: ax.subject, other: cross ? ax.selected : null, hover, nq: n, nk })) {
    strokeOutline(ctx, lay, th, o);
  }

  // Labels, thinned so they never overlap; selection and hover always labelled.
  const cw = lay.cellW;
  const ch = lay.cellH;
  const em = labelEmphasis({ cross, token, keyToken: keyTok, hover });
  ctx.font = `${FONT}px ${th.code}`;
  ctx.textBaseline = "middle";
  for (const i of rangeLabels(view.r0, view.r1, ch, FONT, em.rowAlways)) {
    ctx.fillStyle = em.strongRow(i) ? th.foreground : isGenerated(i, gen) ? genColour : th.muted;
    ctx.textAlign = "right";
    ctx.fillText(truncate(printable(tokens[i]), MAX_CHARS), lay.left - 4, lay.top + (i - view.r0 + 0.5) * ch);
  }
  for (const i of rangeLabels(view.c0, view.c1, cw, FONT, em.colAlways)) {
    ctx.fillStyle = em.strongCol(i) ? th.foreground : isGenerated(i, gen) ? genColour : th.muted;
    ctx.save();
    ctx.translate(lay.left + (i - view.c0 + 0.5) * cw, lay.top - 4);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    ctx.fillText(truncate(printable(keys[i]), MAX_CHARS), 0, 0);
    ctx.restore();
  }
  // Axis titles in the empty corner left of the key labels and above the query labels.
  ctx.fillStyle = th.muted;
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.font = `10px ${th.font}`;
  // (above the first row label, which reaches about FONT / 2 over the map's top edge)
  ctx.fillText("key \u2192", lay.left - 12, lay.top - 21); // rotated key labels reach ~8 px left of their column
  ctx.fillText("query \u2193", lay.left - 12, lay.top - 9);
  const lopts = {
    max: cTop,
    norm,
    scale,
    what: typeof head === "number" ? "attention weight" : `attention weight (${head} of heads)`,
    note: [scale === "head" && cap < 100 ? `capped at p${cap} (above: darkest)` : "", step > 1 && !exact ? `max of ${step}\u00d7${step} blocks` : ""].filter(Boolean).join(", "),
  };
  const lut = themeLut(th.background);
  if (!v.mapLegendEl) {
    v.mapLegendEl = createLegend(lut, lopts);
    v.mapLegend.appendChild(v.mapLegendEl);
  } else updateLegend(v.mapLegendEl, lut, lopts);
  syncGenerationLegend(v.mapLegend, gen, n, genColour, "the line on the map, labels and underlined strip tokens mark them");

  const st = drawStrip(v, th, dir, norm);
  drawVision(v, th, st.lut, st.vals, st.subject, dir);
  // Map geometry in canvas CSS px, for tests and tools that point at a cell.
  canvas.dataset.left = String(lay.left);
  canvas.dataset.top = String(lay.top);
  canvas.dataset.size = String(size);
  canvas.dataset.width = String(bw); // the map's box: size x size unless cross-attention
  canvas.dataset.height = String(bh);
  canvas.dataset.boundaryRow = bound.row === null ? "" : String(bound.row); // cells from the view's top
  canvas.dataset.boundaryCol = bound.col === null ? "" : String(bound.col);
  const ds = panel.dataset;
  ds.cross = cross ? "1" : "0";
  ds.keys = String(nk);
  ds.keyToken = given(keyTok) ? String(keyTok) : "";
  ds.stripAxis = ax.axis;
  ds.shown = current.map;
  ds.zoom = formatView(view);
  ds.step = String(exact ? 1 : step);
  ds.source = current.tile ? "tile" : step > 1 ? "overview" : "map";
  ds.token = given(token) ? String(token) : "";
  ds.direction = dir;
  ds.colourTop = String(cTop);
  ds.norm = norm;
  ds.promptLength = String(gen);
  ds.draws = String(Number(ds.draws || 0) + 1);
}
