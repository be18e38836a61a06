// Boots the panels of an exported HTML file: no kernel, no network. Each panel's own
// view module (inlined in the file) renders against a static model; the selection is
// linked in the page, and data the kernel would compute on demand comes from tables
// embedded at export time.
import { FLOW_STATUS, MSG } from "./lib/protocol.js";
import { createStaticModel, linkModels, revive } from "./lib/staticmodel.js";
import { decode } from "./lib/codec.js";
import { decodeGraph, pruneRoute } from "./flow/graph.js";

function missing(what, doc) {
  return `${what} is not in this export (left out to keep the file under ${doc.max_mb} MB); re-export with fewer tokens or a larger max_bytes`;
}

/** The kernel's part for a request the view sends (protocol.js): an "error" reply. */
function answer(doc, msg, model) {
  if (msg && msg.type === MSG.MAP_ACK) return; // a notice: no kernel to tell
  const message =
    msg && msg.type === MSG.GET_MAP
      ? missing(`layer ${msg.layer}, head ${msg.head}`, doc)
      : "this exported page has no kernel";
  model.reply({ type: MSG.ERROR, id: msg && msg.id, message });
}

function hookFlow(doc, model, extras) {
  // The page embeds, per (method, token), the route at keep=1 (edges strongest first per
  // layer) and re-prunes it to the slider's keep as route_graph does; methods and tokens
  // not embedded are hidden (methods) or say so (tokens). Side-by-side / difference
  // switching needs the kernel, so that button is hidden.
  const routes = extras.routes || {};
  const embedded = new Set(Object.keys(routes));
  model.set("methods", (model.get("methods") || []).filter((m) => embedded.has(m.name)));
  const diff = model.get("compare_mode") === "diff";
  if (diff) model.set("_keep_fixed", true);
  const apply = () => {
    const method = model.get("method");
    const sel = model.get("token");
    const token = sel === null || sel === undefined ? extras.default_token : sel;
    const hit = (routes[method] || {})[String(token)];
    model.set("route_token", token);
    if (!hit) {
      model.set("status", FLOW_STATUS.ERROR);
      model.set("error", missing(`the route of token ${token} for method ${method}`, doc));
      return;
    }
    model.set("error", "");
    const keep = Number(model.get("keep"));
    const total = decode(hit.layer_total);
    const T = total.shape[total.shape.length - 1];
    const graphs = hit.graphs.map((g, k) => {
      const dg = decodeGraph(g);
      return diff ? dg : pruneRoute(dg, total.data.subarray(k * T, (k + 1) * T), keep, model.get("max_edges_per_layer"));
    });
    model.set("graphs", graphs);
    model.set("scores", sel === null || sel === undefined ? {} : { token, method, ...hit.scores });
    model.set("status", sel === null || sel === undefined ? FLOW_STATUS.IDLE : FLOW_STATUS.READY);
  };
  for (const k of ["token", "method", "keep"]) model.on(`change:${k}`, apply);
  apply();
}

/** Render every panel described by `doc` (the JSON embedded in the exported page). */
export async function mount(doc, root = document) {
  const models = [];
  const modules = {};
  for (const [kind, src] of Object.entries(doc.esm)) {
    const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
    modules[kind] = (await import(url)).default;
  }
  for (const panel of doc.panels) {
    const el = root.getElementById(panel.id);
    const extras = revive(panel.extras || {});
    // `_static`: no kernel behind this model (the SVG button says so instead of asking one).
    const model = createStaticModel({ ...revive(panel.state), _static: true }, {
      onSend: (msg, m) => answer(doc, msg, m),
    });
    if (panel.kind === "flow") hookFlow(doc, model, extras);
    try {
      await modules[panel.kind].render({ model, el });
    } catch (err) {
      el.textContent = `could not draw this panel: ${err.message}`;
    }
    models.push(model);
  }
  if (doc.link && models.length > 1) linkModels(models, doc.link);
  root.body.dataset.awReady = "1";
  return models;
}
