// The sentence strip under the map: every token (or, for cross-attention, every key or
// every query) as a chip coloured by the subject token's row or column.
import { maxOf } from "../lib/codec.js";
import { lutCss, normIndex, textOn, themeLut } from "../lib/colormap.js";
import { h } from "../lib/dom.js";
import { createLegend, updateLegend } from "../lib/legend.js";
import { appendBoundary, generationColour, isGenerated, promptLength, stripBoundary, styleGenerated } from "../lib/generation.js";
import { fetchStrip, stripValues } from "./cache.js";

/** Colour a token chip by its value on the 0..vmax scale under `norm` (null: uncoloured, clickable). */
export function colourToken(el, value, vmax, lut, norm = "linear") {
  if (value === null || value === undefined) {
    el.style.background = "";
    el.style.color = "";
    delete el.dataset.value;
    el.title = "click to select this token";
    return;
  }
  const idx = normIndex(value, vmax, norm);
  el.style.background = lutCss(lut, idx);
  el.style.color = textOn(lut, idx);
  el.dataset.value = value.toFixed(4);
  el.title = value.toFixed(4);
}

/** (Re)build the strip's chips for `tokens`, listed as `name` ("tokens" | "keys" | "queries"). */
export function buildStrip(v, tokens = v.axis().labels, name = v.axis().axis) {
  v.strip.replaceChildren();
  // A long text wraps inside a scrolling box (about 8 lines); drawStrip keeps the selected token in view.
  v.strip.style.maxHeight = "13em";
  v.strip.style.overflowY = "auto";
  // Special-token marks are known for the queries (`special`), not for cross-attention keys.
  const special = name === "keys" ? [] : v.model.get("special") || [];
  // Prompt | answer of a generation: only over the trace's own tokens (never cross-attention keys).
  const p = name === "tokens" ? promptLength(v.model, tokens.length) : 0;
  const at = stripBoundary(p, tokens.length);
  v.stripLabels = tokens;
  v.strip.dataset.axis = name;
  v.strip.dataset.promptLength = String(p);
  v.stripBoundary = null;
  v.spans = tokens.map((tok, i) => {
    if (i === at) v.stripBoundary = appendBoundary(v.strip);
    let cls = special[i] ? "aw-tok aw-special" : "aw-tok";
    if (isGenerated(i, p)) cls += " aw-generated";
    const s = h("span", cls, tok);
    s.dataset.index = String(i);
    s.setAttribute("role", "option");
    v.strip.appendChild(s);
    return s;
  });
}

/**
 * Colour the strip by the subject's values; returns {lut, vals, subject} for the vision
 * overlay (vals null when no token is selected or its values are still loading). Self-attention: the
 * subject `token` over the tokens. Cross-attention: "from" lists the keys coloured by the
 * query `token`'s row, "to" the queries by the `key_token`'s column.
 */
export function drawStrip(v, th, dir, norm = "linear") {
  const ax = v.axis(dir);
  if (v.stripLabels !== ax.labels || v.spans.length !== ax.labels.length) buildStrip(v, ax.labels, ax.axis);
  const lut = themeLut(th.background);
  const subj = ax.subject;
  const has = subj !== null && subj !== undefined && subj < (dir === "from" ? v.nTokens() : v.nKeys());
  const vals = has ? stripValues(v, subj, dir) : null;
  if (has && !vals) fetchStrip(v, subj, dir);
  const vmax = vals ? maxOf(vals) : 0;
  const sel = ax.selected;
  v.spans.forEach((s, i) => {
    s.classList.toggle("aw-selected", i === sel);
    s.setAttribute("aria-selected", String(i === sel));
    colourToken(s, vals ? vals[i] : null, vmax, lut, norm);
  });
  styleGenerated(v.spans, v.stripBoundary, Number(v.strip.dataset.promptLength || 0), generationColour(th.background), !!vals);
  if (v.stripLegend) {
    const opts = {
      max: vmax,
      norm,
      what: dir === "from" ? "strip: attention from the selected token" : "strip: attention to the selected token",
      note: "0 .. its largest weight",
    };
    if (!v.stripLegendEl) {
      v.stripLegendEl = createLegend(lut, opts);
      v.stripLegend.appendChild(v.stripLegendEl);
    } else updateLegend(v.stripLegendEl, lut, opts);
    v.stripLegend.style.display = vals ? "" : "none";
  }
  if (sel !== null && sel !== undefined && v.spans[sel]) keepInView(v.strip, v.spans[sel]);
  return { lut, vals, subject: has ? subj : null };
}

/**
 * The scrollTop that shows a child spanning [top, top + height) in a box of visible height
 * `viewH` now scrolled to `scrollTop`: unchanged when it is already in view, else the child
 * centred (clamped at 0). Pure, for the strip's "keep the selected token in view".
 */
export function scrollToShow(top, height, scrollTop, viewH) {
  if (top >= scrollTop && top + height <= scrollTop + viewH) return scrollTop;
  return Math.max(0, Math.round(top + height / 2 - viewH / 2));
}

/** Scroll the strip box (not the page) so `span` is visible. */
export function keepInView(box, span) {
  if (!(box.clientHeight > 0) || box.scrollHeight <= box.clientHeight) return;
  const top = span.offsetTop - box.offsetTop; // offsetParent: the strip box (position: relative) or its panel
  const want = scrollToShow(top, span.offsetHeight, box.scrollTop, box.clientHeight);
  if (want !== box.scrollTop) box.scrollTop = want;
}
