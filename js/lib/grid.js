// The frame of a layers x heads grid (matrix thumbnails, exported head summary): head
// numbers on top, layer numbers on the left, the selection outlined, and the geometry
// published on the canvas so tests and tools can click a cell.
import { cellOrigin } from "./layout.js";

/** Label stride so 10 px labels never overlap on cells `cell` px apart. */
export function gridLabelStride(cell) {
  return cell < 14 ? Math.ceil(14 / cell) : 1;
}

/**
 * Draw labels and the selection outline on `ctx` for layout `lay` (see matrixLayout).
 * `head` may be a number (one cell) or an aggregate such as "mean" (the whole layer row).
 */
export function drawGridFrame(ctx, lay, th, layer, head) {
  const { nLayers: L, nHeads: H, cell } = lay;
  const stride = gridLabelStride(cell);
  ctx.fillStyle = th.muted;
  ctx.font = `10px ${th.font}`;
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  for (let hd = 0; hd < H; hd += stride) ctx.fillText(String(hd), cellOrigin(lay, 0, hd).x + cell / 2, lay.top - 3);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let l = 0; l < L; l += stride) ctx.fillText(`L${l}`, lay.left - 4, cellOrigin(lay, l, 0).y + cell / 2);
  ctx.lineWidth = 2;
  ctx.strokeStyle = th.warn;
  const one = typeof head === "number";
  const o = cellOrigin(lay, layer, one ? head : 0);
  ctx.strokeRect(o.x - 1, o.y - 1, (one ? cell : H * lay.pitch - lay.gap) + 2, cell + 2);
}

/** Grid geometry in canvas CSS px, as data attributes. */
export function publishGrid(canvas, lay) {
  canvas.dataset.left = String(lay.left);
  canvas.dataset.top = String(lay.top);
  canvas.dataset.cell = String(lay.cell);
  canvas.dataset.pitch = String(lay.pitch);
}
