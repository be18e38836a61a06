// AttentionFlow view: tokens at every layer boundary, joined by the strong edges of a
// flow method. Click a token to trace its paths; click a column header to pick a layer.
// Parts: graph.js (decoding, edge flows, styles from style.json), draw.js (canvases and
// strips), input.js (mouse and keys).
import { decode } from "../lib/codec.js";
import { disposer, ensureStyles, h, listen, onWidthChange, setTraits } from "../lib/dom.js";
import { attachViewExport, firstDraw, onTraits, viewState } from "../lib/view.js";
import { draw } from "./draw.js";
import { decodeGraph } from "./graph.js";
import { flowHandlers } from "./input.js";

export const METHODS = [
  ["attention", "attention (mean of heads)"],
  ["rollout", "rollout"],
  ["flow", "attention flow (exact max-flow)"],
  ["grad_rollout", "gradient-weighted rollout"],
  ["attn_grad", "attention \u00d7 gradient"],
];

function buildDom(el) {
  const d = {};
  d.panel = h("div", "aw-panel aw-flow");
  d.title = h("div", "aw-title");
  d.controls = h("div", "aw-controls");
  d.methodSel = h("select", "aw-method");
  for (const [value, label] of METHODS) {
    const o = h("option", "", label);
    o.value = value;
    d.methodSel.appendChild(o);
  }
  const thLabel = h("label", "aw-sub", "threshold ");
  d.thInput = h("input", "aw-threshold");
  Object.assign(d.thInput, { type: "range", min: "0", max: "1", step: "0.01" });
  d.thValue = h("span", "aw-sub aw-threshold-value");
  thLabel.append(d.thInput, d.thValue);
  const kLabel = h("label", "aw-sub", "top-k ");
  d.kInput = h("input", "aw-topk");
  Object.assign(d.kInput, { type: "number", min: "0", step: "1" });
  d.kInput.style.width = "4em";
  kLabel.appendChild(d.kInput);
  d.btnDiff = h("button", "aw-diff", "difference");
  d.btnDiff.title = "show the two traces side by side, or their difference";
  d.prog = h("progress", "aw-progress");
  d.prog.max = 1;
  d.status = h("span", "aw-sub aw-status");
  d.controls.append(d.methodSel, thLabel, kLabel, d.btnDiff, d.prog, d.status);
  d.error = h("div", "aw-error");
  d.graphsBox = h("div", "aw-flow-graphs");
  d.graphsBox.style.cssText = "display:flex;gap:12px;flex-wrap:wrap;";
  d.strips = h("div", "aw-flow-strips");
  d.panel.append(d.title, d.controls, d.error, d.graphsBox, d.strips);
  el.appendChild(d.panel);
  return d;
}

function render({ model, el }) {
  ensureStyles(el);
  const dom = buildDom(el);
  const v = viewState(model, el, dom, {
    graphs: [], // see graph.decodeGraph
    canvases: [], // {wrap, cap, canvas, stop} per graph
    layouts: [],
    nodes: null, // {data, shape: [G, L+1, T]}
    scores: null, // {data, shape: [G, T]}
  });
  v.draw = () => draw(v);
  const handlers = flowHandlers(v);
  v.ensureCanvases = () => {
    while (v.canvases.length < v.graphs.length) {
      const wrap = h("div", "aw-flow-graph");
      const cap = h("div", "aw-sub aw-flow-label");
      const c = h("canvas", "aw-canvas");
      c.tabIndex = 0;
      c.dataset.graph = String(v.canvases.length);
      wrap.append(cap, c);
      v.graphsBox.appendChild(wrap);
      v.canvases.push({ wrap, cap, canvas: c, stop: listen(c, handlers.graph) });
    }
    while (v.canvases.length > v.graphs.length) {
      const gone = v.canvases.pop();
      gone.stop();
      gone.wrap.remove();
    }
  };
  const stop = disposer();
  stop.add(
    attachViewExport(v, "flow", {
      canvases: () => v.canvases.map((c) => c.canvas),
      captions: () => (v.graphs.length > 1 ? v.graphs.map((g) => g.label) : null),
      selection: () => ({ method: model.get("method"), token: model.get("token") }),
    }),
  );
  stop.add(() => v.canvases.forEach((c) => c.stop()));

  const decodeGraphs = () => {
    v.graphs = (model.get("graphs") || []).map(decodeGraph);
  };
  const decodeToken = () => {
    const nd = model.get("nodes");
    v.nodes = nd && nd.data ? decode(nd) : null;
    const sc = model.get("scores");
    v.scores = sc && sc.data ? decode(sc) : null;
  };

  stop.add(
    listen(v.strips, handlers.strips),
    listen(v.methodSel, { change: () => setTraits(model, { method: v.methodSel.value }) }),
    // Update the label while dragging; send the threshold when the slider settles.
    listen(v.thInput, {
      input: () => {
        v.thValue.textContent = Number(v.thInput.value).toFixed(2);
      },
      change: () => setTraits(model, { threshold: Number(v.thInput.value) }),
    }),
    listen(v.kInput, { change: () => setTraits(model, { top_k: Math.max(0, Math.floor(Number(v.kInput.value) || 0)) }) }),
    listen(v.btnDiff, { click: () => setTraits(model, { compare_mode: model.get("compare_mode") === "diff" ? "side" : "diff" }) }),
  );
  const onGraphs = () => {
    decodeGraphs();
    v.draw();
  };
  const onToken = () => {
    decodeToken();
    v.draw();
  };
  stop.add(
    listen(model, {
      "change:graphs": onGraphs,
      ...onTraits(["nodes", "scores"], onToken),
      ...onTraits(["token", "layer", "status", "progress", "error", "method", "threshold", "top_k", "compare_mode"], v.draw),
    }),
    onWidthChange(v.panel, v.draw),
  );

  firstDraw(v, "flow", () => {
    decodeGraphs();
    decodeToken();
    v.draw();
  });
  return () => stop.dispose();
}

export default { render };
