// Small DOM helpers shared by the views. Token strings are untrusted: they only ever
// reach the page through textContent / title, never innerHTML.

/** Create an element with a class and optional text (set as text, never as HTML). */
export function h(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

/** Read a --jp-* CSS variable with a fallback (works outside JupyterLab too). */
export function cssVar(el, name, fallback) {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

/** Theme colours for drawing on canvas. */
export function theme(el) {
  return {
    background: cssVar(el, "--jp-layout-color0", "#ffffff"),
    foreground: cssVar(el, "--jp-ui-font-color1", "#1f1f1f"),
    muted: cssVar(el, "--jp-ui-font-color2", "#616161"),
    border: cssVar(el, "--jp-border-color2", "#e0e0e0"),
    accent: cssVar(el, "--jp-brand-color1", "#1976d2"),
    warn: cssVar(el, "--jp-warn-color1", "#f57c00"),
    font: cssVar(el, "--jp-ui-font-family", "system-ui, sans-serif"),
    code: cssVar(el, "--jp-code-font-family", "monospace"),
  };
}

let ratioOverride = 0; // > 0 while an image export re-renders at a higher resolution

/** Device px per CSS px that canvases are sized at now. */
export function pixelRatio() {
  return ratioOverride || (typeof window !== "undefined" && window.devicePixelRatio) || 1;
}

/** Run `fn` with canvases sized at `ratio` device px per CSS px (image export), then restore. */
export function withPixelRatio(ratio, fn) {
  const prev = ratioOverride;
  ratioOverride = ratio > 0 ? ratio : 0;
  try {
    return fn();
  } finally {
    ratioOverride = prev;
  }
}

/** Size a canvas for CSS px (w, h) at the device pixel ratio; returns a 2d context in CSS px. */
export function sizeCanvas(canvas, w, h) {
  const dpr = pixelRatio();
  canvas.width = Math.max(1, Math.round(w * dpr));
  canvas.height = Math.max(1, Math.round(h * dpr));
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** Mouse position relative to an element, in CSS px. */
export function localPoint(el, ev) {
  const r = el.getBoundingClientRect();
  return { x: ev.clientX - r.left, y: ev.clientY - r.top };
}

/** Set a model trait from the view and sync it to the kernel. */
export function setTraits(model, values) {
  let changed = false;
  for (const [k, v] of Object.entries(values)) {
    if (model.get(k) !== v) {
      model.set(k, v);
      changed = true;
    }
  }
  if (changed) model.save_changes();
  return changed;
}

/** Shared stylesheet (scoped by the aw- prefix), injected once per document. */
export function ensureStyles(el) {
  // Hosts that draw each view in its own shadow root (marimo) keep document styles out:
  // there the sheet goes into the view's root, once per root.
  const root = el && typeof el.getRootNode === "function" ? el.getRootNode() : null;
  const shadow = root && root !== document && typeof root.host !== "undefined" ? root : null;
  if ((shadow || document).getElementById("aw-styles")) return;
  const s = document.createElement("style");
  s.id = "aw-styles";
  s.textContent = `
.aw-panel { font-family: var(--jp-ui-font-family, system-ui, sans-serif); font-size: 12px;
  color: var(--jp-ui-font-color1, #1f1f1f); background: var(--jp-layout-color0, #fff);
  position: relative; padding: 4px; box-sizing: border-box; max-width: 100%; }
.aw-title { font-weight: 600; margin: 0 0 4px 0; }
.aw-sub { color: var(--jp-ui-font-color2, #616161); font-weight: 400; }
.aw-canvas { display: block; cursor: pointer; outline: none; }
.aw-canvas:focus-visible { outline: 2px solid var(--jp-brand-color1, #1976d2); }
.aw-tip { position: absolute; pointer-events: none; padding: 2px 6px; border-radius: 3px;
  background: var(--jp-layout-color2, #eee); color: var(--jp-ui-font-color0, #000);
  border: 1px solid var(--jp-border-color1, #bdbdbd); white-space: pre; z-index: 10;
  font-family: var(--jp-code-font-family, monospace); font-size: 11px; display: none; }
.aw-error { color: var(--jp-error-color1, #d32f2f); margin: 4px 0; }
.aw-error:empty { display: none; }
.aw-controls { display: flex; gap: 8px; align-items: center; margin: 4px 0; flex-wrap: wrap; }
.aw-controls button { font: inherit; padding: 1px 8px; cursor: pointer;
  background: var(--jp-layout-color1, #fff); color: inherit;
  border: 1px solid var(--jp-border-color1, #bdbdbd); border-radius: 3px; }
.aw-controls button[aria-pressed="true"] { background: var(--jp-brand-color1, #1976d2); color: #fff; }
.aw-export { display: inline-flex; gap: 4px; align-items: center; margin-left: auto; }
.aw-controls .aw-export button { padding: 0 6px; font-size: 11px; }
.aw-controls .aw-export button.aw-export-unavailable { opacity: 0.5; cursor: help; }
.aw-export-msg { color: var(--jp-ui-font-color2, #616161); font-size: 11px; }
.aw-export-msg.aw-export-failed { color: var(--jp-error-color1, #d32f2f); }
.aw-strip { display: flex; flex-wrap: wrap; gap: 2px; margin-top: 6px; line-height: 1.6;
  font-family: var(--jp-code-font-family, monospace); max-height: 240px; overflow: auto; }
.aw-tok { padding: 0 3px; border-radius: 2px; cursor: pointer; white-space: pre; unicode-bidi: isolate;
  border: 1px solid transparent; }
.aw-tok.aw-selected { border-color: var(--jp-warn-color1, #f57c00); font-weight: 700; }
.aw-tok.aw-special { font-style: italic; }
`;
  (shadow || document.head).appendChild(s);
}

/** A tooltip element inside `panel`. */
export function tooltip(panel) {
  const tip = h("div", "aw-tip");
  panel.appendChild(tip);
  return {
    show(text, x, y) {
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = `${x + 12}px`;
      tip.style.top = `${y + 12}px`;
    },
    hide() {
      tip.style.display = "none";
    },
    el: tip,
  };
}

/**
 * Call `redraw` when `panel` changes width (not on every layout pass). Returns a function
 * that stops watching. A no-op where ResizeObserver does not exist.
 */
export function onWidthChange(panel, redraw) {
  if (typeof ResizeObserver === "undefined") return () => {};
  let last = panel.clientWidth;
  const ro = new ResizeObserver(() => {
    if (panel.clientWidth !== last) {
      last = panel.clientWidth;
      redraw();
    }
  });
  ro.observe(panel);
  return () => ro.disconnect();
}

/**
 * Attach a table of listeners, `{event: fn, ...}`, to an anywidget model (on / off) or a
 * DOM target (addEventListener), and return one function that detaches them all
 * (safe to call twice). Entries whose fn is falsy are skipped.
 */
export function listen(target, table) {
  // A model (on / off) first: anything with `on` is not a plain DOM target.
  const dom = typeof target.on !== "function";
  const pairs = Object.entries(table).filter(([, fn]) => typeof fn === "function");
  for (const [ev, fn] of pairs) {
    if (dom) target.addEventListener(ev, fn);
    else target.on(ev, fn);
  }
  let attached = true;
  return () => {
    if (!attached) return;
    attached = false;
    for (const [ev, fn] of pairs) {
      if (dom) target.removeEventListener(ev, fn);
      else target.off(ev, fn);
    }
  };
}

/** Collect dispose functions; `dispose()` runs them, last added first, once. */
export function disposer() {
  const fns = [];
  return {
    add(...more) {
      for (const fn of more) if (typeof fn === "function") fns.push(fn);
    },
    dispose() {
      while (fns.length) fns.pop()();
    },
  };
}
