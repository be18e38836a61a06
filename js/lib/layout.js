// Geometry and hit-testing for the panels. Pure functions of numbers, so the same
// maths serves drawing, clicking and the unit tests. Label rules: style.json `labels`.
import { LABELS } from "./style.js";

/** Cell size (CSS px) that fits `nHeads` columns into `available` px. */
export function fitCell(available, nHeads, { min = 10, max = 64, gap = 2, left = 0 } = {}) {
  if (!(nHeads > 0)) return min;
  const c = Math.floor((available - left) / nHeads) - gap;
  return Math.max(min, Math.min(max, c));
}

/** Layout of the layers x heads grid. */
export function matrixLayout({ nLayers, nHeads, cell, gap = 2, left = 28, top = 18 }) {
  const pitch = cell + gap;
  return {
    nLayers,
    nHeads,
    cell,
    gap,
    left,
    top,
    pitch,
    width: left + nHeads * pitch,
    height: top + nLayers * pitch,
  };
}

/** Top-left corner of cell (layer, head). */
export function cellOrigin(lay, layer, head) {
  return { x: lay.left + head * lay.pitch, y: lay.top + layer * lay.pitch };
}

/** (layer, head) under point (x, y) in CSS px, or null (gaps and labels hit nothing). */
export function hitMatrix(lay, x, y) {
  const cx = x - lay.left;
  const cy = y - lay.top;
  if (!(cx >= 0 && cy >= 0)) return null; // also NaN
  const head = Math.floor(cx / lay.pitch);
  const layer = Math.floor(cy / lay.pitch);
  if (head >= lay.nHeads || layer >= lay.nLayers) return null;
  if (cx - head * lay.pitch >= lay.cell || cy - layer * lay.pitch >= lay.cell) return null;
  return { layer, head };
}

/** Draw every k-th label so labels `fontPx` tall never overlap on cells `cellPx` apart. */
export function labelStride(cellPx, fontPx) {
  if (!(cellPx > 0)) return Infinity;
  return Math.max(1, Math.ceil((fontPx * LABELS.line_height) / cellPx));
}

/**
 * Indices of labels to draw: every `stride`-th, plus the always-shown ones (selection,
 * hover). A regular label closer than `stride` to an always-shown one is dropped, so it
 * cannot overlap it.
 */
export function visibleLabels(n, stride, always = []) {
  const keep = [...new Set(always.filter((i) => Number.isInteger(i) && i >= 0 && i < n))];
  const out = new Set(keep);
  if (Number.isFinite(stride)) {
    for (let i = 0; i < n; i += stride) {
      if (!keep.some((a) => Math.abs(a - i) < stride)) out.add(i);
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** Shorten a label to at most `max` characters (code points, so no emoji is split), with an ellipsis. */
export function truncate(label, max) {
  const s = String(label);
  const chars = Array.from(s);
  if (chars.length <= max) return s;
  return `${chars.slice(0, Math.max(0, max - 1)).join("")}\u2026`;
}

/** Printable form of a token for canvas text (newlines, tabs and control characters made visible). */
export function printable(tok) {
  return String(tok)
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t")
    .replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "\ufffd");
}
