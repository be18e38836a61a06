// Mouse and keyboard on the heatmap: hover tooltips, clicks that select tokens, drag a
// rectangle to zoom, arrow keys, + - 0 for zoom, and the strip's clicks.
import { localPoint, setTraits } from "../lib/dom.js";
import { clearHover } from "../lib/view.js";
import { printable } from "../lib/layout.js";
import { hitView, rectToView, valueAt, zoomBy } from "../lib/zoom.js";

/** Pixels a press must move before it is a drag (a zoom rectangle), not a click. */
export const DRAG_PX = 5;

/**
 * What a key does: {move: +1 | -1}, {clear: true} (Escape), {zoom: 2 | 0.5}, {reset: true}
 * (whole map), or null (not ours). Arrows move the strip's subject.
 */
export function keyAction(key) {
  if (key === "ArrowDown" || key === "ArrowRight") return { move: 1 };
  if (key === "ArrowUp" || key === "ArrowLeft") return { move: -1 };
  if (key === "Escape") return { clear: true };
  if (key === "+" || key === "=") return { zoom: 2 };
  if (key === "-") return { zoom: 0.5 };
  if (key === "0") return { reset: true };
  return null;
}

/** The next subject index after `move` from `current` (null: start at 0), in 0..n-1. */
export function stepIndex(current, move, n) {
  const at = current === null || current === undefined ? 0 : current;
  return Math.max(0, Math.min(n - 1, at + move));
}

/** The tooltip text of a map hit. `value` is NaN while the cell is not loaded. */
export function hitText(hit, { tokens, keys, value, step = 1, cross = false }) {
  if (hit.kind === "cell") {
    const what = Number.isNaN(value) ? "loading\u2026" : step > 1 ? `${value.toFixed(4)} (max of ${step}\u00d7${step})` : value.toFixed(4);
    return `${printable(tokens[hit.row])} [${hit.row}] \u2192 ${printable(keys[hit.col])} [${hit.col}]\n${what}`;
  }
  const i = hit.kind === "row" ? hit.row : hit.col;
  const label = hit.kind === "row" ? tokens[i] : keys[i];
  const what = cross ? (hit.kind === "row" ? " (query)" : " (key)") : "";
  return `${printable(label)} [${i}]${what}`;
}

/** The selection a click sets: cross-attention rows / columns / cells, else one token. */
export function clickSelection(hit, cross) {
  if (!cross) return { token: hit.kind === "col" ? hit.col : hit.row };
  // A query (row label) becomes `token` and the strip shows its row ("from"); a key
  // (column label) becomes `key_token` and the strip shows its column ("to"); a cell sets
  // both, keeping the direction.
  if (hit.kind === "cell") return { token: hit.row, key_token: hit.col };
  if (hit.kind === "row") return { token: hit.row, direction: "from" };
  return { key_token: hit.col, direction: "to" };
}

/** Zoom by `factor` around the selected cell (row `token`, column `key_token` or `token`). */
export function zoomStep(v, factor) {
  const { model } = v;
  const tok = model.get("token");
  const key = v.isCross() ? model.get("key_token") : tok;
  const at = {};
  if (tok !== null && tok !== undefined) at.row = tok;
  if (key !== null && key !== undefined) at.col = key;
  v.setView(zoomBy(v.currentView(), factor, { nRows: v.nTokens(), nCols: v.nKeys(), ...at }));
}

/** Listener tables: {canvas, window, strip}, for dom.listen. */
export function mapHandlers(v) {
  const { model, canvas, panel, band } = v;
  let drag = null; // {x, y} where a drag on the map started
  let suppressClick = false;
  const hitAt = (ev) => {
    const p = localPoint(canvas, ev);
    return { p, hit: hitView(v.lay, p.x, p.y) };
  };
  const canvasTable = {
    mousemove: (ev) => {
      if (!v.lay || !v.current) return;
      const { p, hit } = hitAt(ev);
      if (drag) {
        const dx = p.x - drag.x;
        const dy = p.y - drag.y;
        if (Math.abs(dx) >= DRAG_PX || Math.abs(dy) >= DRAG_PX) {
          const cr = canvas.getBoundingClientRect();
          const pr = panel.getBoundingClientRect();
          band.style.display = "block";
          band.style.left = `${cr.left - pr.left + Math.min(p.x, drag.x)}px`;
          band.style.top = `${cr.top - pr.top + Math.min(p.y, drag.y)}px`;
          band.style.width = `${Math.abs(dx)}px`;
          band.style.height = `${Math.abs(dy)}px`;
        }
      }
      const prev = v.hover;
      v.hover = hit;
      if (JSON.stringify(prev) !== JSON.stringify(hit)) v.draw();
      const where = localPoint(panel, ev);
      if (!hit) {
        v.tip.hide();
        return;
      }
      const value = hit.kind === "cell" ? valueAt(v.current, hit.row, hit.col) : NaN;
      const text = hitText(hit, { tokens: model.get("tokens"), keys: v.keyLabels(), value, step: v.current.step || 1, cross: v.isCross() });
      v.tip.show(text, where.x, where.y);
    },
    mouseleave: clearHover(v),
    click: (ev) => {
      if (!v.lay) return;
      if (suppressClick) {
        suppressClick = false;
        return;
      }
      const { hit } = hitAt(ev);
      if (!hit) return;
      setTraits(model, clickSelection(hit, v.isCross()));
      v.draw();
    },
    // Drag a rectangle on the map to zoom into it.
    mousedown: (ev) => {
      if (!v.lay || ev.button !== 0) return;
      const { p, hit } = hitAt(ev);
      drag = hit && hit.kind === "cell" ? { x: p.x, y: p.y } : null;
    },
    keydown: (ev) => {
      const act = keyAction(ev.key);
      if (!act) return;
      ev.preventDefault();
      if (act.zoom) return zoomStep(v, act.zoom);
      if (act.reset) return v.setView(null);
      // Arrows move the strip's subject: the key `key_token` for cross-attention "to".
      const crossTo = v.isCross() && model.get("direction") === "to";
      const n = crossTo ? v.nKeys() : v.nTokens();
      const next = act.clear ? null : stepIndex(crossTo ? model.get("key_token") : model.get("token"), act.move, n);
      if (crossTo) {
        setTraits(model, { key_token: next });
        v.draw();
      } else v.selectToken(next);
    },
  };
  const windowTable = {
    mouseup: (ev) => {
      if (!drag) return;
      const p = localPoint(canvas, ev);
      const view = rectToView(v.lay, drag.x, drag.y, p.x, p.y, { minPx: DRAG_PX });
      drag = null;
      band.style.display = "none";
      if (view) {
        suppressClick = true;
        v.setView(view);
      }
    },
  };
  const stripTable = {
    click: (ev) => {
      const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
      if (!span || span.dataset.index === undefined) return;
      const i = Number(span.dataset.index);
      const listed = v.strip.dataset.axis;
      if (listed === "keys") setTraits(model, clickSelection({ kind: "col", col: i }, true));
      else if (listed === "queries") setTraits(model, clickSelection({ kind: "row", row: i }, true));
      else return v.selectToken(i);
      v.draw();
    },
  };
  return { canvas: canvasTable, window: windowTable, strip: stripTable };
}
