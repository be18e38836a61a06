// What every panel view starts from: one state object `v` holding the model, the
// elements, a tooltip and the panel's one error line (protocol.errorLine), plus the
// view's own fields. The parts of a view (draw, input, ...) are functions of `v`.
import { tooltip } from "./dom.js";
import { attachExport } from "./exportbar.js";
import { errorLine } from "./protocol.js";

/** The view state over `dom` (its `panel` and `error` elements are required). */
export function viewState(model, el, dom, fields = {}) {
  return { model, el, ...dom, tip: tooltip(dom.panel), errors: errorLine(dom.error, model), hover: null, ...fields };
}

/** A mouseleave handler: forget the hover (`v[key]`), hide the tooltip, redraw. */
export function clearHover(v, key = "hover") {
  return () => {
    v[key] = null;
    v.tip.hide();
    v.draw();
  };
}

/** The PNG / SVG buttons of view `v` (exportbar.attachExport on its panel and controls). */
export function attachViewExport(v, kind, { canvases, captions, selection }) {
  return attachExport({ model: v.model, panel: v.panel, controls: v.controls, kind, canvases, captions, redraw: () => v.draw(), selection });
}

/** Run the first decode / draw of a view; a failure is said on its error line. */
export function firstDraw(v, what, fn) {
  try {
    fn();
  } catch (err) {
    v.errors.set("view", `could not draw the ${what}: ${err.message}`);
  }
}

/** A listener table calling `fn` on a change of any of the traits `names`, for dom.listen. */
export function onTraits(names, fn) {
  return Object.fromEntries(names.map((name) => [`change:${name}`, fn]));
}
