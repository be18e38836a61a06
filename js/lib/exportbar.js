// "PNG" and "SVG" buttons in a panel's controls row.
//
// PNG: made in the browser from the panel's own canvas(es), labels included. The panel is
// re-drawn once at `exportScale()` device px per CSS px (at least 2x, or the screen's pixel
// ratio if higher; capped so no side exceeds EXPORT_MAX_SIDE) and copied, then drawn again
// at the screen's ratio: what is downloaded is what is on screen, sharper. Several canvases
// (the flow panel comparing two traces) are put side by side in one image, each under its
// caption. HTML around the canvas (the heatmap's sentence strip, the flow's strips) is not
// in the PNG; the SVG has it.
//
// SVG: drawn by the kernel (the widget's `to_svg()`, vector labels) and sent back as UTF-8
// bytes in one buffer ("get_svg" request). An exported HTML page has no kernel (its model
// has `_static` set): there the SVG button is greyed out and a click says why; PNG works.
import { h, pixelRatio, theme, withPixelRatio } from "./dom.js";
import { asBytes, fromBase64 } from "./codec.js";
import { createClient, MSG } from "./protocol.js";

export const EXPORT_MIN_SCALE = 2;
/** Largest side of an exported PNG, in device px (browsers refuse much larger canvases). */
export const EXPORT_MAX_SIDE = 8192;
/** CSS px between two canvases put side by side, and the caption band above them. */
export const EXPORT_GAP = 12;
export const EXPORT_CAPTION = 18;
export const OFFLINE_SVG =
  "SVG export needs the Python kernel, and this exported page has none: use the PNG button, " +
  "or widget.save_svg(path) in the notebook";

/** Device px per CSS px for an export of a (cssW x cssH) image on a screen of ratio `dpr`. */
export function exportScale(cssW, cssH, dpr = 1, { min = EXPORT_MIN_SCALE, maxSide = EXPORT_MAX_SIDE } = {}) {
  const s = Math.max(min, Number(dpr) || 1);
  const side = Math.max(1, Number(cssW) || 0, Number(cssH) || 0);
  return side * s > maxSide ? maxSide / side : s;
}

/** A file-system-safe name part: letters, digits, "_", "-" and "." only; never empty. */
export function safePart(s) {
  const out = String(s ?? "")
    .trim()
    .replace(/[^A-Za-z0-9_.-]+/g, "_")
    .replace(/^[._]+|_+$/g, "")
    .slice(0, 60);
  return out || "attention";
}

/**
 * Download name of a panel image: "<model>-<kind>-L<layer>-H<head>[-t<token>].<ext>".
 * `sel` fields that are null / undefined are left out.
 */
export function exportName(kind, sel = {}, ext = "png") {
  const parts = [safePart(sel.model || "attention"), safePart(kind)];
  if (sel.method) parts.push(safePart(sel.method));
  if (sel.layer !== null && sel.layer !== undefined) parts.push(`L${safePart(sel.layer)}`);
  if (sel.head !== null && sel.head !== undefined) parts.push(`H${safePart(sel.head)}`);
  if (sel.token !== null && sel.token !== undefined) parts.push(`t${safePart(sel.token)}`);
  return `${parts.join("-")}.${ext}`;
}

/** Bytes of a base64 data URL ("data:image/png;base64,...") and its MIME type. */
export function dataUrlToBytes(url) {
  const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(String(url));
  if (!m) throw new Error("not a data: URL");
  const bytes = m[2] ? fromBase64(m[3]) : new TextEncoder().encode(decodeURIComponent(m[3]));
  return { type: m[1] || "text/plain", bytes };
}

/** A canvas as a PNG Blob: canvas.toBlob, or toDataURL where toBlob is missing or fails. */
export function canvasToBlob(canvas) {
  const viaUrl = () => {
    const { type, bytes } = dataUrlToBytes(canvas.toDataURL("image/png"));
    return new Blob([bytes], { type });
  };
  if (typeof canvas.toBlob !== "function") return Promise.resolve().then(viaUrl);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (blob) resolve(blob);
      else {
        try {
          resolve(viaUrl());
        } catch (err) {
          reject(err);
        }
      }
    }, "image/png");
  });
}

/** Place images of device-px sizes side by side: total size and each one's origin. */
export function sideBySide(sizes, gap = 0, top = 0) {
  let x = 0;
  let height = 0;
  const at = sizes.map((s, i) => {
    const o = { x: x + (i ? gap : 0), y: top };
    x = o.x + s.width;
    height = Math.max(height, s.height);
    return o;
  });
  return { width: Math.max(1, x), height: Math.max(1, top + height), at };
}

/** Trigger a download of `blob` as `name` through a hidden <a download>. */
export function download(blob, name, { doc = document, urls = URL, revokeAfterMs = 30000 } = {}) {
  const href = urls.createObjectURL(blob);
  const a = doc.createElement("a");
  a.href = href;
  a.download = name;
  a.rel = "noopener";
  a.style.display = "none";
  (doc.body || doc.documentElement).appendChild(a);
  try {
    a.click();
  } finally {
    a.remove();
    // Revoked later, not at once: the browser reads the blob after the click returns.
    setTimeout(() => urls.revokeObjectURL(href), revokeAfterMs);
  }
  return href;
}

/** The CSS size a canvas is shown at (sizeCanvas sets style.width/height), or null when it
 * was never drawn or is not on screen (display: none on it or an ancestor). */
function cssSize(canvas) {
  if (typeof canvas.getClientRects === "function" && canvas.getClientRects().length === 0) return null;
  const w = parseFloat(canvas.style.width);
  const hh = parseFloat(canvas.style.height);
  return w > 0 && hh > 0 ? { w, h: hh } : null;
}

