// Drawing the flow panel: each graph's canvas (columns per layer boundary, bucketed edges,
// the traced token's paths and node shares, thinned labels) and the per-token strips.
import { lutCss, lutIndex, textOn, themeLut } from "../lib/colormap.js";
import { h, sizeCanvas, theme } from "../lib/dom.js";
import { bucketStyle, colX, fitRow, flowLayout, rowY } from "../lib/flowlayout.js";
import { labelStride, printable, truncate, visibleLabels } from "../lib/layout.js";
import { FLOW_STATUS } from "../lib/protocol.js";
import { EDGES, LABELS, SIZES } from "../lib/style.js";
import { bucketWidth, edgeFlows, nodeStyle, tracedStyle } from "./graph.js";

const FONT = LABELS.font_px;
const MAX_CHARS = LABELS.max_chars.flow;
const MAX_LABEL_PX = LABELS.max_label_px.flow;

/** The caption over a graph. */
export function graphCaption(g, several) {
  const full = `${g.label} \u00b7 ${g.count} of ${g.total} edges${g.capped ? " (capped: raise the threshold)" : ""}`;
  return several || g.capped ? full : `${g.count} edges drawn`;
}

/** Background, colour and opacity of a strip chip for score `value` on 0..vmax (|v|). */
export function scoreChip(value, vmax, lut, warn) {
  const idx = lutIndex(Math.abs(value), vmax);
  if (value < 0) return { background: warn, color: "#000", opacity: String(0.3 + 0.7 * (Math.abs(value) / (vmax || 1))) };
  return { background: lutCss(lut, idx), color: textOn(lut, idx), opacity: "" };
}

