// Vision transformer heatmaps: the patch grid laid over the image, which token a patch
// is, the translucent attention overlay, and which axis a cross-attention strip lists.
// Pure functions of numbers, so drawing, clicking and the unit tests share them.
import { paint } from "./colormap.js";

/**
 * The patch grid of a vision trace: {rows, cols, offset} when `grid` is [rows, cols] and
 * the `rows * cols` patch tokens after `offset` special tokens are exactly the `n` tokens;
 * else null (not a vision trace, or an inconsistent one: drawn as a plain strip).
 */
export function patchGrid(grid, offset, n) {
  if (!Array.isArray(grid) || grid.length !== 2) return null;
  const [rows, cols] = grid.map(Number);
  const off = Number(offset) || 0;
  if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0)) return null;
  if (!(Number.isInteger(off) && off >= 0) || off + rows * cols !== n) return null;
  return { rows, cols, offset: off };
}

/**
 * Where an imgW x imgH image (split into rows x cols patches) is drawn: scaled to fit
 * maxW x maxH keeping its aspect (never upscaled past `maxUp` x), at (0, 0).
 */
export function imageLayout({ imgW, imgH, rows, cols, maxW, maxH, maxUp = 16 }) {
  const k = Math.min(maxW / imgW, maxH / imgH, maxUp);
  const width = Math.max(1, Math.round(imgW * k));
  const height = Math.max(1, Math.round(imgH * k));
  return { width, height, rows, cols, cellW: width / cols, cellH: height / rows };
}

/** The patch {row, col} under (x, y) in the image layout, or null outside it. */
export function hitPatch(lay, x, y) {
  if (!(x >= 0 && y >= 0 && x < lay.width && y < lay.height)) return null; // also NaN
  const row = Math.min(lay.rows - 1, Math.floor(y / lay.cellH));
  const col = Math.min(lay.cols - 1, Math.floor(x / lay.cellW));
  return { row, col };
}

/** Token index of patch (row, col): patches are row-major after the special tokens. */
export function patchToken(row, col, grid) {
  return grid.offset + row * grid.cols + col;
}

/** The patch {row, col} of token `i`, or null for a special token (or out of range). */
export function tokenPatch(i, grid) {
  const k = i - grid.offset;
  if (!Number.isInteger(k) || k < 0 || k >= grid.rows * grid.cols) return null;
  return { row: Math.floor(k / grid.cols), col: k % grid.cols };
}

/** The values of the patch tokens (a Float32Array, row-major) and their max. */
export function patchValues(values, grid) {
  const n = grid.rows * grid.cols;
  const data = new Float32Array(n);
  let max = 0;
  for (let i = 0; i < n; i++) {
    const v = Number(values[grid.offset + i]);
    data[i] = Number.isFinite(v) ? v : 0;
    if (data[i] > max) max = data[i];
  }
  return { data, max };
}

/**
 * RGBA pixels (one per patch) of the overlay: colour from `lut` and opacity growing with
 * the value, from fully transparent at 0 to `alpha` at `max`; the image shows through.
 */
export function paintOverlay(values, max, lut, out, { alpha = 0.7, gamma = 1 } = {}) {
  return paint(values, max, lut, out, gamma, alpha);
}

/**
 * Cross-attention (rows: queries, columns: keys): which index the strip is about and
 * which tokens it lists. "from": the query `token`'s row over the keys; "to": the key
 * `keyToken`'s column over the queries. Self-attention: `token` both ways, over `tokens`.
 * Returns {subject, labels, axis: "keys" | "queries" | "tokens", selected} where
 * `selected` is the index to mark in the strip (the other axis' selection for cross).
 */
export function stripAxis({ cross, dir, token, keyToken, tokens, keyTokens }) {
  const tok = token ?? null;
  const key = keyToken ?? null;
  if (!cross) return { subject: tok, labels: tokens, axis: "tokens", selected: tok };
  if (dir === "to") return { subject: key, labels: tokens, axis: "queries", selected: tok };
  return { subject: tok, labels: keyTokens, axis: "keys", selected: key };
}
