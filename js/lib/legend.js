// Colour bars: what a panel's colours mean, their range and their normalisation, in one
// small element with class `aw-legend`. The maths (ticks, gradient, text) is pure and
// unit-tested (js/tests/legend.test.js); the element is built with textContent only (the
// names in a legend can come from users) and inline styles, so it needs no stylesheet and
// works inside shadow roots too.
import { divergingIndex, lutCss, normIndex, normValue } from "./colormap.js";

const NORM_WORDS = { linear: "linear", sqrt: "sqrt", log: "log" };
const SCALE_WORDS = {
  head: "each head to its own max",
  layer: "shared per layer",
  global: "shared across all layers",
};

/** A short number for a colour bar: 0, 0.0123, 0.224, 1.5e-4, 12.3. */
export function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e4) return v.toExponential(1).replace("e-", "e\u2212").replace(/^-/, "\u2212");
  const s = a >= 100 ? v.toFixed(0) : a >= 1 ? v.toPrecision(3) : v.toPrecision(2);
  return String(Number(s)).replace(/^-/, "\u2212");
}

/**
 * What a legend shows, as plain data.
 *
 * opts: `max` (> 0: the value at the top of the bar), `norm` ("linear" | "sqrt" | "log"),
 * `scale` ("head" | "layer" | "global" or null), `what` (what the colour measures),
 * `diverging` (true: the bar runs -max..0..max), `names` ([this, other] for a diverging bar),
 * `ticks` (number of ticks, >= 2), `note` (appended to the title, e.g. "capped at p99").
 * Returns `{ title, ticks: [{t, text}], lo, hi, stops: [t, lutIndex][] }`; `t` is a
 * position 0..1 along the bar, and `stops` sample the LUT for the gradient.
 */
export function legendModel(opts) {
  const { max, norm = "linear", scale = null, what = "attention weight", diverging = false, names = null, note = "" } = opts;
  const nt = Math.max(2, opts.ticks ?? 3);
  if (!NORM_WORDS[norm]) throw new Error(`legend: norm must be one of ${Object.keys(NORM_WORDS).join(", ")}, got ${norm}`);
  const m = Number.isFinite(max) && max > 0 ? max : 0;
  const parts = [what];
  if (diverging) parts.push("difference, centred at 0");
  else parts.push(`${NORM_WORDS[norm]} scale`);
  if (scale && SCALE_WORDS[scale]) parts.push(SCALE_WORDS[scale]);
  if (note) parts.push(note);
  const ticks = [];
  const stops = [];
  const NS = 16;
  if (diverging) {
    for (let i = 0; i < nt; i++) {
      const t = i / (nt - 1);
      const v = (2 * t - 1) * m;
      ticks.push({ t, text: i === 0 || i === nt - 1 ? (v > 0 ? "+" : "") + formatValue(v) : formatValue(Math.abs(v) < 1e-12 ? 0 : v) });
    }
    for (let i = 0; i <= NS; i++) {
      const t = i / NS;
      stops.push([t, divergingIndex((2 * t - 1) * m, m)]);
    }
  } else {
    for (let i = 0; i < nt; i++) {
      const t = i / (nt - 1);
      ticks.push({ t, text: formatValue(normValue(t, m, norm)) });
    }
    for (let i = 0; i <= NS; i++) {
      const t = i / NS;
      // The colour at bar position t is the one a value normValue(t) gets: the bar is drawn
      // in the normalised space, so its ticks are spaced evenly there.
      stops.push([t, m > 0 ? normIndex(normValue(t, m, norm), m, norm) : 0]);
    }
  }
  const [a, b] = Array.isArray(names) && names.length === 2 ? names.map(String) : ["this", "compare"];
  return {
    title: parts.join(", "),
    ticks,
    lo: diverging ? `\u2190 ${b} larger` : "",
    hi: diverging ? `${a} larger \u2192` : "",
    stops,
  };
}

/** CSS linear-gradient of the LUT entries picked by a legend model's stops. */
export function gradientCss(lut, stops) {
  return `linear-gradient(to right, ${stops.map(([t, i]) => `${lutCss(lut, i)} ${(t * 100).toFixed(1)}%`).join(", ")})`;
}

