// Vision traces: the image with the strip's values over its patches, the special tokens
// ([CLS], ...) as chips, and the hover / click on patches. The geometry is lib/vision.js.
import { decode, maxOf } from "../lib/codec.js";
import { h, localPoint, sizeCanvas } from "../lib/dom.js";
import { printable } from "../lib/layout.js";
import { hitPatch, imageLayout, paintOverlay, patchGrid, patchToken, patchValues, tokenPatch } from "../lib/vision.js";
import { clearHover } from "../lib/view.js";
import { colourToken } from "./strip.js";

/** RGBA pixels of a uint8 [H, W, 3] image (the `image` trait). */
export function rgbToRgba(rgb, n, out = new Uint8ClampedArray(n * 4)) {
  for (let p = 0, q = 0; p < n; p++, q += 3) {
    out[p * 4] = rgb[q];
    out[p * 4 + 1] = rgb[q + 1];
    out[p * 4 + 2] = rgb[q + 2];
    out[p * 4 + 3] = 255;
  }
  return out;
}

/** The patch grid and the decoded image (an offscreen canvas), or nulls (no vision trace). */
export function decodeVision(v) {
  const { model } = v;
  v.visionImg = null;
  v.vgrid = patchGrid(model.get("patch_grid"), model.get("patch_offset"), v.nTokens());
  const img = model.get("image");
  if (!v.vgrid || !img || !img.data) return;
  const d = decode(img); // uint8 [H, W, 3]
  const [ih, iw] = d.shape;
  const c = document.createElement("canvas");
  c.width = iw;
  c.height = ih;
  const id = new ImageData(iw, ih);
  rgbToRgba(d.data, iw * ih, id.data);
  c.getContext("2d").putImageData(id, 0, 0);
  v.visionImg = { canvas: c, w: iw, h: ih };
  v.chipSpans = [];
}

function buildChips(v) {
  const tokens = v.model.get("tokens");
  v.chips.replaceChildren();
  v.chipSpans = [];
  for (let i = 0; i < v.vgrid.offset; i++) {
    const s = h("span", "aw-tok aw-special aw-chip", tokens[i]);
    s.dataset.index = String(i);
    v.chips.appendChild(s);
    v.chipSpans.push(s);
  }
}

/** The caption beside the image. */
export function visionCaption(vals, dir, token, subj, grid, pmax) {
  return vals
    ? `${dir === "from" ? "attention from" : "attention to"} ${printable(token)} [${subj}] ` +
        `over the ${grid.rows}×${grid.cols} patches (opacity: 0 … max ${pmax.toFixed(3)}); click a patch`
    : "click a patch or a token to see its attention over the image";
}

/** Draw the image and its overlay for the subject `subj`'s values `vals` (or hide it all). */
export function drawVision(v, th, lut, vals, subj, dir) {
  const { panel, vision, strip, btnStrip, visionCanvas, vgrid, visionImg } = v;
  if (!visionImg || !vgrid) {
    vision.style.display = "none";
    strip.style.display = "";
    delete panel.dataset.overlay;
    delete panel.dataset.patchGrid;
    return;
  }
  vision.style.display = "flex";
  strip.style.display = v.showStrip ? "" : "none";
  btnStrip.setAttribute("aria-pressed", String(v.showStrip));
  btnStrip.textContent = v.showStrip ? "hide token strip" : "token strip";
  const maxW = Math.max(120, Math.min(360, (panel.clientWidth || v.el.clientWidth || 720) - 200));
  const vl = imageLayout({ imgW: visionImg.w, imgH: visionImg.h, rows: vgrid.rows, cols: vgrid.cols, maxW, maxH: 360 });
  v.visionLay = vl;
  const ctx = sizeCanvas(visionCanvas, vl.width, vl.height);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(visionImg.canvas, 0, 0, vl.width, vl.height);
  let pmax = 0;
  if (vals) {
    const pv = patchValues(vals, vgrid);
    pmax = pv.max;
    const ov = document.createElement("canvas");
    ov.width = vgrid.cols;
    ov.height = vgrid.rows;
    const id = new ImageData(vgrid.cols, vgrid.rows);
    paintOverlay(pv.data, pv.max, lut, id.data);
    ov.getContext("2d").putImageData(id, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(ov, 0, 0, vl.width, vl.height);
  }
  const at = subj === null || subj === undefined ? null : tokenPatch(subj, vgrid);
  if (at) {
    ctx.strokeStyle = th.warn;
    ctx.lineWidth = 2;
    ctx.strokeRect(at.col * vl.cellW + 1, at.row * vl.cellH + 1, Math.max(1, vl.cellW - 2), Math.max(1, vl.cellH - 2));
  }
  const hov = v.visionHover;
  if (hov) {
    ctx.strokeStyle = th.accent;
    ctx.lineWidth = 1;
    ctx.strokeRect(hov.col * vl.cellW + 0.5, hov.row * vl.cellH + 0.5, vl.cellW - 1, vl.cellH - 1);
  }
  // Special tokens ([CLS], ...) have no patch: chips coloured on the scale of all tokens.
  if (v.chipSpans.length !== vgrid.offset) buildChips(v);
  const vmax = vals ? maxOf(vals) : 0;
  v.chipSpans.forEach((c, i) => {
    c.classList.toggle("aw-selected", i === subj);
    colourToken(c, vals ? vals[i] : null, vmax, lut);
  });
  v.visionNote.textContent = visionCaption(vals, dir, v.model.get("tokens")[subj], subj, vgrid, pmax);
  visionCanvas.dataset.rows = String(vgrid.rows);
  visionCanvas.dataset.cols = String(vgrid.cols);
  visionCanvas.dataset.width = String(vl.width);
  visionCanvas.dataset.height = String(vl.height);
  panel.dataset.overlay = vals ? "1" : "0";
  panel.dataset.patchGrid = `${vgrid.rows}x${vgrid.cols}`;
  panel.dataset.overlayMax = vals ? pmax.toFixed(4) : "";
}

/** Listener tables for the image canvas and the chips (attach them with dom.listen). */
export function visionHandlers(v) {
  const patchAt = (ev) => {
    if (!v.visionLay || !v.vgrid) return undefined;
    const p = localPoint(v.visionCanvas, ev);
    return hitPatch(v.visionLay, p.x, p.y);
  };
  return {
    canvas: {
      mousemove: (ev) => {
        const hit = patchAt(ev);
        if (hit === undefined) return;
        const changed = JSON.stringify(hit) !== JSON.stringify(v.visionHover);
        v.visionHover = hit;
        if (changed) v.draw();
        if (hit) {
          const i = patchToken(hit.row, hit.col, v.vgrid);
          const val = v.spans[i] && v.spans[i].dataset.value;
          const where = localPoint(v.panel, ev);
          v.tip.show(`${printable(v.model.get("tokens")[i])} [${i}]${val === undefined ? "" : `\n${val}`}`, where.x, where.y);
        } else v.tip.hide();
      },
      mouseleave: clearHover(v, "visionHover"),
      click: (ev) => {
        const hit = patchAt(ev);
        if (hit) v.selectToken(patchToken(hit.row, hit.col, v.vgrid));
      },
    },
    chips: {
      click: (ev) => {
        const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
        if (span && span.dataset.index !== undefined) v.selectToken(Number(span.dataset.index));
      },
    },
  };
}
