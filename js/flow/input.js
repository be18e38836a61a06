// Mouse and keyboard on the flow graphs and strips: tooltips, click a token to trace it,
// click a column header to pick a layer, arrows to move the traced token.
import { localPoint, setTraits } from "../lib/dom.js";
import { clearHover } from "../lib/view.js";
import { hitFlow } from "../lib/flowlayout.js";
import { printable } from "../lib/layout.js";

/** Tooltip of a hit: a token at a column (with its share of the traced token), or a header. */
export function flowHitText(hit, { tokens, share = null, traced = null }) {
  if (hit.kind === "column") return hit.col === 0 ? "input embeddings" : `click: select layer ${hit.col - 1}`;
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
    const lay = v.layouts[k];
    if (!lay) return null;
    const p = localPoint(c, ev);
    const hit = hitFlow(lay, p.x, p.y);
    return hit ? { ...hit, graph: k } : null;
  };
  const graph = {
    mousemove: (ev) => {
      const hit = hitAt(ev);
      const prevRow = v.hover && v.hover.row;
      v.hover = hit;
      const where = localPoint(panel, ev);
      if (hit) {
        let share = null;
        const traced = model.get("token");
        if (hit.kind === "token" && v.nodes && traced !== null) {
          const L = model.get("n_layers");
          const T = v.nodes.shape[2];
          share = v.nodes.data[hit.graph * (L + 1) * T + hit.col * T + hit.row];
        }
        v.tip.show(flowHitText(hit, { tokens: model.get("tokens"), share, traced }), where.x, where.y);
      } else v.tip.hide();
      if ((hit && hit.row) !== prevRow) v.draw();
    },
    mouseleave: clearHover(v),
    click: (ev) => {
      const hit = hitAt(ev);
      if (!hit) return;
      if (hit.kind === "column") {
        if (hit.col > 0) setTraits(model, { layer: hit.col - 1 });
      } else setTraits(model, { token: hit.row });
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
