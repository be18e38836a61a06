// Sequential colour maps that read on light and dark backgrounds alike: each map runs
// from the panel background to a saturated colour, so "no attention" is invisible
// and strong attention stands out in either theme. Stops and thresholds: style.json.
import { COLORMAP } from "./style.js";

/** Parse "#rgb", "#rrggbb", "rgb(r, g, b)" or "rgba(...)" into [r, g, b]; null if unparseable. */
export function parseColor(str) {
  if (typeof str !== "string") return null;
  const s = str.trim();
  let m = /^#([0-9a-f]{3})$/i.exec(s);
  if (m) return m[1].split("").map((c) => parseInt(c + c, 16));
  m = /^#([0-9a-f]{6})([0-9a-f]{2})?$/i.exec(s);
  if (m) return [0, 2, 4].map((i) => parseInt(m[1].slice(i, i + 2), 16));
  m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)/i.exec(s);
  if (m) return [m[1], m[2], m[3]].map((v) => Math.round(Number(v)));
  return null;
}

/** Relative luminance (0 black .. 1 white) of an [r, g, b] colour. */
export function luminance([r, g, b]) {
  const lin = (c) => {
    const x = c / 255;
    return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

const N = COLORMAP.lut_size;

/** RGBA lookup table (style.json `lut_size` entries, 256) through evenly spaced colour stops. */
export function makeLut(stops) {
  if (!Array.isArray(stops) || stops.length < 2) throw new Error("makeLut needs at least two stops");
  const lut = new Uint8ClampedArray(N * 4);
  const segs = stops.length - 1;
  for (let i = 0; i < N; i++) {
    const x = (i / (N - 1)) * segs;
    const k = Math.min(Math.floor(x), segs - 1);
    const f = x - k;
    const a = stops[k];
    const b = stops[k + 1];
    for (let c = 0; c < 3; c++) lut[i * 4 + c] = Math.round(a[c] + (b[c] - a[c]) * f);
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

/** The colour stops of the map on `background`: the background, then the light or dark stops. */
export function themeStops(background) {
  const bg = parseColor(background) || COLORMAP.default_background;
  const dark = luminance(bg) < COLORMAP.dark_luminance;
  return [bg, ...(dark ? COLORMAP.dark_stops : COLORMAP.light_stops)];
}

/** The attention colour map for a given background colour (theme-aware). */
export function themeLut(background) {
  return makeLut(themeStops(background));
}

/** Index 0..255 of `value` on a scale from 0 to `max`; gamma < 1 lifts small weights. */
export function lutIndex(value, max, gamma = 1) {
  if (!(max > 0) || !(value > 0)) return 0;
  const x = Math.min(value / max, 1);
  return Math.round((gamma === 1 ? x : x ** gamma) * 255);
}

/** CSS colour string of a LUT entry. */
export function lutCss(lut, idx) {
  const i = Math.max(0, Math.min(255, idx | 0)) * 4;
  return `rgb(${lut[i]}, ${lut[i + 1]}, ${lut[i + 2]})`;
}

// Luminance at which black and white text have the same WCAG contrast ratio
// ((L + 0.05) / 0.05 === 1.05 / (L + 0.05)); either side, the chosen colour has >= 4.58:1.
const TEXT_SWITCH = Math.sqrt(1.05 * 0.05) - 0.05;

/** Black or white text, whichever has the higher contrast on the LUT entry. */
export function textOn(lut, idx) {
  const i = Math.max(0, Math.min(255, idx | 0)) * 4;
  return luminance([lut[i], lut[i + 1], lut[i + 2]]) > TEXT_SWITCH ? "#000" : "#fff";
}

/**
 * Fill RGBA pixels for `values` (length n) scaled to `max`. Opaque by default; with
 * `alpha` (0..1) each pixel's opacity grows with its value up to `alpha` (overlays).
 */
export function paint(values, max, lut, out, gamma = 1, alpha = null) {
  const n = values.length;
  const px = out || new Uint8ClampedArray(n * 4);
  const inv = max > 0 ? 1 / max : 0;
  for (let i = 0; i < n; i++) {
    let x = values[i] * inv;
    x = x > 1 ? 1 : x > 0 ? x : 0;
    if (gamma !== 1) x = x ** gamma;
    const j = Math.round(x * 255) * 4;
    const o = i * 4;
    px[o] = lut[j];
    px[o + 1] = lut[j + 1];
    px[o + 2] = lut[j + 2];
    px[o + 3] = alpha === null ? 255 : Math.round(x * alpha * 255);
  }
  return px;
}

// ---- normalisations (style.json colormap.norms): where a value sits on the colour bar ----

export const NORMS = COLORMAP.norms;
const LOG_R = COLORMAP.log_range;
const LOG_DEN = Math.log(LOG_R);

/** Position 0..1 of `value` on a 0..`max` scale under `norm` ("linear" | "sqrt" | "log"). */
export function normT(value, max, norm = "linear") {
  if (!(max > 0) || !(value > 0)) return 0;
  const x = value >= max ? 1 : value / max;
  if (norm === "sqrt") return Math.sqrt(x);
  if (norm === "log") return Math.log1p((LOG_R - 1) * x) / LOG_DEN;
  return x;
}

/** The value at position `t` (0..1) of a 0..`max` colour bar under `norm` (normT inverted). */
export function normValue(t, max, norm = "linear") {
  const c = t <= 0 ? 0 : t >= 1 ? 1 : t;
  if (norm === "sqrt") return c * c * max;
  if (norm === "log") return (Math.expm1(c * LOG_DEN) / (LOG_R - 1)) * max;
  return c * max;
}

/** LUT index 0..255 of `value` on a 0..`max` scale under `norm`. */
export function normIndex(value, max, norm = "linear") {
  return Math.round(normT(value, max, norm) * (N - 1));
}

/** Like paint(), with a normalisation instead of a gamma. */
export function paintNorm(values, max, lut, out, norm = "linear") {
  if (norm === "sqrt") return paint(values, max, lut, out, 0.5);
  if (norm !== "log") return paint(values, max, lut, out, 1);
  return paintIndexed(values, lut, out, (v) => normIndex(v, max, "log"));
}

/** Opaque RGBA pixels of `values`, each the LUT entry `index(value)` (0..255). */
function paintIndexed(values, lut, out, index) {
  const n = values.length;
  const px = out || new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    const j = index(values[i]) * 4;
    const o = i * 4;
    px[o] = lut[j];
    px[o + 1] = lut[j + 1];
    px[o + 2] = lut[j + 2];
    px[o + 3] = 255;
  }
  return px;
}

// ---- diverging map (compare mode): -max .. 0 (background) .. +max ----

/** Colour stops of the diverging map on `background`: strong negative .. background .. strong positive. */
export function divergingStops(background) {
  const bg = parseColor(background) || COLORMAP.default_background;
  const dark = luminance(bg) < COLORMAP.dark_luminance;
  const d = COLORMAP.diverging;
  const neg = dark ? d.dark_negative : d.light_negative;
  const pos = dark ? d.dark_positive : d.light_positive;
  return [neg[1], neg[0], bg, pos[0], pos[1]];
}

/** The diverging LUT for a background colour. */
export function divergingLut(background) {
  return makeLut(divergingStops(background));
}

/** LUT index 0..255 of a signed `value` on a -`max`..`max` diverging scale (0 -> 127 or 128, the background). */
export function divergingIndex(value, max) {
  if (!(max > 0) || !Number.isFinite(value)) return value > 0 ? N - 1 : value < 0 ? 0 : Math.round((N - 1) / 2);
  const x = Math.max(-1, Math.min(1, value / max));
  return Math.round(((x + 1) / 2) * (N - 1));
}

/** Fill RGBA pixels for signed `values` on a -max..max diverging LUT. */
export function paintDiverging(values, max, lut, out) {
  return paintIndexed(values, lut, out, (v) => divergingIndex(v, max));
}
