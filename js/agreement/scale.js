// The diverging scale of the agreement table (style.json `diverging`): -1 .. 0 .. +1,
// linear in RGB between the three stops, on the light or the dark stops by the background.
import { luminance, parseColor } from "../lib/colormap.js";
import { COLORMAP, DIVERGING } from "../lib/style.js";

/** The stops ({negative, zero, positive, missing}) for a background colour. */
export function divergingStops(background) {
  const bg = parseColor(background) || COLORMAP.default_background;
  return luminance(bg) < COLORMAP.dark_luminance ? DIVERGING.dark : DIVERGING.light;
}

/** [r, g, b] of `value` in [-1, 1] (clamped); null / NaN: the missing colour. */
export function divergingRgb(value, stops) {
  if (value === null || value === undefined || Number.isNaN(value)) return stops.missing.slice();
  const x = Math.max(-1, Math.min(1, Number(value)));
  const [a, b, f] = x < 0 ? [stops.zero, stops.negative, -x] : [stops.zero, stops.positive, x];
  return [0, 1, 2].map((c) => Math.round(a[c] + (b[c] - a[c]) * f));
}

export const css = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

/** Black or white text, whichever reads on [r, g, b]. */
export function textColour(rgb) {
  return luminance(rgb) > 0.35 ? "#111" : "#fff";
}

/** The CSS linear-gradient of the legend bar, -1 (left) to +1 (right). */
export function legendGradient(stops) {
  return `linear-gradient(to right, ${css(stops.negative)}, ${css(stops.zero)}, ${css(stops.positive)})`;
}
