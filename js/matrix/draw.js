// Drawing the layers x heads grid: one painted thumbnail per cell, a corner mark on
// cells still showing the preview, the grid frame (labels, selection) and the hover.
import { divergingLut, themeLut } from "../lib/colormap.js";
import { createLegend, syncGenerationLegend, updateLegend } from "../lib/legend.js";
import { generationColour, promptLength } from "../lib/generation.js";
import { GENERATION } from "../lib/style.js";
import { sizeCanvas, theme } from "../lib/dom.js";
import { drawGridFrame, publishGrid } from "../lib/grid.js";
import { cellOrigin, fitCell, matrixLayout } from "../lib/layout.js";
import { codeTable, displayMax, paintCell, pendingCount } from "./thumbs.js";

const LEFT = 44; // layer numbers + the rotated "layer" axis title
const TOP = 28; // head numbers + the "head" axis title

/** The note above the grid: preview progress, or what a cross-attention cell shows. */
export function matrixNote({ nPending, previewNote, L, H, nq, nk }) {
  if (nPending) {
    return `${previewNote || "preview thumbnails"} \u2014 exact: ${L * H - nPending} of ${L * H} heads; ` +
      "\u25e5 marks a cell still approximate";
  }
  if (nk) return `cross-attention: each cell is a ${nq} \u00d7 ${nk} map (query rows \u00d7 key columns), stretched to a square`;
  return "";
}

/** The colour setting of the view: what the tiles were painted with. */
export function colourKey(state, bg, scale, norm, nKeys) {
  return `${bg}|${scale}|${norm}|${nKeys}|${state.signed ? "s" : "u"}`;
}

/** The LUT of the thumbnails: the sequential map, or the diverging one for a difference. */
export function thumbLut(state, bg) {
  return state.signed ? divergingLut(bg) : themeLut(bg);
}

/**
 * Painted ImageData of every cell, or of layers l0..l1 into `tiles` (after a chunk), each
 * rescaled from its own max to the bar top of `scale` ("head" | "layer" | "global") under `norm`.
 */
export function paintTiles(state, bg, tiles = [], l0 = 0, l1 = state.shape[0], opts = {}) {
  const { scale = "layer", norm = "linear", nKeys = state.shape[3] ?? state.shape[2] } = opts;
  const lut = thumbLut(state, bg);
  const [L, H, s, sk] = state.shape;
  const scales = state.scales || new Float32Array(L * H).fill(1);
  const top = displayMax(scales, L, H, scale, nKeys, state.signed);
  for (let l = l0; l < l1; l++) {
    for (let hd = 0; hd < H; hd++) {
      const i = l * H + hd;
      const table = codeTable(scales[i], top[i], norm, state.signed);
      tiles[i] = new ImageData(paintCell(state, l, hd, lut, table), sk ?? s, s);
    }
  }
  tiles.top = top;
  return tiles;
}

/**
 * The legend's words for a capped colour top: each head's top is the `cap`-th percentile
 * of its nonzero pixels (render/matrix.cap_note); "" at 100 (the max) and for differences.
 */
export function capNote(cap, signed = false) {
  return signed || !(cap < 100) ? "" : `capped at p${cap} (above: darkest)`;
}

/** The legend's settings for the selected cell (bar top = that cell's display max). */
export function matrixLegend(state, top, layer, head, H, scale, norm, names, cap = 100) {
  const hd = typeof head === "number" ? head : 0;
  const m = top ? top[layer * H + hd] : 0;
  const where = scale === "global" ? "" : scale === "layer" ? `top: layer ${layer}` : `top: layer ${layer} head ${hd}`;
  if (state.signed) {
    return { max: m, norm, scale, diverging: true, names, what: "attention", note: where };
  }
  return { max: m, norm, scale, what: "attention weight (max-pooled)", note: [capNote(cap), where].filter(Boolean).join(", ") };
}

/**
 * Where a generation's boundary ticks go on one thumbnail of side `cell` (CSS px) for
 * prompt length `p` of `n` tokens: the offset along the edge (rows down the left edge,
 * columns along the top) and the tick length; null when there is none or the cell is too
 * small to carry it (style.json generation.tick_min_cell).
 */
export function thumbTick(p, n, cell) {
  if (!(p > 0 && p < n) || cell < GENERATION.tick_min_cell) return null;
  return { at: (cell * p) / n, len: Math.max(2, Math.round(cell * GENERATION.tick_frac)) };
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
  const cell = model.get("cell_size") || fitCell(avail - 8, H, { left: LEFT, min: 12, max: 56 });
  const lay = matrixLayout({ nLayers: L, nHeads: H, cell, left: LEFT, top: TOP });
  v.lay = lay;
  const ctx = sizeCanvas(canvas, lay.width, lay.height);
  const scale = model.get("scale") || "layer";
  const norm = model.get("norm") || "linear";
  const nKeys = (model.get("key_tokens") || []).length || model.get("tokens").length;
  const key = colourKey(thumbs, th.background, scale, norm, nKeys);
  if (!v.tiles || key !== v.lutKey) {
    v.tiles = paintTiles(thumbs, th.background, [], 0, L, { scale, norm, nKeys });
    v.lutKey = key;
  }
  v.paintOpts = { scale, norm, nKeys };
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
  // A generation: a short tick on each thumbnail's left and top edge at the prompt | answer
  // boundary; one path for the whole grid (no per-cell redraw work beyond 4 path points).
  const gen = (model.get("key_tokens") || []).length ? 0 : promptLength(model);
  const tick = thumbTick(gen, model.get("tokens").length, cell);
  const genColour = generationColour(th.background);
  if (tick) {
    ctx.strokeStyle = genColour;
    ctx.lineWidth = GENERATION.line_width;
    ctx.beginPath();
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        const o = cellOrigin(lay, l, hd);
        ctx.moveTo(o.x, o.y + tick.at);
        ctx.lineTo(o.x + tick.len, o.y + tick.at);
        ctx.moveTo(o.x + tick.at, o.y);
        ctx.lineTo(o.x + tick.at, o.y + tick.len);
      }
    }
    ctx.stroke();
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
  // Axis titles: "head" over the head numbers, "layer" (rotated) left of the layer numbers.
  ctx.fillStyle = th.muted;
  ctx.font = `11px ${th.font}`;
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  ctx.fillText("head", lay.left + (H * lay.pitch) / 2, 1);
  ctx.save();
  ctx.translate(2, lay.top + (L * lay.pitch) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "top";
  ctx.fillText("layer", 0, 0);
  ctx.restore();
  const lopts = matrixLegend(thumbs, v.tiles.top, layer, head, H, scale, norm, v.names(), Number(model.get("cap") ?? 100));
  if (!v.legend) {
    v.legend = createLegend(thumbLut(thumbs, th.background), lopts);
    v.legendBox.appendChild(v.legend);
  } else updateLegend(v.legend, thumbLut(thumbs, th.background), lopts);
  syncGenerationLegend(v.legendBox, gen, model.get("tokens").length, genColour,
    tick ? "ticks on each thumbnail's left and top edge" : "boundary ticks need larger cells");
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
  ds.promptLength = String(gen);
  ds.boundaryTick = tick ? String(tick.at) : "";
  ds.thumbShape = `${s}x${thumbs.shape[3] ?? s}`;
  ds.draws = String(Number(ds.draws || 0) + 1);
}