/**
 * Add the buttons to `controls`. Options:
 *  - model, panel, controls: the view's model, root element and controls row;
 *  - kind: "matrix" | "heatmap" | "flow" (file names);
 *  - canvases(): the canvases to export (those not drawn or hidden are skipped; several are put
 *    side by side), captions(): one text per canvas, or null;
 *  - redraw(): draw the panel now (called at the export ratio, then at the screen's again);
 *  - selection(): fields of the file name ({layer, head, token, method}).
 * Sets panel.dataset.exported ("png:<bytes>" / "svg:<bytes>"), exportedSize ("WxH", PNG),
 * exports (a counter) and exportError. Returns a dispose function.
 */
export function attachExport({ model, panel, controls, kind, canvases, redraw, captions = () => null, selection = () => ({}) }) {
  const bar = h("span", "aw-export");
  const btnPng = h("button", "aw-export-png", "PNG");
  const btnSvg = h("button", "aw-export-svg", "SVG");
  const msg = h("span", "aw-export-msg");
  msg.setAttribute("role", "status");
  const offline = !!model.get("_static");
  btnPng.title = "download this panel as a PNG image (labels included, at least 2\u00d7 resolution)";
  btnSvg.title = offline ? OFFLINE_SVG : "download this panel as an SVG figure (vector labels; drawn by the kernel)";
  // Greyed out, but still clickable: a click explains (a disabled button would say nothing).
  if (offline) btnSvg.classList.add("aw-export-unavailable");
  bar.append(btnPng, btnSvg, msg);
  controls.appendChild(bar);
  const client = offline ? null : createClient(model, { timeoutMs: 120000 });
  let busy = false;

  const name = (ext) =>
    exportName(kind, { model: model.get("model_name"), ...selection() }, ext);

  function report(text, failed) {
    msg.textContent = text;
    msg.classList.toggle("aw-export-failed", !!failed);
    if (failed) panel.dataset.exportError = text;
    else delete panel.dataset.exportError;
  }

  function done(what, bytes, size) {
    panel.dataset.exported = `${what}:${bytes}`;
    if (size) panel.dataset.exportedSize = size;
    panel.dataset.exports = String(Number(panel.dataset.exports || 0) + 1);
    report("", false);
  }

  /** The panel's canvases, re-drawn at the export ratio, composed on one canvas. */
  function composePng() {
    const before = canvases().filter((c) => c && cssSize(c));
    if (!before.length) throw new Error("nothing is drawn yet");
    const sizes = before.map(cssSize);
    const caps = captions();
    const capH = caps && caps.some(Boolean) ? EXPORT_CAPTION : 0;
    const cssW = sizes.reduce((a, s) => a + s.w, 0) + EXPORT_GAP * (sizes.length - 1);
    const cssH = capH + Math.max(...sizes.map((s) => s.h));
    const scale = exportScale(cssW, cssH, pixelRatio());
    const th = theme(panel);
    let out = null;
    try {
      withPixelRatio(scale, () => {
        redraw();
        const list = canvases().filter((c) => c && cssSize(c));
        if (list.length === 1 && !capH) {
          // One canvas: a copy of it, so the redraw at screen ratio below cannot change it.
          out = document.createElement("canvas");
          out.width = list[0].width;
          out.height = list[0].height;
          out.getContext("2d").drawImage(list[0], 0, 0);
          return;
        }
        const lay = sideBySide(
          list.map((c) => ({ width: c.width, height: c.height })),
          Math.round(EXPORT_GAP * scale),
          Math.round(capH * scale),
        );
        out = document.createElement("canvas");
        out.width = lay.width;
        out.height = lay.height;
        const ctx = out.getContext("2d");
        ctx.fillStyle = th.background;
        ctx.fillRect(0, 0, lay.width, lay.height);
        list.forEach((c, i) => ctx.drawImage(c, lay.at[i].x, lay.at[i].y));
        if (capH && caps) {
          ctx.fillStyle = th.muted;
          ctx.font = `${Math.round(11 * scale)}px ${th.font}`;
          ctx.textBaseline = "middle";
          list.forEach((_c, i) => ctx.fillText(String(caps[i] || ""), lay.at[i].x + 4 * scale, (capH * scale) / 2));
        }
      });
    } finally {
      redraw(); // back to the screen's ratio
    }
    return out;
  }

  async function run(what, fn) {
    if (busy) return;
    busy = true;
    btnPng.disabled = true;
    if (!offline) btnSvg.disabled = true;
    report(`${what}\u2026`, false);
    try {
      await fn();
    } catch (err) {
      report(`${what} failed: ${err && err.message ? err.message : err}`, true);
    } finally {
      busy = false;
      btnPng.disabled = false;
      if (!offline) btnSvg.disabled = false;
    }
  }

  btnPng.onclick = () =>
    run("PNG export", async () => {
      const canvas = composePng();
      const blob = await canvasToBlob(canvas);
      download(blob, name("png"));
      done("png", blob.size, `${canvas.width}x${canvas.height}`);
    });
  btnSvg.onclick = () => {
    if (offline) {
      report(OFFLINE_SVG, true);
      return;
    }
    run("SVG export", async () => {
      const { buffers } = await client.request(MSG.GET_SVG);
      if (!buffers.length) throw new Error("the kernel sent no SVG");
      const bytes = asBytes(buffers[0]);
      download(new Blob([bytes], { type: "image/svg+xml" }), name("svg"));
      done("svg", bytes.length);
    });
  };

  return () => {
    if (client) client.dispose();
    bar.remove();
  };
}
