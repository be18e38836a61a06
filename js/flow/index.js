// AttentionFlow view: the route of one output token through a flow method's layered
// graph. Click a token row to trace it; click a column header to pick a layer.
// Parts: graph.js (decoding, row layout, styles from style.json), draw.js (canvases,
// notes and strips), legend.js (the aw-legend), input.js (mouse and keys).
import { decode } from "../lib/codec.js";
import { disposer, ensureStyles, h, listen, onWidthChange, setTraits } from "../lib/dom.js";
import { attachViewExport, firstDraw, onTraits, viewState } from "../lib/view.js";
import { draw } from "./draw.js";
import { decodeGraph } from "./graph.js";
import { flowHandlers } from "./input.js";
import { methodOption, showProgress } from "./progress.js";

function buildDom(el) {
  const d = {};
  d.panel = h("div", "aw-panel aw-flow");
  d.title = h("div", "aw-title");
  d.controls = h("div", "aw-controls");
  d.methodSel = h("select", "aw-method");
  d.methodSel.title = "flow method: how a token's output is traced back to the input";
  // Unavailable methods say why in their option text: the closed control stays its own width.
  d.methodSel.style.maxWidth = "16em";
  d.keepLabel = h("label", "aw-sub aw-keep-label", "keep ");
  d.keepInput = h("input", "aw-keep");
  Object.assign(d.keepInput, { type: "range", min: "0.5", max: "1", step: "0.01" });
  d.keepInput.title = "share of each layer's traced cross-token weight kept (strongest edges first)";
  d.keepValue = h("span", "aw-sub aw-keep-value");
  d.keepLabel.append(d.keepInput, d.keepValue);
  d.rowsSel = h("select", "aw-rows");
  for (const [value, label] of [["route", "rows: route"], ["all", "rows: all"]]) {
    const o = h("option", "", label);
    o.value = value;
    d.rowsSel.appendChild(o);
  }
  d.rowsSel.title = "route: label only the tokens on the route (others collapse into gaps); all: every token, scrolling";
  d.btnDiff = h("button", "aw-diff", "difference");
  d.btnDiff.title = "show the two traces side by side, or the change between them";
  d.prog = h("progress", "aw-progress");
  d.prog.max = 1;
  d.status = h("span", "aw-sub aw-status");
  d.controls.append(d.methodSel, d.keepLabel, d.rowsSel, d.btnDiff, d.prog, d.status);
  d.error = h("div", "aw-error");
  d.legend = h("div", "aw-legend aw-flow-legend");
  d.legend.style.cssText = "display:flex;flex-wrap:wrap;align-items:center;gap:2px 4px;margin:2px 0 4px;";
  d.capNote = h("div", "aw-sub aw-flow-capped");
  d.agreeNote = h("div", "aw-sub aw-flow-agree");
  d.graphsBox = h("div", "aw-flow-graphs");
  d.graphsBox.style.cssText = "display:flex;gap:12px;flex-wrap:wrap;";
  d.strips = h("div", "aw-flow-strips");
  d.panel.append(d.title, d.controls, d.error, d.legend, d.capNote, d.agreeNote, d.graphsBox, d.strips);
  el.appendChild(d.panel);
  return d;
}

function render({ model, el }) {
  ensureStyles(el);
  const dom = buildDom(el);
  const v = viewState(model, el, dom, {
    graphs: [], // see graph.decodeGraph
    canvases: [], // {wrap, cap, scroll, canvas, stop} per graph
    layouts: [],
    scores: null, // {data, shape: [G, T]}
    methodsKey: "",
  });
  v.draw = () => {
    draw(v);
    showProgress(v); // after draw: the job's line replaces draw's max-flow-only status text
  };
  // The method list comes from the kernel (attn_widgets.flows), so new methods need no view code.
  v.syncMethods = () => {
    const ms = model.get("methods") || [];
    const key = JSON.stringify(ms);
    if (key === v.methodsKey) return;
    v.methodsKey = key;
    v.methodSel.replaceChildren();
    for (const m of ms) {
      const opt = methodOption(m);
      const o = h("option", "", opt.text);
      o.value = m.name;
      o.disabled = opt.disabled;
      if (opt.title) o.title = opt.title;
      v.methodSel.appendChild(o);
    }
  };
  const handlers = flowHandlers(v);
  v.ensureCanvases = () => {
    while (v.canvases.length < v.graphs.length) {
      const wrap = h("div", "aw-flow-graph");
      const cap = h("div", "aw-sub aw-flow-label");
      const scroll = h("div", "aw-flow-scroll");
      scroll.style.overflowY = "auto";
      const c = h("canvas", "aw-canvas");
      c.tabIndex = 0;
      c.dataset.graph = String(v.canvases.length);
      scroll.appendChild(c);
      wrap.append(cap, scroll);
      v.graphsBox.appendChild(wrap);
      v.canvases.push({ wrap, cap, scroll, canvas: c, stop: listen(c, handlers.graph) });
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
      selection: () => ({ method: model.get("method"), token: model.get("token"), keep: model.get("keep") }),
    }),
  );
  stop.add(() => v.canvases.forEach((c) => c.stop()));

  const decodeGraphs = () => {
    v.graphs = (model.get("graphs") || []).map(decodeGraph);
  };
  const decodeScores = () => {
    const sc = model.get("scores");
    v.scores = sc && sc.data ? decode(sc) : null;
  };

  stop.add(
    listen(v.strips, handlers.strips),
    listen(v.methodSel, { change: () => setTraits(model, { method: v.methodSel.value }) }),
    // Update the label while dragging; send keep when the slider settles.
    listen(v.keepInput, {
      input: () => {
        v.keepValue.textContent = Number(v.keepInput.value).toFixed(2);
      },
      change: () => setTraits(model, { keep: Number(v.keepInput.value) }),
    }),
    listen(v.rowsSel, { change: () => setTraits(model, { rows: v.rowsSel.value }) }),
    listen(v.btnDiff, { click: () => setTraits(model, { compare_mode: model.get("compare_mode") === "diff" ? "side" : "diff" }) }),
  );
  stop.add(
    listen(model, {
      "change:graphs": () => {
        decodeGraphs();
        v.draw();
      },
      "change:job": () => showProgress(v),
      "change:scores": () => {
        decodeScores();
        v.draw();
      },
      ...onTraits(["token", "layer", "status", "progress", "error", "method", "keep", "rows", "compare_mode", "methods"], v.draw),
    }),
    onWidthChange(v.panel, v.draw),
  );

  firstDraw(v, "flow", () => {
    decodeGraphs();
    decodeScores();
    v.draw();
  });
  return () => stop.dispose();
}

export default { render };
