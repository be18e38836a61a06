// AttentionMatrix view: layers x heads grid of max-pooled thumbnails on one canvas.
import { decode } from "./lib/codec.js";
import { paint, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { cellOrigin, fitCell, hitMatrix, matrixLayout } from "./lib/layout.js";

function render({ model, el }) {
  ensureStyles();
  const panel = h("div", "aw-panel aw-matrix");
  const title = h("div", "aw-title");
  const error = h("div", "aw-error");
  const canvas = h("canvas", "aw-canvas");
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "grid");
  canvas.setAttribute("aria-label", "attention heads: layers by heads; arrow keys move, Enter selects");
  panel.append(title, error, canvas);
  el.appendChild(panel);
  const tip = tooltip(panel);

  let thumbs = null; // {data: Uint8Array, shape: [L, H, s, s]}
  let scales = null;
  let tiles = null; // pre-painted ImageData per cell
  let lay = null;
  let hover = null;
  let lutKey = "";

  function decodeThumbs() {
    const t = model.get("thumbs");
    thumbs = t && t.maps ? decode(t.maps) : null;
    scales = t && t.scales ? decode(t.scales).data : null;
    tiles = null;
  }

  function paintTiles(bg) {
    const lut = themeLut(bg);
    const [L, H, s] = thumbs.shape;
    const out = [];
    const vals = new Float32Array(s * s);
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        const off = (l * H + hd) * s * s;
        for (let i = 0; i < s * s; i++) vals[i] = thumbs.data[off + i];
        const img = new ImageData(s, s);
        paint(vals, 255, lut, img.data);
        out.push(img);
      }
    }
    return out;
  }

  function draw() {
    const L = model.get("n_layers");
    const H = model.get("n_heads");
    const th = theme(panel);
    title.textContent = `${model.get("model_name") || "attention"} \u2014 ${L} layers \u00d7 ${H} heads`;
    error.textContent = model.get("error") || "";
    if (!thumbs) return;
    const avail = panel.clientWidth || el.clientWidth || 720;
    const cell = model.get("cell_size") || fitCell(avail - 8, H, { left: 30, min: 12, max: 56 });
    lay = matrixLayout({ nLayers: L, nHeads: H, cell, left: 30, top: 16 });
    const ctx = sizeCanvas(canvas, lay.width, lay.height);
    const key = th.background;
    if (!tiles || key !== lutKey) {
      tiles = paintTiles(th.background);
      lutKey = key;
    }
    ctx.fillStyle = th.background;
    ctx.fillRect(0, 0, lay.width, lay.height);
    const s = thumbs.shape[2];
    const scratch = document.createElement("canvas");
    scratch.width = s;
    scratch.height = s;
    const sctx = scratch.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        sctx.putImageData(tiles[l * H + hd], 0, 0);
        const o = cellOrigin(lay, l, hd);
        ctx.drawImage(scratch, o.x, o.y, cell, cell);
      }
    }
    // Labels: head numbers on top, layer numbers on the left (thinned when cells are small).
    ctx.fillStyle = th.muted;
    ctx.font = `10px ${th.font}`;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    const stride = cell < 14 ? Math.ceil(14 / cell) : 1;
    for (let hd = 0; hd < H; hd += stride) ctx.fillText(String(hd), cellOrigin(lay, 0, hd).x + cell / 2, lay.top - 3);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let l = 0; l < L; l += stride) ctx.fillText(`L${l}`, lay.left - 4, cellOrigin(lay, l, 0).y + cell / 2);
    // Selection: a cell, or a whole layer row when the head is an aggregate ("mean"/"max").
    const layer = model.get("layer");
    const head = model.get("head");
    ctx.lineWidth = 2;
    ctx.strokeStyle = th.warn;
    if (typeof head === "number") {
      const o = cellOrigin(lay, layer, head);
      ctx.strokeRect(o.x - 1, o.y - 1, cell + 2, cell + 2);
    } else {
      const o = cellOrigin(lay, layer, 0);
      ctx.strokeRect(o.x - 1, o.y - 1, H * lay.pitch - lay.gap + 2, cell + 2);
    }
    if (hover) {
      const o = cellOrigin(lay, hover.layer, hover.head);
      ctx.lineWidth = 1;
      ctx.strokeStyle = th.accent;
      ctx.strokeRect(o.x - 0.5, o.y - 0.5, cell + 1, cell + 1);
    }
    // Grid geometry in canvas CSS px, for tests and tools that click a cell.
    canvas.dataset.left = String(lay.left);
    canvas.dataset.top = String(lay.top);
    canvas.dataset.cell = String(lay.cell);
    canvas.dataset.pitch = String(lay.pitch);
    panel.dataset.layer = String(layer);
    panel.dataset.head = String(head);
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  function select(layer, head) {
    setTraits(model, { layer, head });
    draw();
  }

  const onMove = (ev) => {
    if (!lay) return;
    const p = localPoint(canvas, ev);
    const hit = hitMatrix(lay, p.x, p.y);
    const same = hit && hover && hit.layer === hover.layer && hit.head === hover.head;
    if (!same) {
      hover = hit;
      draw();
    }
    if (hit) {
      const sc = scales ? scales[hit.layer * model.get("n_heads") + hit.head] : NaN;
      const where = localPoint(panel, ev);
      tip.show(`layer ${hit.layer} \u00b7 head ${hit.head}\nmax ${sc.toFixed(3)}`, where.x, where.y);
    } else tip.hide();
  };
  const onLeave = () => {
    hover = null;
    tip.hide();
    draw();
  };
  const onClick = (ev) => {
    if (!lay) return;
    const p = localPoint(canvas, ev);
    const hit = hitMatrix(lay, p.x, p.y);
    if (hit) select(hit.layer, hit.head);
  };
  const onKey = (ev) => {
    const L = model.get("n_layers");
    const H = model.get("n_heads");
    let layer = model.get("layer");
    let head = typeof model.get("head") === "number" ? model.get("head") : 0;
    if (ev.key === "ArrowRight") head = Math.min(H - 1, head + 1);
    else if (ev.key === "ArrowLeft") head = Math.max(0, head - 1);
    else if (ev.key === "ArrowDown") layer = Math.min(L - 1, layer + 1);
    else if (ev.key === "ArrowUp") layer = Math.max(0, layer - 1);
    else return;
    ev.preventDefault();
    select(layer, head);
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("keydown", onKey);

  const onThumbs = () => {
    decodeThumbs();
    draw();
  };
  model.on("change:thumbs", onThumbs);
  model.on("change:layer", draw);
  model.on("change:head", draw);
  model.on("change:error", draw);
  model.on("change:cell_size", draw);
  let lastW = 0;
  const ro =
    typeof ResizeObserver !== "undefined"
      ? new ResizeObserver(() => {
          if (panel.clientWidth !== lastW) {
            lastW = panel.clientWidth;
            draw();
          }
        })
      : null;
  if (ro) ro.observe(panel);

  try {
    decodeThumbs();
    draw();
  } catch (err) {
    error.textContent = `could not draw the matrix: ${err.message}`;
  }

  return () => {
    if (ro) ro.disconnect();
    model.off("change:thumbs", onThumbs);
    model.off("change:layer", draw);
    model.off("change:head", draw);
    model.off("change:error", draw);
    model.off("change:cell_size", draw);
  };
}

export default { render };
