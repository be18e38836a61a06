// Drawing the flow panel: each route graph's canvas (columns per layer boundary, labelled
// rows and collapsed gaps, carry lines, cross edges by share, node dots), the legend, the
// notes (cap, agreement) and the per-token strips.
import { lutCss, lutIndex, textOn, themeLut } from "../lib/colormap.js";
import { h, sizeCanvas, theme } from "../lib/dom.js";
import { printable, truncate } from "../lib/layout.js";
import { FLOW_STATUS } from "../lib/protocol.js";
import { GENERATION, LABELS, ROUTE } from "../lib/style.js";
import { appendBoundary, generationColour, isGenerated, promptLength, splitRowsAt, stripBoundary, styleGenerated } from "../lib/generation.js";
import { syncGenerationLegend } from "../lib/legend.js";
import { columnLabels, edgeStyle, gapText, layerRanges, nodeStyle, rowLayout } from "./graph.js";
import { drawLegend } from "./legend.js";

const FONT = LABELS.font_px;
const MAX_CHARS = LABELS.max_chars.flow;
const MAX_LABEL_PX = LABELS.max_label_px.flow;
const TOP = 18;
/** The words on a generation's boundary band, left of the graph (the answer rows are below). */
export const BOUNDARY_TEXT = GENERATION.labels[1];

/**
 * The prompt | answer boundary of a graph: a line across the band between the prompt and
 * answer rows (over a halo of the background) and its words in the label column.
 */
function drawRowBoundary(ctx, lay, th, colour) {
  const b = lay.rows.boundary;
  if (!b) return;
  const x1 = lay.width - 4;
  for (const [style, width, alpha] of [[th.background, GENERATION.halo_width, GENERATION.halo_alpha], [colour, GENERATION.line_width, 1]]) {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.globalAlpha = alpha;
    ctx.beginPath();
    ctx.moveTo(lay.left - 2, Math.round(b.y));
    ctx.lineTo(x1, Math.round(b.y));
    ctx.stroke();
  }
  ctx.globalAlpha = 1;
  ctx.font = `${LABELS.small_font_px}px ${th.font}`;
  const tw = ctx.measureText(BOUNDARY_TEXT).width;
  ctx.fillStyle = th.background;
  ctx.fillRect(lay.left - 8 - tw, b.y0, tw + 4, b.y1 - b.y0);
  ctx.fillStyle = colour;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillText(BOUNDARY_TEXT, lay.left - 6, b.y);
}

/** The caption over a graph. */
export function graphCaption(g, several) {
  const kept = `${g.count} edges, keep ${Number(g.keep).toFixed(2)}`;
  const capped = g.capped && g.capped.length ? ` \u00b7 capped in layer${g.capped.length > 1 ? "s" : ""} ${layerRanges(g.capped)}` : "";
  return several || g.diff ? `${g.label} \u00b7 ${kept}${capped}` : `${kept}${capped}`;
}

/** Background, colour and opacity of a strip chip for score `value` on 0..vmax (|v|). */
export function scoreChip(value, vmax, lut, warn) {
  const idx = lutIndex(Math.abs(value), vmax);
  if (value < 0) return { background: warn, color: "#000", opacity: String(0.3 + 0.7 * (Math.abs(value) / (vmax || 1))) };
  return { background: lutCss(lut, idx), color: textOn(lut, idx), opacity: "" };
}

/** A short hash of the drawn edge set (layer, query, key), so tests can tell two sets apart. */
export function edgeSignature(g) {
  let hsh = 2166136261 >>> 0;
  for (let l = 0; l + 1 < g.off.length; l++) {
    for (let e = g.off[l]; e < g.off[l + 1]; e++) {
      for (const x of [l, g.query[e], g.key[e]]) hsh = Math.imul(hsh ^ x, 16777619) >>> 0;
    }
  }
  return hsh.toString(16);
}

/** Geometry of graph k: columns and rows. */
export function graphLayout(v, k, width, labelW) {
  const g = v.graphs[k];
  const model = v.model;
  const n = model.get("tokens").length;
  const L = model.get("n_layers");
  // A generation: prompt and answer rows never share a gap, and a band between them holds the boundary.
  const rows = splitRowsAt(rowLayout(n, g.rows, model.get("rows"), TOP), promptLength(model, n));
  const left = Math.ceil(Math.min(MAX_LABEL_PX, labelW) + 10);
  const right = 10;
  const inner = Math.max((L + 1) * 8, width - left - right);
  return { n, L, rows, left, top: TOP, colW: inner / Math.max(1, L), width: left + inner + right, height: TOP + rows.height + 4 };
}

export const colX = (lay, c) => lay.left + c * lay.colW;

