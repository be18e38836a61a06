// Geometry, hit-testing and edge bucketing for the Flow panel. Pure functions. Bucket
// count and styles: style.json `edges`.
import { EDGES } from "./style.js";

/**
 * Layout of one flow graph: columns 0..nLayers (0 = input), tokens as rows.
 * `left`/`right` leave room for token labels, `top` for the column headers.
 */
export function flowLayout({ nLayers, n, width, rowH, left, right, top }) {
  const cols = nLayers + 1;
  const inner = Math.max(cols * 8, width - left - right);
  const colW = cols > 1 ? inner / (cols - 1) : 0;
  return {
    nLayers,
    n,
    cols,
    left,
    right,
    top,
    rowH,
    colW,
    width: left + inner + right,
    height: top + n * rowH + 4,
  };
}

/** x of column `c` (0..nLayers). */
export function colX(lay, c) {
  return lay.left + c * lay.colW;
}

/** y of the centre of token row `i`. */
export function rowY(lay, i) {
  return lay.top + (i + 0.5) * lay.rowH;
}

/** Row height that fits `n` tokens into about `maxHeight` px, between `min` and `max`. */
export function fitRow(n, maxHeight, { min = 1, max = 18 } = {}) {
  if (!(n > 0)) return max;
  return Math.max(min, Math.min(max, maxHeight / n));
}

/**
 * What is under (x, y): {kind: "column", col} in the header band, {kind: "token", row, col}
 * in the graph (col = nearest column), or null outside.
 */
export function hitFlow(lay, x, y) {
  if (x < 0 || x > lay.width || y < 0 || y > lay.height) return null;
  const col = lay.colW > 0 ? Math.round((x - lay.left) / lay.colW) : 0;
  const c = Math.max(0, Math.min(lay.cols - 1, col));
  if (y < lay.top) return { kind: "column", col: c };
  const row = Math.floor((y - lay.top) / lay.rowH);
  if (row < 0 || row >= lay.n) return null;
  return { kind: "token", row, col: c };
}

/**
 * Group edges into `nBuckets` strength classes by |w| / peak so each class is stroked
 * as one path (one canvas call per class instead of one per edge). Returns an Int32Array
 * of bucket ids, -1 for zero or non-finite weights. Negative weights get ids offset by
 * nBuckets, so signed graphs can use a second colour.
 */
export function bucketEdges(weights, peak, nBuckets = EDGES.n_buckets) {
  const out = new Int32Array(weights.length);
  const inv = peak > 0 ? 1 / peak : 0;
  for (let k = 0; k < weights.length; k++) {
    const w = weights[k];
    if (!(w !== 0 && Number.isFinite(w))) {
      out[k] = -1;
      continue;
    }
    const x = Math.min(1, Math.abs(w) * inv);
    const b = Math.min(nBuckets - 1, Math.floor(x * nBuckets));
    out[k] = w < 0 ? b + nBuckets : b;
  }
  return out;
}

/** Line width and opacity of a bucket (0 weakest .. nBuckets - 1 strongest). */
export function bucketStyle(bucket, nBuckets = EDGES.n_buckets) {
  const b = bucket % nBuckets;
  const x = (b + 1) / nBuckets;
  return { width: EDGES.width[0] + EDGES.width[1] * x, alpha: EDGES.alpha[0] + EDGES.alpha[1] * x };
}

/** Offsets of each layer's edges in the flat arrays from per-layer counts. */
export function layerOffsets(counts) {
  const off = new Int32Array(counts.length + 1);
  for (let l = 0; l < counts.length; l++) off[l + 1] = off[l] + counts[l];
  return off;
}
