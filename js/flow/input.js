// Mouse and keyboard on the route graphs and strips: tooltips, click a token row to trace
// it, click a column header to pick a layer, arrows to move the traced token.
import { localPoint, setTraits } from "../lib/dom.js";
import { clearHover } from "../lib/view.js";
import { printable } from "../lib/layout.js";
import { gapText, slotAt } from "./graph.js";

/** What is under (x, y) of a graph layout: a column header, a token row, a gap, or null. */
export function hitRoute(lay, x, y) {
  if (!lay || x < 0 || x > lay.width || y < 0 || y > lay.height) return null;
  const c = Math.max(0, Math.min(lay.L, Math.round((x - lay.left) / (lay.colW || 1))));
  if (y < lay.top) return { kind: "column", col: c };
  const s = slotAt(lay.rows, y);
  if (!s) return null;
  return s.kind === "gap" ? { kind: "gap", col: c, from: s.from, to: s.to } : { kind: "token", row: s.i, col: c };
}

/** Tooltip of a hit. */
export function flowHitText(hit, { tokens, share = null, traced = null }) {
  if (hit.kind === "column") return hit.col === 0 ? "input embeddings" : `click: select layer ${hit.col - 1}`;
  if (hit.kind === "gap") return `${gapText({ from: hit.from, to: hit.to })} (${hit.from}\u2013${hit.to}) not among the route's top tokens; rows: all shows them`;
  const col = hit.col === 0 ? "input" : `after layer ${hit.col - 1}`;
  const extra = share === null ? "" : `\nshare of token ${traced}: ${share.toFixed(4)}`;
  return `${printable(tokens[hit.row])} [${hit.row}] \u00b7 ${col}${extra}`;
}

/** The traced token after key `key` (null: Escape; undefined: not ours), in 0..n-1. */
export function flowKey(key, token, n) {
  const at = token === null || token === undefined ? 0 : token;
  if (key === "ArrowDown") return Math.min(n - 1, at + 1);
  if (key === "ArrowUp") return Math.max(0, at - 1);
  if (key === "Escape") return null;
  return undefined;
}

/** Listener tables: {graph (each canvas), strips}, for dom.listen. */
export function flowHandlers(v) {
  const { model, panel } = v;
  const hitAt = (ev) => {
    const c = ev.currentTarget;
    const k = Number(c.dataset.graph);
    const p = localPoint(c, ev);
    const hit = hitRoute(v.layouts[k], p.x, p.y);
    return hit ? { ...hit, graph: k } : null;
  };
  const graph = {
    mousemove: (ev) => {
      const hit = hitAt(ev);
      v.hover = hit;
      const where = localPoint(panel, ev);
      if (hit) {
        let share = null;
        const g = v.graphs[hit.graph];
        if (hit.kind === "token" && g) share = g.node[hit.col * model.get("tokens").length + hit.row];
        v.tip.show(flowHitText(hit, { tokens: model.get("tokens"), share, traced: g && g.token }), where.x, where.y);
      } else v.tip.hide();
    },
    mouseleave: clearHover(v),
    click: (ev) => {
      const hit = hitAt(ev);
      if (!hit) return;
      if (hit.kind === "column") {
        if (hit.col > 0) setTraits(model, { layer: hit.col - 1 });
      } else if (hit.kind === "token") setTraits(model, { token: hit.row });
      v.draw();
    },
    keydown: (ev) => {
      const next = flowKey(ev.key, model.get("token"), model.get("tokens").length);
      if (next === undefined) return;
      ev.preventDefault();
      setTraits(model, { token: next });
      v.draw();
    },
  };
  const strips = {
    click: (ev) => {
      const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
      if (span && span.dataset.index !== undefined) setTraits(model, { token: Number(span.dataset.index) });
    },
  };
  return { graph, strips };
}
