// MethodAgreement view: a methods x methods table of Spearman correlations for the selected
// token (cells coloured on the diverging -1..1 scale of style.json, values as text), a
// legend, and -- for the clicked cell -- the two methods' input-token strips one above the
// other. The kernel computes the table (trait `table`); the view only draws it and sets
// `pair` (clicked cell) or `token` (clicked strip token). Token strings: textContent only.
import { lutCss, lutIndex, textOn, themeLut } from "../lib/colormap.js";
import { disposer, ensureStyles, h, listen, setTraits, theme } from "../lib/dom.js";
import { firstDraw, onTraits, viewState } from "../lib/view.js";
import { css, divergingRgb, divergingStops, legendGradient, textColour } from "./scale.js";

const SHORT = {
  attention: "attn",
  rollout: "rollout",
  flow: "flow",
  grad_rollout: "grad roll",
  attn_grad: "attn\u00d7grad",
  value_norm: "value norm",
  alti: "ALTI",
};
const short = (m) => SHORT[m] || m;
const fmt = (x) => (x === null || x === undefined ? "n/a" : (x >= 0 ? "+" : "\u2212") + Math.abs(x).toFixed(2));

function buildDom(el) {
  const d = {};
  d.panel = h("div", "aw-panel aw-agreement");
  d.title = h("div", "aw-title", "methods agreement");
  d.controls = h("div", "aw-controls");
  d.status = h("span", "aw-sub aw-status");
  d.controls.append(d.status);
  d.error = h("div", "aw-error");
  d.table = h("table", "aw-agree-table");
  d.table.style.cssText = "border-collapse:collapse;font-size:11px;margin-top:4px;";
  d.legend = h("div", "aw-legend");
  d.legend.style.cssText = "display:flex;align-items:center;gap:6px;font-size:11px;margin:6px 0;";
  d.legendBar = h("span", "aw-legend-bar");
  d.legendBar.style.cssText = "display:inline-block;width:120px;height:10px;border-radius:2px;";
  d.legend.append(h("span", "aw-sub", "\u22121 reversed"), d.legendBar, h("span", "aw-sub", "+1 same order"));
  d.hint = h("div", "aw-sub aw-agree-hint", "click a cell to compare two methods token by token");
  d.compare = h("div", "aw-agree-compare");
  d.panel.append(d.title, d.controls, d.error, d.table, d.legend, d.hint, d.compare);
  el.appendChild(d.panel);
  return d;
}

/** The table: header row and one row per method; every cell knows its pair (dataset). */
function drawTable(v, tab, th) {
  const stops = divergingStops(th.background);
  const pair = v.model.get("pair") || [];
  v.table.replaceChildren();
  const head = h("tr");
  head.append(h("th", "", ""));
  for (const m of tab.methods) {
    const c = h("th", "aw-agree-col", short(m));
    c.title = m;
    c.style.cssText = "padding:2px 4px;font-weight:600;white-space:nowrap;";
    head.append(c);
  }
  v.table.append(head);
  v.cells = [];
  tab.methods.forEach((a, i) => {
    const row = h("tr");
    const label = h("th", "aw-agree-row", short(a));
    label.title = a;
    label.style.cssText = "padding:2px 4px;text-align:right;font-weight:600;white-space:nowrap;";
    row.append(label);
    tab.methods.forEach((b, j) => {
      const x = tab.matrix[i][j];
      const rgb = divergingRgb(x, stops);
      const cell = h("td", "aw-agree-cell", fmt(x));
      cell.dataset.a = a;
      cell.dataset.b = b;
      cell.dataset.value = x === null ? "nan" : String(x);
      const sel = pair.length === 2 && pair[0] === a && pair[1] === b;
      cell.classList.toggle("aw-selected", sel);
      cell.setAttribute("aria-selected", String(sel));
      cell.title = `${a} vs ${b}: Spearman \u03c1 = ${fmt(x)} (click: both strips)`;
      cell.style.cssText =
        `background:${css(rgb)};color:${textColour(rgb)};padding:3px 6px;text-align:center;cursor:pointer;` +
        `font-variant-numeric:tabular-nums;outline:${sel ? `2px solid ${th.warn}` : "none"};outline-offset:-2px;`;
      row.append(cell);
      v.cells.push(cell);
    });
    v.table.append(row);
  });
}

