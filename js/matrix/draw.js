// Drawing the layers x heads grid: one painted thumbnail per cell, a corner mark on
// cells still showing the preview, the grid frame (labels, selection) and the hover.
import { themeLut } from "../lib/colormap.js";
import { sizeCanvas, theme } from "../lib/dom.js";
import { drawGridFrame, publishGrid } from "../lib/grid.js";
import { cellOrigin, fitCell, matrixLayout } from "../lib/layout.js";
import { paintCell, pendingCount } from "./thumbs.js";

/** The note above the grid: preview progress, or what a cross-attention cell shows. */
export function matrixNote({ nPending, previewNote, L, H, nq, nk }) {
  if (nPending) {
    return `${previewNote || "preview thumbnails"} \u2014 exact: ${L * H - nPending} of ${L * H} heads; ` +
      "\u25e5 marks a cell still approximate";
  }
  if (nk) return `cross-attention: each cell is a ${nq} \u00d7 ${nk} map (query rows \u00d7 key columns), stretched to a square`;
  return "";
}

/** Painted ImageData of every cell, or of layers l0..l1 into `tiles` (after a chunk). */
export function paintTiles(state, bg, tiles = [], l0 = 0, l1 = state.shape[0]) {
  const lut = themeLut(bg);
  const [, H, s, sk] = state.shape;
  for (let l = l0; l < l1; l++) {
    for (let hd = 0; hd < H; hd++) tiles[l * H + hd] = new ImageData(paintCell(state, l, hd, lut), sk ?? s, s);
  }
  return tiles;
}

export function draw(v) {
  const { model, panel, el, canvas } = v;
  const L = model.get("n_layers");
  const H = model.get("n_heads");
  const th = theme(panel);
  v.title.textContent = `${model.get("model_name") || "attention"} \u2014 ${L} layers \u00d7 ${H} heads`;
  v.errors.show();
  const thumbs = v.thumbs;
  if (!thumbs) return;
  const nPending = pendingCount(thumbs);
  v.note.textContent = matrixNote({
    nPending,
    previewNote: thumbs.note,
    L,
    H,
    nq: model.get("tokens").length,
    nk: (model.get("key_tokens") || []).length,
  });
  const avail = panel.clientWidth || el.clientWidth || 720;
  const cell = model.get("cell_size") || fitCell(avail - 8, H, { left: 30, min: 12, max: 56 });
  const lay = matrixLayout({ nLayers: L, nHeads: H, cell, left: 30, top: 16 });
  v.lay = lay;
  const ctx = sizeCanvas(canvas, lay.width, lay.height);
  if (!v.tiles || th.background !== v.lutKey) {
    v.tiles = paintTiles(thumbs, th.background);
    v.lutKey = th.background;
  }
  ctx.fillStyle = th.background;
  ctx.fillRect(0, 0, lay.width, lay.height);
  const s = thumbs.shape[2];
  const scratch = document.createElement("canvas");
  scratch.width = thumbs.shape[3] ?? s;
  scratch.height = s;
  const sctx = scratch.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  for (let l = 0; l < L; l++) {
    for (let hd = 0; hd < H; hd++) {
      sctx.putImageData(v.tiles[l * H + hd], 0, 0);
      const o = cellOrigin(lay, l, hd);
      ctx.drawImage(scratch, o.x, o.y, cell, cell);
    }
  }
  // Cells still showing the preview: a corner mark.
  if (nPending) {
    const m = Math.max(4, Math.round(cell / 4));
    ctx.fillStyle = th.muted;
    ctx.beginPath();
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        if (!thumbs.pending[l * H + hd]) continue;
        const o = cellOrigin(lay, l, hd);
        ctx.moveTo(o.x + cell - m, o.y);
        ctx.lineTo(o.x + cell, o.y);
        ctx.lineTo(o.x + cell, o.y + m);
        ctx.closePath();
      }
    }
    ctx.fill();
  }
  const layer = model.get("layer");
  const head = model.get("head");
  drawGridFrame(ctx, lay, th, layer, head);
  if (v.hover) {
    const o = cellOrigin(lay, v.hover.layer, v.hover.head);
    ctx.lineWidth = 1;
    ctx.strokeStyle = th.accent;
    ctx.strokeRect(o.x - 0.5, o.y - 0.5, cell + 1, cell + 1);
  }
  publishGrid(canvas, lay);
  const ds = panel.dataset;
  ds.layer = String(layer);
  ds.head = String(head);
  ds.pending = String(nPending);
  ds.thumbs = nPending ? "preview" : "exact";
  ds.thumbShape = `${s}x${thumbs.shape[3] ?? s}`;
  ds.draws = String(Number(ds.draws || 0) + 1);
}
