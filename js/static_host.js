// Boots the panels of an exported HTML file: no kernel, no network. Each panel's own
// view module (inlined in the file) renders against a static model; the selection is
// linked in the page, and data the kernel would compute on demand comes from tables
// embedded at export time.
import { createStaticModel, linkModels, revive } from "./lib/staticmodel.js";

function missing(what, doc) {
  return `${what} is not in this export (left out to keep the file under ${doc.max_mb} MB); re-export with fewer tokens or a larger max_bytes`;
}

function answer(doc, panel, extras, msg, model) {
  if (msg && msg.type === "get_map") {
    model.reply({ type: "error", id: msg.id, message: missing(`layer ${msg.layer}, head ${msg.head}`, doc) });
    return;
  }
  model.reply({ type: "error", id: msg && msg.id, message: "this exported page has no kernel" });
}

function hookFlow(doc, model, extras) {
  const fixed = {};
  for (const k of ["method", "threshold", "top_k", "compare_mode", "residual", "signed"]) fixed[k] = model.get(k);
  const byToken = extras.tokens || {};
  const onToken = (token) => {
    if (token === null || token === undefined) {
      model.set("nodes", {});
      model.set("scores", {});
      model.set("status", "");
      return;
    }
    const hit = byToken[String(token)];
    if (!hit) {
      model.set("nodes", {});
      model.set("scores", {});
      model.set("status", "error");
      model.set("error", missing(`the trace of token ${token}`, doc));
      return;
    }
    model.set("error", "");
    model.set("nodes", { token, ...hit.nodes });
    model.set("scores", { token, method: fixed.method, ...hit.scores });
    model.set("status", "ready");
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
      onSend: (msg, m) => answer(doc, panel, extras, msg, m),
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