/** The two methods' strips for the token, each coloured on its own 0..max scale. */
function drawCompare(v, tab, th) {
  v.compare.replaceChildren();
  const pair = v.model.get("pair") || [];
  v.hint.style.display = pair.length === 2 ? "none" : "";
  if (pair.length !== 2) return;
  const tokens = v.model.get("tokens");
  const special = v.model.get("special") || [];
  const lut = themeLut(th.background);
  const i = tab.methods.indexOf(pair[0]);
  const j = tab.methods.indexOf(pair[1]);
  if (i < 0 || j < 0) return;
  const rho = tab.matrix[i][j];
  const cap = h("div", "aw-sub aw-agree-caption",
    `token ${tab.token} (${tokens[tab.token]}): ${pair[0]} vs ${pair[1]}, Spearman \u03c1 = ${fmt(rho)}`);
  v.compare.append(cap);
  for (const m of pair) {
    const vals = tab.scores[tab.methods.indexOf(m)];
    const vmax = Math.max(0, ...vals.map((x) => Math.abs(x || 0)));
    const line = h("div", "aw-agree-line");
    line.dataset.method = m;
    line.style.cssText = "display:flex;align-items:baseline;gap:6px;margin-top:4px;";
    const name = h("span", "aw-agree-method", m);
    name.style.cssText = "min-width:84px;font-weight:600;font-size:11px;";
    const strip = h("div", "aw-strip");
    strip.style.marginTop = "0";
    tokens.forEach((tok, k) => {
      const s = h("span", special[k] ? "aw-tok aw-special" : "aw-tok", tok);
      s.dataset.index = String(k);
      const x = Math.abs(vals[k] || 0);
      const idx = lutIndex(x, vmax);
      s.style.background = lutCss(lut, idx);
      s.style.color = textOn(lut, idx);
      s.dataset.value = String(vals[k]);
      s.title = `${m}: ${(vals[k] || 0).toFixed(4)}`;
      s.classList.toggle("aw-selected", k === tab.token);
      strip.append(s);
    });
    line.append(name, strip);
    v.compare.append(line);
  }
}

function draw(v) {
  const tab = v.model.get("table") || {};
  const status = v.model.get("status");
  v.status.textContent = status === "computing" ? "computing (exact flow)\u2026" : "";
  const th = theme(v.panel);
  v.legendBar.style.background = legendGradient(divergingStops(th.background));
  if (!tab.methods) {
    v.table.replaceChildren();
    v.compare.replaceChildren();
    return;
  }
  const tokens = v.model.get("tokens");
  const chosen = v.model.get("token");
  v.title.textContent =
    `methods agreement (Spearman \u03c1 of input-token scores) \u00b7 token ${tab.token} ${tokens[tab.token] ?? ""}` +
    (chosen === null || chosen === undefined ? " (no token selected)" : "");
  drawTable(v, tab, th);
  drawCompare(v, tab, th);
  v.panel.dataset.token = String(tab.token);
  v.panel.dataset.pair = (v.model.get("pair") || []).join(",");
}

function render({ model, el }) {
  ensureStyles(el);
  const v = viewState(model, el, buildDom(el), { cells: [] });
  v.draw = () => draw(v);
  const stop = disposer();
  stop.add(
    listen(v.table, {
      click: (ev) => {
        const cell = ev.target.closest ? ev.target.closest("td.aw-agree-cell") : null;
        if (!cell) return;
        const cur = model.get("pair") || [];
        const same = cur.length === 2 && cur[0] === cell.dataset.a && cur[1] === cell.dataset.b;
        setTraits(model, { pair: same ? [] : [cell.dataset.a, cell.dataset.b] });
        v.draw();
      },
    }),
    listen(v.compare, {
      click: (ev) => {
        const tok = ev.target.closest ? ev.target.closest(".aw-tok") : null;
        if (tok) setTraits(model, { token: Number(tok.dataset.index) });
      },
    }),
    listen(model, { ...onTraits(["table", "pair", "status", "token", "tokens", "error"], v.draw) }),
  );
  firstDraw(v, "agreement table", v.draw);
  return () => stop.dispose();
}

export default { render };