function drawGraph(v, k, th) {
  const { model, panel, el } = v;
  const g = v.graphs[k];
  const { cap, canvas, scroll } = v.canvases[k];
  const tokens = model.get("tokens");
  const L = model.get("n_layers");
  const T = tokens.length;
  const selected = model.get("token");
  const layer = model.get("layer");
  const avail = (panel.clientWidth || el.clientWidth || 720) - 16;
  const width = Math.max(260, v.graphs.length > 1 ? Math.floor(avail / 2) - 12 : Math.min(avail, 900));
  const ctx0 = canvas.getContext("2d");
  ctx0.font = `${FONT}px ${th.code}`;
  let labelW = 0;
  for (const t of tokens.length > 2000 ? tokens.slice(0, 2000) : tokens)
    labelW = Math.max(labelW, ctx0.measureText(truncate(printable(t), MAX_CHARS)).width);
  ctx0.font = `${LABELS.small_font_px}px ${th.font}`;
  labelW = Math.max(labelW, ctx0.measureText(gapText({ from: 0, to: T - 1 })).width); // gap rows fit too
  const gen = promptLength(model, T);
  if (gen) labelW = Math.max(labelW, ctx0.measureText(BOUNDARY_TEXT).width); // and the boundary's words
  const lay = graphLayout(v, k, width, labelW);
  v.layouts[k] = lay;
  const ctx = sizeCanvas(canvas, lay.width, lay.height);
  const y = lay.rows.y;
  ctx.fillStyle = th.background;
  ctx.fillRect(0, 0, lay.width, lay.height);
  scroll.style.maxHeight = model.get("rows") === "all" ? "640px" : "";

  if (layer >= 0 && layer < L) {
    ctx.fillStyle = th.border;
    ctx.globalAlpha = 0.5;
    ctx.fillRect(colX(lay, layer), lay.top, lay.colW, lay.rows.height);
    ctx.globalAlpha = 1;
  }
  // Column headers.
  ctx.font = `${LABELS.small_font_px}px ${th.font}`;
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  // Thinned to every 2nd / 5th / 10th column when they are narrow (32 layers), the selected
  // layer's always; "input" is wider than "L31", so it is measured too.
  const headerPx = Math.max(ctx.measureText("input").width, ctx.measureText(`L${L - 1}`).width) + 4;
  const heads = columnLabels(L + 1, lay.colW, headerPx, layer >= 0 && layer < L ? layer + 1 : -1);
  for (let c = 0; c <= L; c++) {
    if (!heads.show[c]) continue;
    ctx.fillStyle = c === layer + 1 ? th.foreground : th.muted;
    ctx.fillText(c === 0 ? "input" : `L${c - 1}`, colX(lay, c), lay.top - 4);
  }
  canvas.dataset.headerStride = String(heads.stride);
  // Gap rows: a faint band.
  for (const s of lay.rows.slots) {
    if (s.kind !== "gap") continue;
    ctx.fillStyle = th.border;
    ctx.globalAlpha = 0.35;
    ctx.fillRect(lay.left, s.y0 + 2, colX(lay, L) - lay.left, s.y1 - s.y0 - 4);
    ctx.globalAlpha = 1;
  }
  // Carry: a thin muted line along each token's row, under the edges.
  const cpeak = g.peak || 1;
  ctx.strokeStyle = th.muted;
  ctx.lineWidth = ROUTE.carry_width;
  ctx.globalAlpha = ROUTE.carry_alpha;
  ctx.beginPath();
  let carried = 0;
  for (let l = 0; l < L; l++) {
    for (let i = 0; i < T; i++) {
      const c = g.carry[l * T + i];
      if (!(Math.abs(c) > 0.01 * cpeak) || lay.rows.slots[lay.rows.slotOf[i]].kind === "gap") continue;
      ctx.moveTo(colX(lay, l), y[i]);
      ctx.lineTo(colX(lay, l + 1), y[i]);
      carried++;
    }
  }
  ctx.stroke();
  ctx.globalAlpha = 1;
  // Cross edges, weakest first so the strong ones end on top.
  let drawn = 0;
  for (let l = 0; l < L; l++) {
    const x0 = colX(lay, l);
    const x1 = colX(lay, l + 1);
    for (let e = g.off[l + 1] - 1; e >= g.off[l]; e--) {
      const w = g.weight[e];
      const st = edgeStyle(w, g.peak);
      const collapsed = lay.rows.slots[lay.rows.slotOf[g.key[e]]].kind === "gap" || lay.rows.slots[lay.rows.slotOf[g.query[e]]].kind === "gap";
      ctx.strokeStyle = w < 0 ? (g.diff ? th.accent : th.warn) : g.diff ? th.warn : th.accent;
      // Edges into collapsed rows stay faint and thin: the labelled route stays readable.
      ctx.globalAlpha = collapsed ? st.alpha * 0.3 : st.alpha;
      ctx.lineWidth = collapsed ? Math.min(st.width, 1) : st.width;
      const s = g.status ? g.status[e] : 0;
      ctx.setLineDash(s === 1 ? [5, 3] : s === 2 ? [1.5, 2.5] : []);
      ctx.beginPath();
      ctx.moveTo(x0, y[g.key[e]]);
      ctx.lineTo(x1, y[g.query[e]]);
      ctx.stroke();
      drawn++;
    }
  }
  ctx.setLineDash([]);
  ctx.globalAlpha = 1;
  canvas.dataset.edgeSig = edgeSignature(g);
  // Nodes sized by their share (per column maximum).
  const rowPx = ROUTE.row_px;
  for (let c = 0; c <= L; c++) {
    let m = 0;
    for (let i = 0; i < T; i++) m = Math.max(m, Math.abs(g.node[c * T + i]));
    for (let i = 0; i < T; i++) {
      if (lay.rows.slots[lay.rows.slotOf[i]].kind === "gap") continue;
      const st = nodeStyle(m > 0 ? Math.abs(g.node[c * T + i]) / m : 0, rowPx);
      if (!st) continue;
      ctx.fillStyle = g.diff ? (g.node[c * T + i] < 0 ? th.accent : th.warn) : th.warn;
      ctx.globalAlpha = st.alpha;
      ctx.beginPath();
      ctx.arc(colX(lay, c), y[i], st.radius, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  ctx.globalAlpha = 1;
  // Labels: one per labelled row (rows are row_px >= font tall, so none overlap), and the gaps.
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  let gaps = 0;
  let genRows = 0;
  const genColour = generationColour(th.background);
  for (const s of lay.rows.slots) {
    if (s.kind === "gap") {
      gaps++;
      ctx.font = `${LABELS.small_font_px}px ${th.font}`;
      ctx.fillStyle = isGenerated(s.from, gen) ? genColour : th.muted;
      ctx.fillText(gapText(s), lay.left - 6, (s.y0 + s.y1) / 2);
      continue;
    }
    ctx.font = `${FONT}px ${th.code}`;
    const i = s.i;
    const generated = isGenerated(i, gen);
    if (generated) genRows++;
    ctx.fillStyle = i === selected || (selected === null && i === g.token) ? th.warn : generated ? genColour : th.foreground;
    ctx.fillText(truncate(printable(tokens[i]), MAX_CHARS), lay.left - 6, y[i]);
  }
  drawRowBoundary(ctx, lay, th, genColour);
  cap.textContent = graphCaption(g, v.graphs.length > 1);
  canvas.dataset.edges = String(drawn);
  canvas.dataset.rows = String(lay.rows.labelled);
  canvas.dataset.gaps = String(gaps);
  canvas.dataset.carry = String(carried);
  canvas.dataset.top = String(lay.top);
  canvas.dataset.left = String(lay.left);
  canvas.dataset.colW = String(lay.colW);
  // The prompt | answer band's centre y ("" when the trace is not a generation) and the
  // number of labelled answer rows drawn in the generation colour.
  canvas.dataset.boundaryY = lay.rows.boundary ? String(lay.rows.boundary.y) : "";
  canvas.dataset.generatedRows = String(genRows);
  // Centre y of each labelled row (for tests and tools): {token: y}.
  canvas.dataset.rowY = JSON.stringify(Object.fromEntries(lay.rows.slots.filter((s) => s.kind === "token").map((s) => [s.i, (s.y0 + s.y1) / 2])));
  return { drawn, rows: lay.rows.labelled, gaps };
}

function drawStrips(v, th) {
  const { model, strips } = v;
  strips.replaceChildren();
  const tokens = model.get("tokens");
  const special = model.get("special") || [];
  const token = model.get("token");
  const labels = v.graphs.length === 1 && v.graphs[0].diff ? [v.graphs[0].label] : v.graphs.map((g) => g.label);
  const scores = v.scores;
  const rows = scores ? scores.shape[0] : 0;
  const T = tokens.length;
  const gen = promptLength(model, T);
  const genColour = generationColour(th.background);
  const none = token === null || token === undefined;
  if (none) {
    const rt = model.get("route_token");
    strips.appendChild(h("div", "aw-sub", `showing the route of token ${rt} \u201c${truncate(printable(tokens[rt] ?? ""), 16)}\u201d (default); click a token row to trace it`));
  }
  const lut = themeLut(th.background);
  for (let gk = 0; gk < Math.max(rows, none ? 0 : 1); gk++) {
    const row = h("div", "aw-strip aw-flow-strip");
    row.dataset.graph = String(gk);
    row.style.cssText = "max-height:96px;overflow-y:auto;";
    const name = h("span", "aw-sub", `${labels[gk] || ""}${labels[gk] ? ": " : ""}token ${token} draws on`);
    name.style.marginRight = "6px";
    row.appendChild(name);
    const vals = scores && gk < rows ? scores.data.subarray(gk * T, (gk + 1) * T) : null;
    let vmax = 0;
    if (vals) for (let i = 0; i < T; i++) vmax = Math.max(vmax, Math.abs(vals[i]));
    for (let i = 0; i < T; i++) {
      if (i === stripBoundary(gen, T)) appendBoundary(row);
      const s = h("span", `${special[i] ? "aw-tok aw-special" : "aw-tok"}${isGenerated(i, gen) ? " aw-generated" : ""}`, tokens[i]);
      s.dataset.index = String(i);
      if (i === token) s.classList.add("aw-selected");
      if (vals) {
        const chip = scoreChip(vals[i], vmax, lut, th.warn);
        s.style.background = chip.background;
        if (chip.opacity) s.style.opacity = chip.opacity;
        s.style.color = chip.color;
        s.dataset.value = vals[i].toFixed(4);
        s.title = vals[i].toFixed(4);
      }
      row.appendChild(s);
    }
    if (gen) styleGenerated(row.querySelectorAll(".aw-tok"), row.querySelector(".aw-gen-boundary"), gen, genColour, !!vals);
    strips.appendChild(row);
  }
}

/** Draw the whole panel: controls' state, every graph, legend, notes, strips, data-*. */
export function draw(v) {
  const { model, panel } = v;
  const th = theme(panel);
  const method = model.get("method");
  const token = model.get("token");
  v.title.textContent = `${model.get("model_name") || "attention"} \u2014 route across ${model.get("n_layers")} layers`;
  v.syncMethods();
  v.methodSel.value = method;
  v.keepInput.value = String(model.get("keep"));
  v.keepValue.textContent = Number(model.get("keep")).toFixed(2);
  v.rowsSel.value = model.get("rows");
  v.noDiff = Boolean(model.get("_static"));
  v.keepLabel.style.display = model.get("_keep_fixed") ? "none" : "";
  const two = (model.get("labels") || []).length > 1;
  v.btnDiff.style.display = two && !v.noDiff ? "" : "none";
  v.btnDiff.setAttribute("aria-pressed", String(model.get("compare_mode") === "diff"));
  const st = model.get("status");
  const computing = st === FLOW_STATUS.COMPUTING;
  v.prog.style.display = computing ? "" : "none";
  v.prog.value = model.get("progress");
  v.status.textContent = computing ? `computing max-flow\u2026 ${Math.round(100 * model.get("progress"))}%` : "";
  v.errors.show();
  v.ensureCanvases();
  let drawn = 0;
  let rows = 0;
  let gaps = 0;
  for (let k = 0; k < v.graphs.length; k++) {
    const r = drawGraph(v, k, th);
    drawn += r.drawn;
    rows = Math.max(rows, r.rows);
    gaps = Math.max(gaps, r.gaps);
  }
  const g0 = v.graphs[0];
  drawLegend(v.legend, g0, model.get("tokens"), th, { gaps });
  const nTok = model.get("tokens").length;
  if (g0) syncGenerationLegend(v.legend, promptLength(model, nTok), nTok, generationColour(th.background), "the line between the prompt and answer rows");
  const capped = [...new Set(v.graphs.flatMap((g) => g.capped || []))];
  v.capNote.textContent = capped.length
    ? `edge cap (${model.get("max_edges_per_layer")} per layer) reached in layer${capped.length > 1 ? "s" : ""} ${layerRanges(capped)}: the weakest of the edges keep asks for are not drawn`
    : "";
  const agree = g0 && g0.diff && g0.agree;
  v.agreeNote.textContent = g0 && g0.diff
    ? agree
      ? `the two traces agree within ${g0.tol} on this route (largest change ${Number(g0.max_change).toExponential(1)})`
      : `${g0.appear} edges appear, ${g0.vanish} vanish; largest change ${Number(g0.max_change).toFixed(3)}`
    : "";
  drawStrips(v, th);
  const ds = panel.dataset;
  ds.method = g0 ? g0.method : method;
  ds.keep = g0 ? String(g0.keep) : "";
  ds.edges = String(drawn);
  ds.rows = String(rows);
  ds.edgeSig = v.canvases.map((c) => c.canvas.dataset.edgeSig).join(",");
  ds.gaps = String(gaps);
  ds.promptLength = String(promptLength(model, model.get("tokens").length));
  ds.capped = String(capped.length);
  ds.agree = g0 && g0.diff ? String(Boolean(agree)) : "";
  ds.token = token === null || token === undefined ? "" : String(token);
  ds.routeToken = g0 ? String(g0.token) : "";
  ds.layer = String(model.get("layer"));
  ds.status = st;
  ds.scoresFor = v.scores && model.get("scores").token !== undefined ? String(model.get("scores").token) : "";
  ds.draws = String(Number(ds.draws || 0) + 1);
}
