// Zoom geometry for the heatmap: which token ranges are shown (a "view": query rows
// r0..r1 x keys c0..c1, half-open), where they land on the canvas, what is under the
// pointer, and which part of a received map or tile covers them. Pure functions.

import { labelStride, visibleLabels } from "./layout.js";
import { SIZES } from "./style.js";

/** The whole nRows x nCols map. */
export function fullView(nRows, nCols = nRows) {
  return { r0: 0, r1: nRows, c0: 0, c1: nCols };
}

function clampInt(v, lo, hi) {
  return Math.max(lo, Math.min(hi, Math.round(v)));
}

/**
 * The view for a `zoom` trait value: [] (or anything malformed) is the whole map;
 * [r0, r1, c0, c1] is clamped into the map and made non-empty.
 */
export function viewFromZoom(zoom, nRows, nCols = nRows) {
  if (!Array.isArray(zoom) || zoom.length !== 4 || !zoom.every((v) => Number.isFinite(v))) {
    return fullView(nRows, nCols);
  }
  const r0 = clampInt(zoom[0], 0, Math.max(0, nRows - 1));
  const c0 = clampInt(zoom[2], 0, Math.max(0, nCols - 1));
  const r1 = clampInt(zoom[1], r0 + 1, nRows);
  const c1 = clampInt(zoom[3], c0 + 1, nCols);
  return { r0, r1, c0, c1 };
}

/** True when `view` is the whole map. */
export function isFull(view, nRows, nCols = nRows) {
  return view.r0 <= 0 && view.c0 <= 0 && view.r1 >= nRows && view.c1 >= nCols;
}

/** The `zoom` trait value of a view: [] for the whole map, else [r0, r1, c0, c1]. */
export function zoomFromView(view, nRows, nCols = nRows) {
  return isFull(view, nRows, nCols) ? [] : [view.r0, view.r1, view.c0, view.c1];
}

/** "r0:r1:c0:c1", as the panel's data-zoom attribute. */
export function formatView(view) {
  return `${view.r0}:${view.r1}:${view.c0}:${view.c1}`;
}

/**
 * Layout of a view drawn into a size x size square at (left, top); cells may be non-square.
 * `boxW` / `boxH` (default `size`) draw it into a rectangle instead (cross-attention maps).
 */
export function viewLayout({ view, size, left, top, boxW = size, boxH = size }) {
  const rows = view.r1 - view.r0;
  const cols = view.c1 - view.c0;
  return {
    ...view,
    rows,
    cols,
    size,
    sizeW: boxW,
    sizeH: boxH,
    left,
    top,
    cellW: boxW / cols,
    cellH: boxH / rows,
    width: left + boxW,
    height: top + boxH,
  };
}

/**
 * The box a rows x cols map is drawn in, its longer side `size` and cells square, but
 * no side under `minSide` px (a one-row map stays clickable): {w, h}. Cross-attention.
 */
export function mapBox(rows, cols, size, minSide = 48) {
  const m = Math.max(rows, cols, 1);
  const lo = Math.min(size, minSide);
  return { w: Math.max(lo, (size * cols) / m), h: Math.max(lo, (size * rows) / m) };
}

/**
 * What is under (x, y), in absolute token indices: {kind: "cell", row, col}, {kind: "row",
 * row} on a left label, {kind: "col", col} on a top label, or null.
 */
export function hitView(lay, x, y) {
  const inX = x >= lay.left && x < lay.left + (lay.sizeW ?? lay.size);
  const inY = y >= lay.top && y < lay.top + (lay.sizeH ?? lay.size);
  const col = lay.c0 + Math.min(lay.cols - 1, Math.floor((x - lay.left) / lay.cellW));
  const row = lay.r0 + Math.min(lay.rows - 1, Math.floor((y - lay.top) / lay.cellH));
  if (inX && inY) return { kind: "cell", row, col };
  if (inY && x >= 0 && x < lay.left) return { kind: "row", row };
  if (inX && y >= 0 && y < lay.top) return { kind: "col", col };
  return null;
}

/** Token index of a canvas x (column) or y (row), clamped into the view. */
export function colAt(lay, x) {
  return lay.c0 + Math.max(0, Math.min(lay.cols - 1, Math.floor((x - lay.left) / lay.cellW)));
}

export function rowAt(lay, y) {
  return lay.r0 + Math.max(0, Math.min(lay.rows - 1, Math.floor((y - lay.top) / lay.cellH)));
}

/**
 * The view covering the cells a dragged rectangle (corners in canvas CSS px, any order)
 * touches; null when the drag is shorter than `minPx` (a click, not a zoom).
 */
