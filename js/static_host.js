// Boots the panels of an exported HTML file: no kernel, no network. Each panel's own
// view module (inlined in the file) renders against a static model; the selection is
// linked in the page, and data the kernel would compute on demand comes from tables
// embedded at export time.
import { FLOW_STATUS, MSG } from "./lib/protocol.js";
import { createStaticModel, linkModels, revive } from "./lib/staticmodel.js";

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
  const show = (status, nodes = {}, scores = {}) => {
    model.set("nodes", nodes);
    model.set("scores", scores);
    model.set("status", status);
  };
  const fixed = {};
  for (const k of ["method", "threshold", "top_k", "compare_mode", "residual", "signed"]) fixed[k] = model.get(k);
  const byToken = extras.tokens || {};
  const onToken = (token) => {
    if (token === null || token === undefined) return show(FLOW_STATUS.IDLE);
    const hit = byToken[String(token)];
    if (!hit) {
      show(FLOW_STATUS.ERROR);
      model.set("error", missing(`the trace of token ${token}`, doc));
      return;
    }
    model.set("error", "");
    show(FLOW_STATUS.READY, { token, ...hit.nodes }, { token, method: fixed.method, ...hit.scores });
  };
  model.on("change:token", onToken);
  for (const k of Object.keys(fixed)) {
    model.on(`change:${k}`, (v) => {
      if (v === fixed[k]) return;
      model.set("error", `changing ${k} needs a running kernel; this export shows ${k}=${fixed[k]}`);
      setTimeout(() => model.set(k, fixed[k]), 0);
    });
  }
  onToken(model.get("token"));
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