function el(doc, tag, cls, text) {
  const e = doc.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

const BAR_W = 120;

/**
 * A colour bar element (class `aw-legend`) for `opts` (see legendModel) drawn with `lut`.
 * `doc` defaults to the page's document. Update it later with updateLegend(el, lut, opts).
 */
export function createLegend(lut, opts, doc = globalThis.document) {
  const root = el(doc, "div", "aw-legend");
  Object.assign(root.style, {
    display: "flex", alignItems: "center", gap: "6px", flexWrap: "wrap", fontSize: "11px",
    color: "var(--jp-ui-font-color2, #616161)", margin: "2px 0", lineHeight: "1.2",
  });
  const title = el(doc, "span", "aw-legend-title");
  const lo = el(doc, "span", "aw-legend-lo");
  const box = el(doc, "span", "aw-legend-box");
  Object.assign(box.style, { display: "inline-flex", flexDirection: "column", width: `${BAR_W}px` });
  const bar = el(doc, "span", "aw-legend-bar");
  Object.assign(bar.style, { display: "block", height: "8px", border: "1px solid var(--jp-border-color2, #e0e0e0)" });
  const ticks = el(doc, "span", "aw-legend-ticks");
  Object.assign(ticks.style, { display: "block", position: "relative", height: "13px" });
  const hi = el(doc, "span", "aw-legend-hi");
  box.appendChild(bar);
  box.appendChild(ticks);
  for (const c of [title, lo, box, hi]) root.appendChild(c);
  root._aw = { title, lo, bar, ticks, hi, doc };
  updateLegend(root, lut, opts);
  return root;
}

/** Redraw a legend made by createLegend for a new LUT / range / normalisation. */
export function updateLegend(root, lut, opts) {
  const parts = root._aw;
  const model = legendModel(opts);
  parts.title.textContent = model.title;
  root.title = `colour: ${model.title}`;
  parts.lo.textContent = model.lo;
  parts.hi.textContent = model.hi;
  parts.lo.style.display = model.lo ? "" : "none";
  // Diverging: the title on its own line, so "<- b larger", the bar and "a larger ->" stay together.
  parts.title.style.flexBasis = model.lo ? "100%" : "";
  parts.hi.style.display = model.hi ? "" : "none";
  parts.bar.style.background = gradientCss(lut, model.stops);
  while (parts.ticks.firstChild) parts.ticks.removeChild(parts.ticks.firstChild);
  const n = model.ticks.length;
  model.ticks.forEach(({ t, text }, i) => {
    const s = el(parts.doc, "span", "aw-legend-tick", text);
    // First tick left-aligned, last right-aligned, the others centred: no text leaves the box.
    const shift = i === 0 ? "0" : i === n - 1 ? "-100%" : "-50%";
    Object.assign(s.style, { position: "absolute", left: `${(t * 100).toFixed(1)}%`, transform: `translateX(${shift})`, whiteSpace: "nowrap" });
    parts.ticks.appendChild(s);
  });
  return model;
}

const SCALE_OPTIONS = [["head", "per head"], ["layer", "per layer"], ["global", "global"]];
const NORM_OPTIONS = [["linear", "linear"], ["sqrt", "sqrt"], ["log", "log"]];

/**
 * Small <select>s for the `scale` and `norm` traits of `model` (only the traits named in
 * `which`), saved on change; `sync()` sets them from the model (call on trait changes).
 * Returns { el, sync }.
 */
export function scaleControls(model, which = ["scale", "norm"], doc = globalThis.document) {
  const box = el(doc, "span", "aw-scale-controls");
  Object.assign(box.style, { display: "inline-flex", gap: "4px", alignItems: "center" });
  const selects = {};
  for (const name of which) {
    const opts = name === "scale" ? SCALE_OPTIONS : NORM_OPTIONS;
    const sel = el(doc, "select", `aw-${name}`);
    sel.setAttribute("aria-label", name === "scale" ? "colour scale: what the bar tops out at" : "colour normalisation");
    sel.title = name === "scale" ? "colour scale shared per head, per layer or globally" : "colour normalisation";
    Object.assign(sel.style, { font: "inherit", fontSize: "11px" });
    for (const [value, label] of opts) {
      const o = el(doc, "option", "", label);
      o.value = value;
      sel.appendChild(o);
    }
    sel.addEventListener("change", () => {
      model.set(name, sel.value);
      model.save_changes();
    });
    selects[name] = sel;
    box.appendChild(sel);
  }
  const sync = () => {
    for (const [name, sel] of Object.entries(selects)) sel.value = model.get(name);
  };
  sync();
  return { el: box, sync };
}

/**
 * The prompt | answer key of a generation (js/lib/generation.js): "prompt ┃ answer" as
 * swatches in the boundary colour `colour`, then "tokens p–n-1 generated" and the panel's
 * `note` (where the boundary is drawn). Kept in `slot` (class `aw-gen-legend`, one per
 * slot); `p` = 0 (not a generation) removes it, so no empty entry is ever shown.
 * Returns the element or null.
 */
export function syncGenerationLegend(slot, p, n, colour, note = "", doc = globalThis.document) {
  let root = Array.from(slot.children).find((c) => c.classList.contains("aw-gen-legend")) || null;
  if (!(p > 0 && p < n)) {
    if (root) root.remove();
    return null;
  }
  if (!root) {
    root = el(doc, "span", "aw-gen-legend");
    Object.assign(root.style, {
      display: "inline-flex", alignItems: "center", gap: "4px", flexWrap: "wrap", fontSize: "11px",
      color: "var(--jp-ui-font-color2, #616161)", margin: "2px 0", lineHeight: "1.2",
    });
    const prompt = el(doc, "span", "aw-gen-swatch aw-gen-prompt", "prompt");
    const bar = el(doc, "span", "aw-gen-swatch aw-gen-line");
    const answer = el(doc, "span", "aw-gen-swatch aw-gen-answer", "answer");
    const text = el(doc, "span", "aw-gen-text");
    Object.assign(prompt.style, { fontFamily: "var(--jp-code-font-family, monospace)", padding: "0 3px" });
    Object.assign(answer.style, { fontFamily: "var(--jp-code-font-family, monospace)", padding: "0 3px" });
    Object.assign(bar.style, { display: "inline-block", width: "0", height: "13px" });
    for (const c of [prompt, bar, answer, text]) root.appendChild(c);
    root._aw = { prompt, bar, answer, text };
    slot.appendChild(root);
  }
  const { bar, answer, text } = root._aw;
  bar.style.borderLeft = `2px solid ${colour}`;
  answer.style.color = colour;
  answer.style.boxShadow = `inset 0 -2px 0 ${colour}`;
  text.textContent = `tokens ${p}\u2013${n - 1} generated${note ? `; ${note}` : ""}`;
  root.title = `prompt: tokens 0\u2013${p - 1}; answer (generated): tokens ${p}\u2013${n - 1}`;
  root.dataset.promptLength = String(p);
  return root;
}
