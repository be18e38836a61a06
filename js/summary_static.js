// The head summary in exported HTML pages (no kernel, no bqplot): the same per-head
// statistics as HeadSummary, as a clickable layers x heads grid on canvas.
import { decode } from "./lib/codec.js";
import { lutCss, themeLut } from "./lib/colormap.js";
import { disposer, ensureStyles, h, listen, localPoint, onWidthChange, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { drawGridFrame, publishGrid } from "./lib/grid.js";
import { cellOrigin, fitCell, hitMatrix, matrixLayout } from "./lib/layout.js";

function render({ model, el }) {
  ensureStyles(el);
  const panel = h("div", "aw-panel aw-summary");
  const title = h("div", "aw-title");
  const controls = h("div", "aw-controls");
  const canvas = h("canvas", "aw-canvas");
  panel.append(title, controls, canvas);
  el.appendChild(panel);
  const tip = tooltip(panel);
  const stats = {};
  for (const [name, packed] of Object.entries(model.get("stats") || {})) stats[name] = decode(packed).data;
  const buttons = (model.get("metrics") || []).map((name) => {
    const b = h("button", "aw-metric", name.replace("_", " "));
    b.title = (model.get("descriptions") || {})[name] || "";
    b.onclick = () => {
      model.set("metric", name);
      draw();
    };
    controls.appendChild(b);
    return b;
  });
  let lay = null;

  function range(values) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) if (Number.isFinite(v)) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
    return lo <= hi ? [lo, hi] : [0, 0];
  }

  function draw() {
    const L = model.get("n_layers");
    const H = model.get("n_heads");
    const metric = model.get("metric");
    const values = stats[metric] || new Float32Array(L * H);
    const th = theme(panel);
    const lut = themeLut(th.background);
    const [lo, hi] = range(values);
    title.textContent = `${model.get("model_name") || "heads"}: ${metric.replace("_", " ")} (${lo.toPrecision(3)} \u2013 ${hi.toPrecision(3)})`;
    buttons.forEach((b, i) => b.setAttribute("aria-pressed", String(model.get("metrics")[i] === metric)));
    const cell = fitCell((panel.clientWidth || 480) - 8, H, { left: 30, min: 12, max: 40 });
    lay = matrixLayout({ nLayers: L, nHeads: H, cell, left: 30, top: 16 });
    const ctx = sizeCanvas(canvas, lay.width, lay.height);
    ctx.fillStyle = th.background;
    ctx.fillRect(0, 0, lay.width, lay.height);
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        const o = cellOrigin(lay, l, hd);
        // Min-max scale; the smallest head stays visible against the background.
        const x = hi > lo ? (values[l * H + hd] - lo) / (hi - lo) : 0;
        ctx.fillStyle = lutCss(lut, Number.isFinite(x) ? Math.round(40 + 215 * x) : 0);
        ctx.fillRect(o.x, o.y, cell, cell);
      }
    }
    const layer = model.get("layer");
    const head = model.get("head");
    drawGridFrame(ctx, lay, th, layer, head);
    publishGrid(canvas, lay);
    panel.dataset.layer = String(layer);
    panel.dataset.head = String(head);
    panel.dataset.metric = metric;
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  const hitAt = (ev) => {
    if (!lay) return null;
    const p = localPoint(canvas, ev);
    return hitMatrix(lay, p.x, p.y);
  };
  const stop = disposer();
  stop.add(
    listen(canvas, {
      click: (ev) => {
        const hit = hitAt(ev);
        if (hit) {
          setTraits(model, { layer: hit.layer, head: hit.head });
          draw();
        }
      },
      mousemove: (ev) => {
        const hit = hitAt(ev);
        if (!hit) return tip.hide();
        const v = (stats[model.get("metric")] || [])[hit.layer * model.get("n_heads") + hit.head];
        const where = localPoint(panel, ev);
        tip.show(`layer ${hit.layer} \u00b7 head ${hit.head}\n${model.get("metric")}: ${Number(v).toPrecision(4)}`, where.x, where.y);
      },
      mouseleave: () => tip.hide(),
    }),
    listen(model, { "change:layer": draw, "change:head": draw }),
    onWidthChange(panel, draw),
  );
  draw();
  return () => stop.dispose();
}

export default { render };