function drawGraph(v, k, th) {
  const { model, panel, el } = v;
  const g = v.graphs[k];
  const { cap, canvas } = v.canvases[k];
  const tokens = model.get("tokens");
  const n = tokens.length;
  const L = model.get("n_layers");
  const token = model.get("token");
  const layer = model.get("layer");
  const nodes = v.nodes;
  const hasTrace = nodes && token !== null && token !== undefined && k < nodes.shape[0];
  const avail = (panel.clientWidth || el.clientWidth || 720) - 16;
  const width = Math.max(260, v.graphs.length > 1 ? Math.floor(avail / 2) - 12 : Math.min(avail, 900));
  const { row_min: rowMin, row_max: rowMax, max_height: maxHeight } = SIZES.flow;
  const rowH = fitRow(n, maxHeight, { min: rowMin, max: rowMax });
  const ctx0 = canvas.getContext("2d");
  ctx0.font = `${FONT}px ${th.code}`;
  let labelW = 0;
  for (const t of tokens) labelW = Math.max(labelW, ctx0.measureText(truncate(printable(t), MAX_CHARS)).width);
  const side = Math.ceil(Math.min(MAX_LABEL_PX, labelW) + 8);
  const lay = flowLayout({ nLayers: L, n, width, rowH, left: side, right: side, top: 18 });
  v.layouts[k] = lay;
  const ctx = sizeCanvas(canvas, lay.width, lay.height);
  ctx.fillStyle = th.background;
  ctx.fillRect(0, 0, lay.width, lay.height);

  // Selected layer: a band between its two columns.
  if (layer >= 0 && layer < L) {
    ctx.fillStyle = th.border;
    ctx.globalAlpha = 0.5;
    ctx.fillRect(colX(lay, layer), lay.top, lay.colW, n * rowH);
    ctx.globalAlpha = 1;
  }
  // Column headers.
  ctx.font = `${LABELS.small_font_px}px ${th.font}`;
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  for (let c = 0; c <= L; c++) {
    ctx.fillStyle = c === layer + 1 ? th.foreground : th.muted;
    ctx.fillText(c === 0 ? "input" : `L${c - 1}`, colX(lay, c), lay.top - 4);
  }

  // Edges: one path per strength bucket; traced edges drawn again on top.
  const nb = EDGES.n_buckets;
  const dim = hasTrace ? EDGES.dim : 1;
  for (let b = 0; b < 2 * nb; b++) {
    const st = bucketStyle(b, nb);
    ctx.beginPath();
    let any = false;
    for (let l = 0; l < L; l++) {
      const x0 = colX(lay, l);
      const x1 = colX(lay, l + 1);
      for (let e = g.off[l]; e < g.off[l + 1]; e++) {
        if (g.buckets[e] !== b) continue;
        ctx.moveTo(x0, rowY(lay, g.key[e]));
        ctx.lineTo(x1, rowY(lay, g.query[e]));
        any = true;
      }
    }
    if (!any) continue;
    ctx.strokeStyle = b >= nb ? th.warn : th.accent;
    ctx.globalAlpha = st.alpha * dim;
    ctx.lineWidth = bucketWidth(st, rowH);
    ctx.stroke();
  }
  ctx.globalAlpha = 1;
  let traced = 0;
  if (hasTrace) {
    const { flows, max } = edgeFlows(g, nodes, k, L);
    ctx.strokeStyle = th.warn;
    for (let l = 0; l < L; l++) {
      const x0 = colX(lay, l);
      const x1 = colX(lay, l + 1);
      for (let e = g.off[l]; e < g.off[l + 1]; e++) {
        const st = tracedStyle(max > 0 ? flows[e] / max : 0);
        if (!st) continue;
        ctx.globalAlpha = st.alpha;
        ctx.lineWidth = st.width;
        ctx.beginPath();
        ctx.moveTo(x0, rowY(lay, g.key[e]));
        ctx.lineTo(x1, rowY(lay, g.query[e]));
        ctx.stroke();
        traced++;
      }
    }
    ctx.globalAlpha = 1;
    // Nodes sized by their share of the traced token.
    const T = nodes.shape[2];
    const r = nodes.data;
    const base = k * (L + 1) * T;
    for (let c = 0; c <= L; c++) {
      let m = 0;
      for (let i = 0; i < T; i++) m = Math.max(m, Math.abs(r[base + c * T + i]));
      for (let i = 0; i < T; i++) {
        const st = nodeStyle(m > 0 ? Math.abs(r[base + c * T + i]) / m : 0, rowH);
        if (!st) continue;
        ctx.fillStyle = th.warn; // negative shares too: the sign is in the strip
        ctx.globalAlpha = st.alpha;
        ctx.beginPath();
        ctx.arc(colX(lay, c), rowY(lay, i), st.radius, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.globalAlpha = 1;
  }

  // Token labels on both sides, thinned so they never overlap.
  const stride = labelStride(rowH, FONT);
  const always = [token, v.hover && v.hover.graph === k ? v.hover.row : null];
  ctx.font = `${FONT}px ${th.code}`;
  ctx.textBaseline = "middle";
  for (const i of visibleLabels(n, stride, always)) {
    ctx.fillStyle = i === token ? th.warn : th.foreground;
    const label = truncate(printable(tokens[i]), MAX_CHARS);
    ctx.textAlign = "right";
    ctx.fillText(label, lay.left - 6, rowY(lay, i));
    ctx.textAlign = "left";
    ctx.fillText(label, colX(lay, L) + 6, rowY(lay, i));
  }
  cap.textContent = graphCaption(g, v.graphs.length > 1);
  canvas.dataset.edges = String(g.count);
  canvas.dataset.traced = String(traced);
  canvas.dataset.left = String(lay.left);
  canvas.dataset.top = String(lay.top);
  canvas.dataset.rowH = String(lay.rowH);
  canvas.dataset.colW = String(lay.colW);
  return { drawn: g.count, traced };
}

function drawStrips(v, th) {
  const { model, strips } = v;
  strips.replaceChildren();
  const tokens = model.get("tokens");
  const special = model.get("special") || [];
  const token = model.get("token");
  const labels = v.graphs.map((g) => g.label);
  const scores = v.scores;
  const rows = scores ? scores.shape[0] : 0;
  const T = tokens.length;
  const none = token === null || token === undefined;
  if (none) strips.appendChild(h("div", "aw-sub", "click a token to trace where its output draws from"));
  const lut = themeLut(th.background);
  for (let gk = 0; gk < Math.max(rows, none ? 0 : 1); gk++) {
    const row = h("div", "aw-strip aw-flow-strip");
    row.dataset.graph = String(gk);
    const name = h("span", "aw-sub", `${labels[gk] || ""}${labels[gk] ? ": " : ""}token ${token} draws on`);
    name.style.marginRight = "6px";
    row.appendChild(name);
    const vals = scores && gk < rows ? scores.data.subarray(gk * T, (gk + 1) * T) : null;
    let vmax = 0;
    if (vals) for (let i = 0; i < T; i++) vmax = Math.max(vmax, Math.abs(vals[i]));
    for (let i = 0; i < T; i++) {
      const s = h("span", special[i] ? "aw-tok aw-special" : "aw-tok", tokens[i]);
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
    strips.appendChild(row);
  }
}

/** Draw the whole panel: controls' state, every graph, the strips, the published state. */
export function draw(v) {
  const { model, panel } = v;
  const th = theme(panel);
  const method = model.get("method");
  const token = model.get("token");
  v.title.textContent = `${model.get("model_name") || "attention"} \u2014 flow across ${model.get("n_layers")} layers`;
  v.methodSel.value = method;
  for (const o of v.methodSel.options) {
    o.disabled = (o.value === "grad_rollout" || o.value === "attn_grad") && !model.get("has_gradients");
  }
  v.thInput.value = String(model.get("threshold"));
  v.thValue.textContent = Number(model.get("threshold")).toFixed(2);
  v.kInput.value = String(model.get("top_k"));
  const two = (model.get("labels") || []).length > 1;
  v.btnDiff.style.display = two ? "" : "none";
  v.btnDiff.setAttribute("aria-pressed", String(model.get("compare_mode") === "diff"));
  const st = model.get("status");
  const computing = st === FLOW_STATUS.COMPUTING;
  v.prog.style.display = computing ? "" : "none";
  v.prog.value = model.get("progress");
  v.status.textContent = computing ? `computing max-flow\u2026 ${Math.round(100 * model.get("progress"))}%` : "";
  v.errors.show(); // status "error": the `error` trait says why
  v.ensureCanvases();
  let drawn = 0;
  let traced = 0;
  for (let k = 0; k < v.graphs.length; k++) {
    const r = drawGraph(v, k, th);
    drawn += r.drawn;
    traced += r.traced;
  }
  drawStrips(v, th);
  const ds = panel.dataset;
  ds.method = method;
  ds.edges = String(drawn);
  ds.traced = String(traced);
  // The threshold the drawn edges were cut with (the slider may be ahead of the kernel).
  const drawnFor = (model.get("graphs") || [])[0];
  ds.threshold = drawnFor ? String(drawnFor.threshold) : "";
  ds.token = token === null || token === undefined ? "" : String(token);
  ds.layer = String(model.get("layer"));
  ds.status = st;
  ds.scoresFor = v.scores && model.get("scores").token !== undefined ? String(model.get("scores").token) : "";
  ds.draws = String(Number(ds.draws || 0) + 1);
}
