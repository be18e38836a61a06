// AttentionFlow view: tokens at every layer boundary, joined by the strong edges of a
// flow method. Click a token to trace its paths; click a column header to pick a layer.
import { decode } from "./lib/codec.js";
import { lutCss, lutIndex, textOn, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, onWidthChange, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { bucketEdges, bucketStyle, colX, fitRow, flowLayout, hitFlow, layerOffsets, rowY } from "./lib/flowlayout.js";
import { attachExport } from "./lib/exportbar.js";
import { labelStride, printable, truncate, visibleLabels } from "./lib/layout.js";

const METHODS = [
  ["attention", "attention (mean of heads)"],
  ["rollout", "rollout"],
  ["flow", "attention flow (exact max-flow)"],
  ["grad_rollout", "gradient-weighted rollout"],
  ["attn_grad", "attention \u00d7 gradient"],
];
const BUCKETS = 8;

function render({ model, el }) {
  ensureStyles(el);
  const panel = h("div", "aw-panel aw-flow");
  const title = h("div", "aw-title");
  const controls = h("div", "aw-controls");
  const methodSel = h("select", "aw-method");
  for (const [value, label] of METHODS) {
    const o = h("option", "", label);
    o.value = value;
    methodSel.appendChild(o);
  }
  const thLabel = h("label", "aw-sub", "threshold ");
  const thInput = h("input", "aw-threshold");
  thInput.type = "range";
  thInput.min = "0";
  thInput.max = "1";
  thInput.step = "0.01";
  const thValue = h("span", "aw-sub aw-threshold-value");
  thLabel.append(thInput, thValue);
  const kLabel = h("label", "aw-sub", "top-k ");
  const kInput = h("input", "aw-topk");
  kInput.type = "number";
  kInput.min = "0";
  kInput.step = "1";
  kInput.style.width = "4em";
  kLabel.appendChild(kInput);
  const btnDiff = h("button", "aw-diff", "difference");
  btnDiff.title = "show the two traces side by side, or their difference";
  const prog = h("progress", "aw-progress");
  prog.max = 1;
  const status = h("span", "aw-sub aw-status");
  controls.append(methodSel, thLabel, kLabel, btnDiff, prog, status);
  const error = h("div", "aw-error");
  const graphsBox = h("div", "aw-flow-graphs");
  graphsBox.style.display = "flex";
  graphsBox.style.gap = "12px";
  graphsBox.style.flexWrap = "wrap";
  const strips = h("div", "aw-flow-strips");
  panel.append(title, controls, error, graphsBox, strips);
  el.appendChild(panel);
  const tip = tooltip(panel);

  let graphs = []; // decoded: {label, off, query, key, weight, buckets, peak, count, total, capped}
  let canvases = [];
  let layouts = [];
  let nodes = null; // {data, shape:[G, L+1, T]}
  let scores = null; // {data, shape:[G, T]}
  let hover = null;
  const stopExport = attachExport({
    model,
    panel,
    controls,
    kind: "flow",
    canvases: () => canvases.map((c) => c.canvas),
    captions: () => (graphs.length > 1 ? graphs.map((g) => g.label) : null),
    redraw: () => draw(),
    selection: () => ({ method: model.get("method"), token: model.get("token") }),
  });

  function decodeGraphs() {
    graphs = (model.get("graphs") || []).map((g) => {
      const counts = decode(g.counts).data;
      const weight = decode(g.weight).data;
      return {
        label: g.label,
        off: layerOffsets(counts),
        query: decode(g.query).data,
        key: decode(g.key).data,
        weight,
        buckets: bucketEdges(weight, g.peak, BUCKETS),
        peak: g.peak,
        count: g.count,
        total: g.total,
        capped: g.capped,
        signed: g.signed,
      };
    });
  }

  function decodeToken() {
    const nd = model.get("nodes");
    nodes = nd && nd.data ? decode(nd) : null;
    const sc = model.get("scores");
    scores = sc && sc.data ? decode(sc) : null;
  }

  function ensureCanvases() {
    while (canvases.length < graphs.length) {
      const wrap = h("div", "aw-flow-graph");
      const cap = h("div", "aw-sub aw-flow-label");
      const c = h("canvas", "aw-canvas");
      c.tabIndex = 0;
      c.dataset.graph = String(canvases.length);
      c.addEventListener("mousemove", onMove);
      c.addEventListener("mouseleave", onLeave);
      c.addEventListener("click", onClick);
      c.addEventListener("keydown", onKey);
      wrap.append(cap, c);
      graphsBox.appendChild(wrap);
      canvases.push({ wrap, cap, canvas: c });
    }
    while (canvases.length > graphs.length) canvases.pop().wrap.remove();
  }

  function drawGraph(k, th) {
    const g = graphs[k];
    const { cap, canvas } = canvases[k];
    const tokens = model.get("tokens");
    const n = tokens.length;
    const L = model.get("n_layers");
    const token = model.get("token");
    const layer = model.get("layer");
    const hasTrace = nodes && token !== null && token !== undefined && k < nodes.shape[0];
    const font = 11;
    const avail = (panel.clientWidth || el.clientWidth || 720) - 16;
    const width = Math.max(260, graphs.length > 1 ? Math.floor(avail / 2) - 12 : Math.min(avail, 900));
    const rowH = fitRow(n, 640, { min: 1, max: 18 });
    const ctx0 = canvas.getContext("2d");
    ctx0.font = `${font}px ${th.code}`;
    let labelW = 0;
    for (const t of tokens) labelW = Math.max(labelW, ctx0.measureText(truncate(printable(t), 12)).width);
    const side = Math.ceil(Math.min(90, labelW) + 8);
    const lay = flowLayout({ nLayers: L, n, width, rowH, left: side, right: side, top: 18 });
    layouts[k] = lay;
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
    ctx.fillStyle = th.muted;
    ctx.font = `10px ${th.font}`;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    for (let c = 0; c <= L; c++) {
      ctx.fillStyle = c === layer + 1 ? th.foreground : th.muted;
      ctx.fillText(c === 0 ? "input" : `L${c - 1}`, colX(lay, c), lay.top - 4);
    }

    // Edges: one path per strength bucket; traced edges drawn again on top.
    const pos = th.accent;
    const neg = th.warn;
    const dim = hasTrace ? 0.25 : 1;
    for (let b = 0; b < 2 * BUCKETS; b++) {
      const st = bucketStyle(b, BUCKETS);
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
      ctx.strokeStyle = b >= BUCKETS ? neg : pos;
      ctx.globalAlpha = st.alpha * dim;
      ctx.lineWidth = Math.min(st.width, Math.max(0.5, rowH));
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    let traced = 0;
    if (hasTrace) {
      const T = nodes.shape[2];
      const r = nodes.data;
      const base = k * (L + 1) * T;
      // Edge flow = share at the query node x |weight|, scaled to the strongest one.
      let fmax = 0;
      const flows = new Float32Array(g.weight.length);
      for (let l = 0; l < L; l++) {
        for (let e = g.off[l]; e < g.off[l + 1]; e++) {
          const f = Math.abs(r[base + (l + 1) * T + g.query[e]]) * Math.abs(g.weight[e]);
          flows[e] = f;
          if (f > fmax) fmax = f;
        }
      }
      ctx.strokeStyle = th.warn;
      for (let l = 0; l < L; l++) {
        const x0 = colX(lay, l);
        const x1 = colX(lay, l + 1);
        for (let e = g.off[l]; e < g.off[l + 1]; e++) {
          const x = fmax > 0 ? flows[e] / fmax : 0;
          if (x < 0.02) continue;
          ctx.globalAlpha = 0.25 + 0.75 * x;
          ctx.lineWidth = 0.6 + 3 * x;
          ctx.beginPath();
          ctx.moveTo(x0, rowY(lay, g.key[e]));
          ctx.lineTo(x1, rowY(lay, g.query[e]));
          ctx.stroke();
          traced++;
        }
      }
      ctx.globalAlpha = 1;
      // Nodes sized by their share of the traced token.
      for (let c = 0; c <= L; c++) {
        let m = 0;
        for (let i = 0; i < T; i++) m = Math.max(m, Math.abs(r[base + c * T + i]));
        for (let i = 0; i < T; i++) {
          const v = m > 0 ? Math.abs(r[base + c * T + i]) / m : 0;
          if (v < 0.02) continue;
          ctx.fillStyle = r[base + c * T + i] < 0 ? neg : th.warn;
          ctx.globalAlpha = 0.35 + 0.65 * v;
          ctx.beginPath();
          ctx.arc(colX(lay, c), rowY(lay, i), Math.max(1, Math.min(6, rowH * 0.45)) * (0.4 + 0.6 * v), 0, 2 * Math.PI);
          ctx.fill();
        }
      }
      ctx.globalAlpha = 1;
    }

    // Token labels on both sides, thinned so they never overlap.
    const stride = labelStride(rowH, font);
    const always = [token, hover && hover.graph === k ? hover.row : null];
    ctx.font = `${font}px ${th.code}`;
    ctx.textBaseline = "middle";
    for (const i of visibleLabels(n, stride, always)) {
      const strong = i === token;
      ctx.fillStyle = strong ? th.warn : th.foreground;
      const label = truncate(printable(tokens[i]), 12);
      ctx.textAlign = "right";
      ctx.fillText(label, lay.left - 6, rowY(lay, i));
      ctx.textAlign = "left";
      ctx.fillText(label, colX(lay, L) + 6, rowY(lay, i));
    }
    const capText = `${g.label} \u00b7 ${g.count} of ${g.total} edges${g.capped ? " (capped: raise the threshold)" : ""}`;
    cap.textContent = graphs.length > 1 || g.capped ? capText : `${g.count} edges drawn`;
    canvas.dataset.edges = String(g.count);
    canvas.dataset.traced = String(traced);
    canvas.dataset.left = String(lay.left);
    canvas.dataset.top = String(lay.top);
    canvas.dataset.rowH = String(lay.rowH);
    canvas.dataset.colW = String(lay.colW);
    return { drawn: g.count, traced };
  }

  function drawStrips(th) {
    strips.replaceChildren();
    const tokens = model.get("tokens");
    const special = model.get("special") || [];
    const token = model.get("token");
    const labels = graphs.map((g) => g.label);
    const rows = scores ? scores.shape[0] : 0;
    const T = tokens.length;
    if (token === null || token === undefined) {
      strips.appendChild(h("div", "aw-sub", "click a token to trace where its output draws from"));
    }
    for (let gk = 0; gk < Math.max(rows, token === null || token === undefined ? 0 : 1); gk++) {
      const row = h("div", "aw-strip aw-flow-strip");
      row.dataset.graph = String(gk);
      const name = h("span", "aw-sub", `${labels[gk] || ""}${labels[gk] ? ": " : ""}token ${token} draws on`);
      name.style.marginRight = "6px";
      row.appendChild(name);
      const vals = scores && gk < rows ? scores.data.subarray(gk * T, (gk + 1) * T) : null;
      let vmax = 0;
      if (vals) for (let i = 0; i < T; i++) vmax = Math.max(vmax, Math.abs(vals[i]));
      const lut = themeLut(th.background);
      for (let i = 0; i < T; i++) {
        const s = h("span", special[i] ? "aw-tok aw-special" : "aw-tok", tokens[i]);
        s.dataset.index = String(i);
        if (i === token) s.classList.add("aw-selected");
        if (vals) {
          const v = vals[i];
          const idx = lutIndex(Math.abs(v), vmax);
          s.style.background = v < 0 ? th.warn : lutCss(lut, idx);
          if (v < 0) s.style.opacity = String(0.3 + 0.7 * (Math.abs(v) / (vmax || 1)));
          s.style.color = v < 0 ? "#000" : textOn(lut, idx);
          s.dataset.value = v.toFixed(4);
          s.title = v.toFixed(4);
        }
        row.appendChild(s);
      }
      strips.appendChild(row);
    }
  }

  function draw() {
    const th = theme(panel);
    const method = model.get("method");
    const token = model.get("token");
    title.textContent = `${model.get("model_name") || "attention"} \u2014 flow across ${model.get("n_layers")} layers`;
    methodSel.value = method;
    for (const o of methodSel.options) {
      o.disabled = (o.value === "grad_rollout" || o.value === "attn_grad") && !model.get("has_gradients");
    }
    thInput.value = String(model.get("threshold"));
    thValue.textContent = Number(model.get("threshold")).toFixed(2);
    kInput.value = String(model.get("top_k"));
    const two = (model.get("labels") || []).length > 1;
    btnDiff.style.display = two ? "" : "none";
    btnDiff.setAttribute("aria-pressed", String(model.get("compare_mode") === "diff"));
    const st = model.get("status");
    const computing = st === "computing";
    prog.style.display = computing ? "" : "none";
    prog.value = model.get("progress");
    status.textContent = computing ? `computing max-flow\u2026 ${Math.round(100 * model.get("progress"))}%` : "";
    error.textContent = model.get("error") || "";
    ensureCanvases();
    let drawn = 0;
    let traced = 0;
    for (let k = 0; k < graphs.length; k++) {
      const r = drawGraph(k, th);
      drawn += r.drawn;
      traced += r.traced;
    }
    drawStrips(th);
    panel.dataset.method = method;
    panel.dataset.edges = String(drawn);
    panel.dataset.traced = String(traced);
    // The threshold the drawn edges were cut with (the slider may be ahead of the kernel).
    const drawnFor = (model.get("graphs") || [])[0];
    panel.dataset.threshold = drawnFor ? String(drawnFor.threshold) : "";
    panel.dataset.token = token === null || token === undefined ? "" : String(token);
    panel.dataset.layer = String(model.get("layer"));
    panel.dataset.status = st;
    panel.dataset.scoresFor = scores && model.get("scores").token !== undefined ? String(model.get("scores").token) : "";
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  function hitAt(ev) {
    const c = ev.currentTarget;
    const k = Number(c.dataset.graph);
    const lay = layouts[k];
    if (!lay) return null;
    const p = localPoint(c, ev);
    const hit = hitFlow(lay, p.x, p.y);
    return hit ? { ...hit, graph: k } : null;
  }

  function onMove(ev) {
    const hit = hitAt(ev);
    const prevRow = hover && hover.row;
    hover = hit;
    const where = localPoint(panel, ev);
    const tokens = model.get("tokens");
    if (hit && hit.kind === "token") {
      const L = model.get("n_layers");
      let extra = "";
      if (nodes && model.get("token") !== null) {
        const T = nodes.shape[2];
        const v = nodes.data[hit.graph * (L + 1) * T + hit.col * T + hit.row];
        extra = `\nshare of token ${model.get("token")}: ${v.toFixed(4)}`;
      }
      const col = hit.col === 0 ? "input" : `after layer ${hit.col - 1}`;
      tip.show(`${printable(tokens[hit.row])} [${hit.row}] \u00b7 ${col}${extra}`, where.x, where.y);
    } else if (hit && hit.kind === "column") {
      tip.show(hit.col === 0 ? "input embeddings" : `click: select layer ${hit.col - 1}`, where.x, where.y);
    } else tip.hide();
    if ((hit && hit.row) !== prevRow) draw();
  }
  function onLeave() {
    hover = null;
    tip.hide();
    draw();
  }
  function onClick(ev) {
    const hit = hitAt(ev);
    if (!hit) return;
    if (hit.kind === "column") {
      if (hit.col > 0) setTraits(model, { layer: hit.col - 1 });
    } else {
      setTraits(model, { token: hit.row });
    }
    draw();
  }
  function onKey(ev) {
    const n = model.get("tokens").length;
    const tok = model.get("token");
    let next = tok === null || tok === undefined ? 0 : tok;
    if (ev.key === "ArrowDown") next = Math.min(n - 1, next + 1);
    else if (ev.key === "ArrowUp") next = Math.max(0, next - 1);
    else if (ev.key === "Escape") next = null;
    else return;
    ev.preventDefault();
    setTraits(model, { token: next });
    draw();
  }
  const onStripClick = (ev) => {
    const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
    if (span && span.dataset.index !== undefined) setTraits(model, { token: Number(span.dataset.index) });
  };
  strips.addEventListener("click", onStripClick);

  methodSel.onchange = () => setTraits(model, { method: methodSel.value });
  // Update the label while dragging; send the threshold when the slider settles.
  thInput.oninput = () => {
    thValue.textContent = Number(thInput.value).toFixed(2);
  };
  thInput.onchange = () => setTraits(model, { threshold: Number(thInput.value) });
  kInput.onchange = () => {
    const k = Math.max(0, Math.floor(Number(kInput.value) || 0));
    setTraits(model, { top_k: k });
  };
  btnDiff.onclick = () => setTraits(model, { compare_mode: model.get("compare_mode") === "diff" ? "side" : "diff" });

  const onGraphs = () => {
    decodeGraphs();
    draw();
  };
  const onToken = () => {
    decodeToken();
    draw();
  };
  const events = {
    "change:graphs": onGraphs,
    "change:nodes": onToken,
    "change:scores": onToken,
    "change:token": draw,
    "change:layer": draw,
    "change:status": draw,
    "change:progress": draw,
    "change:error": draw,
    "change:method": draw,
    "change:threshold": draw,
    "change:top_k": draw,
    "change:compare_mode": draw,
  };
  for (const [name, fn] of Object.entries(events)) model.on(name, fn);
  const stopWatching = onWidthChange(panel, draw);

  try {
    decodeGraphs();
    decodeToken();
    draw();
  } catch (err) {
    error.textContent = `could not draw the flow: ${err.message}`;
  }

  return () => {
    stopWatching();
    for (const [name, fn] of Object.entries(events)) model.off(name, fn);
    stopExport();
  };
}

export default { render };