export function rectToView(lay, x0, y0, x1, y1, { minPx = 5 } = {}) {
  if (Math.abs(x1 - x0) < minPx && Math.abs(y1 - y0) < minPx) return null;
  const ca = colAt(lay, x0);
  const cb = colAt(lay, x1);
  const ra = rowAt(lay, y0);
  const rb = rowAt(lay, y1);
  return { r0: Math.min(ra, rb), r1: Math.max(ra, rb) + 1, c0: Math.min(ca, cb), c1: Math.max(ca, cb) + 1 };
}

function spanAround(a, b, n, factor, center, minSpan) {
  const span = b - a;
  const want = Math.max(Math.min(minSpan, n), Math.min(n, Math.round(span / factor)));
  const c = Number.isFinite(center) ? center + 0.5 : (a + b) / 2;
  let lo = Math.round(c - want / 2);
  lo = Math.max(0, Math.min(n - want, lo));
  return [lo, lo + want];
}

/**
 * Zoom by `factor` (> 1 zooms in, < 1 out) around token (row, col) (default: the view's
 * centre), keeping at least `minSpan` tokens per side and staying inside the map.
 */
export function zoomBy(view, factor, { nRows, nCols = nRows, row, col, minSpan = 4 } = {}) {
  if (!(factor > 0)) throw new Error(`zoom factor must be > 0, received ${factor}`);
  const [r0, r1] = spanAround(view.r0, view.r1, nRows, factor, row, minSpan);
  const [c0, c1] = spanAround(view.c0, view.c1, nCols, factor, col, minSpan);
  return { r0, r1, c0, c1 };
}

/**
 * Max-pool factor a rows x cols region is sent with: 1 (full resolution) while it has at
 * most maxSide^2 cells, else enough to bring both sides to <= maxSide. Mirrors
 * AttentionHeatmap.tile_step in Python.
 */
export function tileStep(rows, cols, maxSide = SIZES.overview_size) {
  if (rows * cols <= maxSide * maxSide) return 1;
  return Math.max(1, Math.ceil(Math.max(rows, cols) / maxSide));
}

/**
 * A record of received data: {data, rows, cols, r0, c0, step}: data is rows x cols values,
 * value (i, j) covering tokens r0 + i*step .. and c0 + j*step .. (max over the block).
 */
export function recordExtent(rec) {
  const step = rec.step || 1;
  return { r0: rec.r0 || 0, c0: rec.c0 || 0, r1: (rec.r0 || 0) + rec.rows * step, c1: (rec.c0 || 0) + rec.cols * step };
}

/** True when the record has every cell of `view` at full resolution. */
export function covers(rec, view) {
  if (!rec || (rec.step || 1) !== 1) return false;
  const e = recordExtent(rec);
  return e.r0 <= view.r0 && e.c0 <= view.c0 && e.r1 >= view.r1 && e.c1 >= view.c1;
}

/** Value of token cell (row, col) in a record (the block max when step > 1); NaN outside. */
export function valueAt(rec, row, col) {
  const step = rec.step || 1;
  const i = Math.floor((row - (rec.r0 || 0)) / step);
  const j = Math.floor((col - (rec.c0 || 0)) / step);
  if (!(i >= 0 && i < rec.rows && j >= 0 && j < rec.cols)) return NaN;
  return rec.data[i * rec.cols + j];
}

/**
 * Where `view` lies in the record's pixels (fractional), for drawImage(img, sx, sy, sw, sh,
 * ...). Parts of the view outside the record are cut: `dst` gives the matching fraction
 * (0..1) of the destination square. null when they do not overlap.
 */
export function sourceRect(rec, view) {
  const step = rec.step || 1;
  const e = recordExtent(rec);
  const r0 = Math.max(view.r0, e.r0);
  const r1 = Math.min(view.r1, e.r1);
  const c0 = Math.max(view.c0, e.c0);
  const c1 = Math.min(view.c1, e.c1);
  if (!(r1 > r0 && c1 > c0)) return null;
  const rows = view.r1 - view.r0;
  const cols = view.c1 - view.c0;
  return {
    sx: (c0 - e.c0) / step,
    sy: (r0 - e.r0) / step,
    sw: (c1 - c0) / step,
    sh: (r1 - r0) / step,
    dst: { x: (c0 - view.c0) / cols, y: (r0 - view.r0) / rows, w: (c1 - c0) / cols, h: (r1 - r0) / rows },
  };
}

/** Cache key of a tile of head (layer, head). */
export function tileKey(layer, head, view) {
  return `${layer}:${head}|${formatView(view)}`;
}

/**
 * Token indices to label in [a, b) when cells are `cellPx` apart: every stride-th (so
 * labels `fontPx` tall never overlap), plus the always-shown ones that fall inside.
 */
export function rangeLabels(a, b, cellPx, fontPx, always = []) {
  const stride = labelStride(cellPx, fontPx);
  const inside = always.filter((i) => Number.isInteger(i) && i >= a && i < b).map((i) => i - a);
  return visibleLabels(b - a, stride, inside).map((i) => i + a);
}
