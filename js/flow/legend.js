// The flow panel's legend (class aw-legend): what edge width, edge colour, the carry line,
// node dots and gap rows mean for the graph drawn now. DOM only, text via textContent.
// (A shared colour-bar helper may replace the swatch code once js/lib has one.)
import { h } from "../lib/dom.js";
import { printable, truncate } from "../lib/layout.js";
import { ROUTE } from "../lib/style.js";
import { edgeStyle } from "./graph.js";

function swatch(color, width, alpha = 1, dash = "solid") {
  const s = h("span", "aw-legend-line");
  s.style.cssText = `display:inline-block;width:26px;height:0;vertical-align:middle;margin:0 4px 0 8px;border-top:${Math.max(1, width).toFixed(1)}px ${dash} ${color};opacity:${alpha}`;
  return s;
}

function item(box, sw, text) {
  const it = h("span", "aw-legend-item");
  it.append(sw, h("span", "aw-sub", text));
  box.appendChild(it);
}

const pct = (x) => `${(100 * x).toFixed(x >= 0.1 ? 0 : 1)}%`;

/** Fill `box` with the legend of graph `g` (decoded) for token strings `tokens`. */
export function drawLegend(box, g, tokens, th, { gaps = 0 } = {}) {
  box.replaceChildren();
  if (!g) return;
  const who = truncate(printable(tokens[g.token] ?? ""), 16);
  const head = h("span", "aw-sub aw-legend-title", g.diff
    ? `change of token ${g.token} \u201c${who}\u201d's route:`
    : `token ${g.token} \u201c${who}\u201d${g.method === "flow" ? ", share of the max-flow value" : ""}: width = share of its output`);
  box.appendChild(head);
  for (const f of ROUTE.legend_shares) {
    const share = f * g.peak;
    const st = edgeStyle(share, g.peak);
    item(box, swatch(th.foreground, st.width, 0.8), pct(share));
  }
  if (g.diff) {
    const [a, b] = g.names || ["A", "B"];
    item(box, swatch(th.warn, 3), `stronger in ${b}`);
    item(box, swatch(th.accent, 3), `stronger in ${a}`);
    item(box, swatch(th.foreground, 2, 0.8, "dashed"), `only on ${b}'s route (appears)`);
    item(box, swatch(th.foreground, 2, 0.8, "dotted"), `only on ${a}'s route (vanishes)`);
  } else if (g.signed) {
    item(box, swatch(th.accent, 3), "positive (raises the target)");
    item(box, swatch(th.warn, 3), "negative (lowers it)");
  } else {
    item(box, swatch(th.accent, 3), `${g.method} edge to another token`);
  }
  item(box, swatch(th.muted, ROUTE.carry_width, ROUTE.carry_alpha), "carry: kept by the token itself (residual)");
  const dot = h("span", "aw-legend-dot");
  dot.style.cssText = `display:inline-block;width:8px;height:8px;border-radius:50%;margin:0 4px 0 8px;background:${g.diff ? th.muted : th.warn}`;
  const it = h("span", "aw-legend-item");
  it.append(dot, h("span", "aw-sub", "dot = share through the token"));
  box.appendChild(it);
  if (gaps) item(box, h("span", "aw-sub", " \u2026 N"), " = rows off the route's top tokens, collapsed");
}
