// Mouse and keyboard on the matrix: hover tooltip, click or arrows + Enter to select.
import { localPoint, setTraits } from "../lib/dom.js";
import { clearHover } from "../lib/view.js";
import { hitMatrix } from "../lib/layout.js";

/** The (layer, head) an arrow key moves to from (layer, head), or null (not an arrow). */
export function arrowMove(key, layer, head, L, H) {
  if (key === "ArrowRight") return { layer, head: Math.min(H - 1, head + 1) };
  if (key === "ArrowLeft") return { layer, head: Math.max(0, head - 1) };
  if (key === "ArrowDown") return { layer: Math.min(L - 1, layer + 1), head };
  if (key === "ArrowUp") return { layer: Math.max(0, layer - 1), head };
  return null;
}

/** Tooltip of a cell: its layer, head and scale (max weight), "(preview)" if approximate. */
export function cellText(layer, head, scale, preview, cap = 100) {
  // `scale` is the head's colour top: its max, or its p`cap` when capped (thumbs.scales)
  const what = cap < 100 ? `p${cap}` : "max";
  return `layer ${layer} \u00b7 head ${head}\n${what} ${scale.toFixed(3)}${preview ? " (preview)" : ""}`;
}

/** The canvas listener table, for dom.listen. */
export function matrixHandlers(v) {
  const { model, canvas, panel } = v;
  const select = (layer, head) => {
    setTraits(model, { layer, head });
    v.draw();
  };
  const hitAt = (ev) => {
    const p = localPoint(canvas, ev);
    return hitMatrix(v.lay, p.x, p.y);
  };
  return {
    mousemove: (ev) => {
      if (!v.lay) return;
      const hit = hitAt(ev);
      const same = hit && v.hover && hit.layer === v.hover.layer && hit.head === v.hover.head;
      if (!same) {
        v.hover = hit;
        v.draw();
      }
      if (!hit) return v.tip.hide();
      const i = hit.layer * model.get("n_heads") + hit.head;
      const t = v.thumbs;
      const scale = t && t.scales ? t.scales[i] : NaN;
      const where = localPoint(panel, ev);
      v.tip.show(cellText(hit.layer, hit.head, scale, !!(t && t.pending && t.pending[i]), t && t.signed ? 100 : Number(model.get("cap") ?? 100)), where.x, where.y);
    },
    mouseleave: clearHover(v),
    click: (ev) => {
      if (!v.lay) return;
      const hit = hitAt(ev);
      if (hit) select(hit.layer, hit.head);
    },
    keydown: (ev) => {
      const head = model.get("head");
      const to = arrowMove(ev.key, model.get("layer"), typeof head === "number" ? head : 0, model.get("n_layers"), model.get("n_heads"));
      if (!to) return;
      ev.preventDefault();
      select(to.layer, to.head);
    },
  };
}
