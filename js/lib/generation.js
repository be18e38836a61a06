// Prompt and generated tokens (attn_widgets.trace_generate): the `prompt_length` fact P
// (tokens P.. were generated; 0: not a generation, nothing is drawn), which rows and
// columns are generated, where the boundary falls in a zoomed range or in the flow rows
// once tokens are collapsed into "… N tokens" gaps, and its colour. Pure functions; sizes
// and colours: style.json `generation` (render/generation.py reads the same section).
import { luminance, parseColor } from "./colormap.js";
import { h } from "./dom.js";
import { COLORMAP, GENERATION, ROUTE } from "./style.js";

/** P of `model` when it is a usable boundary (an integer, 1 <= P < nTokens), else 0. */
export function promptLength(model, nTokens = (model.get("tokens") || []).length) {
  const p = model.get("prompt_length");
  return Number.isInteger(p) && p >= 1 && p < nTokens ? p : 0;
}

/** Whether token `i` was generated, for boundary `p` (0: none is). */
export function isGenerated(i, p) {
  return p > 0 && i >= p;
}

/** The boundary colour ("#rrggbb") on `background` (light / dark as the colour maps). */
export function generationColour(background) {
  const bg = parseColor(background) || COLORMAP.default_background;
  return luminance(bg) < COLORMAP.dark_luminance ? GENERATION.dark : GENERATION.light;
}

/**
 * Where the boundary falls in the cell range [v0, v1) (a zoomed axis): its offset in cells
 * from v0 (the line sits between cells p - 1 and p), or null when it is not strictly
 * inside (the range is all prompt, all answer, or the boundary is at its edge).
 */
export function boundaryOffset(p, v0, v1) {
  return p > 0 && p > v0 && p < v1 ? p - v0 : null;
}

/** The strip child index before which the boundary marker goes: p, or -1 for none. */
export function stripBoundary(p, n) {
  return p > 0 && p < n ? p : -1;
}

/**
 * The flow rows (js/flow/graph.js rowLayout: {slots, y, slotOf, height, labelled}) with
 * the boundary at token `p`: a gap that holds tokens on both sides is split into a prompt
 * gap and an answer gap (each `gapPx` tall, so no "… N tokens" row mixes the two), and a
 * band `bandPx` tall goes between the last prompt slot and the first answer slot; every
 * row below moves down. Returns the same shape plus `boundary`: {y0, y1, y} (the band, y
 * its centre) or null when `p` is not a boundary (then the rows are returned as they are).
 */
export function splitRowsAt(rows, p, { gapPx = ROUTE.gap_px, bandPx = GENERATION.band_px } = {}) {
  const n = rows.y.length;
  if (!(p > 0 && p < n) || !rows.slots.length) return { ...rows, boundary: null };
  const top = rows.slots[0].y0;
  const slots = [];
  const y = new Float32Array(n);
  const slotOf = new Int32Array(n);
  let at = top;
  let boundary = null;
  const place = (s, height) => {
    const out = { ...s, y0: at, y1: at + height };
    slots.push(out);
    const k = slots.length - 1;
    const c = at + height / 2;
    if (s.kind === "token") {
      y[s.i] = c;
      slotOf[s.i] = k;
    } else {
      for (let i = s.from; i <= s.to; i++) {
        y[i] = c;
        slotOf[i] = k;
      }
    }
    at += height;
  };
  for (const s of rows.slots) {
    const first = s.kind === "token" ? s.i : s.from;
    const last = s.kind === "token" ? s.i : s.to;
    if (boundary === null && last >= p) {
      const straddles = s.kind === "gap" && first < p;
      if (straddles) place({ kind: "gap", from: first, to: p - 1 }, gapPx);
      boundary = { y0: at, y1: at + bandPx, y: at + bandPx / 2 };
      at += bandPx;
      if (straddles) {
        place({ kind: "gap", from: p, to: last }, gapPx);
        continue;
      }
    }
    place(s, s.y1 - s.y0);
  }
  return { slots, y, slotOf, height: at - top, labelled: rows.labelled, boundary };
}

// -- the strips' DOM (heatmap and flow): text via textContent only ------------------------

/** The prompt | answer marker of a strip (a separator, not an option: clicks pass it by). */
export function appendBoundary(box) {
  const m = h("span", "aw-gen-boundary", GENERATION.labels[1]);
  m.setAttribute("role", "separator");
  m.setAttribute("aria-label", `${GENERATION.labels[0]} | ${GENERATION.labels[1]}`);
  m.title = "the tokens after this mark were generated (the answer)";
  m.style.cssText = "padding:0 3px 0 4px;font-size:10px;align-self:center;white-space:nowrap;font-family:var(--jp-ui-font-family, sans-serif);";
  box.appendChild(m);
  return m;
}

/** Colour a strip's generated chips and its marker for the theme (call after colouring by value). */
export function styleGenerated(spans, marker, p, colour, coloured) {
  if (!(p > 0)) return;
  const u = GENERATION.underline_px;
  if (marker) {
    marker.style.color = colour;
    marker.style.borderLeft = `2px solid ${colour}`;
  }
  for (let i = p; i < spans.length; i++) {
    spans[i].style.boxShadow = `inset 0 -${u}px 0 ${colour}`;
    if (!coloured) spans[i].style.color = colour; // uncoloured chips: the text itself says "answer"
  }
}
