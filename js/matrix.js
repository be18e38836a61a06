// AttentionMatrix view: layers x heads grid of max-pooled thumbnails on one canvas.
import { decode } from "./lib/codec.js";
import { paint, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, onWidthChange, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { drawGridFrame, publishGrid } from "./lib/grid.js";
import { cellOrigin, fitCell, hitMatrix, matrixLayout } from "./lib/layout.js";
import { attachExport } from "./lib/exportbar.js";
import { createClient } from "./lib/requests.js";

function render({ model, el }) {
  ensureStyles(el);
  const panel = h("div", "aw-panel aw-matrix");
  const title = h("div", "aw-title");
  const note = h("div", "aw-sub aw-note"); // approximations (preview thumbnails) are said here
  const error = h("div", "aw-error");
  const canvas = h("canvas", "aw-canvas");
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "grid");
  canvas.setAttribute("aria-label", "attention heads: layers by heads; arrow keys move, Enter selects");
  const controls = h("div", "aw-controls"); // image export buttons
  panel.append(title, controls, note, error, canvas);
  el.appendChild(panel);
  const tip = tooltip(panel);

  let thumbs = null; // {data: Uint8Array, shape: [L, H, s, s]}
  let scales = null;
  let tiles = null; // pre-painted ImageData per cell
  let lay = null;
  let hover = null;
  let lutKey = "";
  // Long contexts (LazyTrace): thumbnails start as a preview; `pending` (uint8 [L*H], 1 =
  // still preview) shrinks as exact layers arrive as "thumbs_chunk" messages.
  let pending = null;
  let previewNote = "";
  const exactLayers = new Set(); // layers received as chunks: a later snapshot never undoes them
  const client = createClient(model);
  const stopExport = attachExport({
    model,
    panel,
    controls,
    kind: "matrix",
    canvases: () => [canvas],
    redraw: () => draw(),
    selection: () => ({ layer: model.get("layer"), head: model.get("head") }),
  });

  function decodeThumbs() {
    const t = model.get("thumbs");
    if (t && t.maps) {
      const d = decode(t.maps);
      thumbs = { data: Uint8Array.from(d.data), shape: d.shape }; // own copy: chunks write into it
    } else thumbs = null;
    scales = t && t.scales ? Float32Array.from(decode(t.scales).data) : null;
    pending = t && t.pending ? Uint8Array.from(decode(t.pending).data) : null;
    previewNote = (t && t.note) || "";
    if (pending) for (const l of exactLayers) pending.fill(0, l * thumbs.shape[1], (l + 1) * thumbs.shape[1]);
    tiles = null;
  }

  function pendingCount() {
    let c = 0;
    if (pending) for (let i = 0; i < pending.length; i++) c += pending[i];
    return c;
  }

  /** Copy layers l0..l1 (uint8 maps, float32 scales) in and repaint their cells. */
  function applyLayers(l0, l1, maps, sc) {
    if (!thumbs) return;
    const [, H, s, sk] = thumbs.shape;
    const per = H * s * (sk ?? s);
    thumbs.data.set(maps.subarray(0, (l1 - l0) * per), l0 * per);
    if (scales) scales.set(sc.subarray(0, (l1 - l0) * H), l0 * H);
    if (pending) pending.fill(0, l0 * H, l1 * H);
    if (tiles) {
      const lut = themeLut(lutKey);
      const w = sk ?? s;
      const vals = new Float32Array(s * w);
      for (let l = l0; l < l1; l++) {
        for (let hd = 0; hd < H; hd++) {
          const off = (l * H + hd) * s * w;
          for (let i = 0; i < s * w; i++) vals[i] = thumbs.data[off + i];
          const img = new ImageData(w, s);
          paint(vals, 255, lut, img.data);
          tiles[l * H + hd] = img;
        }
      }
    }
  }

  const onChunk = (msg, buffers) => {
    if (!msg || msg.type !== "thumbs_chunk" || !thumbs || !buffers || buffers.length < 2) return;
    const maps = decode({ dtype: "uint8", shape: msg.shape }, buffers[0]).data;
    const [n, H] = msg.shape;
    const sc = decode({ dtype: "float32", shape: [n, H] }, buffers[1]).data;
    for (let l = msg.layer0; l < msg.layer1; l++) exactLayers.add(l);
    applyLayers(msg.layer0, msg.layer1, maps, sc);
    draw();
  };

  /** A view opened while exact thumbnails are being computed asks for what exists so far. */
  async function catchUp() {
    if (!pending || !pendingCount()) return;
    try {
      const { msg, buffers } = await client.request("get_thumbs");
      const [L, H, s] = msg.shape;
      const maps = decode({ dtype: "uint8", shape: msg.shape }, buffers[0]).data;
      const sc = decode({ dtype: "float32", shape: [L, H] }, buffers[1]).data;
      const pend = decode({ dtype: "uint8", shape: [L, H] }, buffers[2]).data;
      const per = H * s * (msg.shape[3] ?? s);
      for (let l = 0; l < L; l++) {
        if (exactLayers.has(l)) continue; // a chunk already brought this layer
        if (pend[l * H] === 0) exactLayers.add(l);
        thumbs.data.set(maps.subarray(l * per, (l + 1) * per), l * per);
        if (scales) scales.set(sc.subarray(l * H, (l + 1) * H), l * H);
        if (pending) pending.set(pend.subarray(l * H, (l + 1) * H), l * H);
      }
      previewNote = msg.note || previewNote;
      tiles = null;
      draw();
    } catch (err) {
      error.textContent = `could not load the thumbnails computed so far: ${err.message}`;
    }
  }

  function paintTiles(bg) {
    const lut = themeLut(bg);
    // Cross-attention thumbnails are sq x sk (queries x keys), each axis pooled on its own.
    const [L, H, s, sk] = thumbs.shape;
    const w = sk ?? s;
    const out = [];
    const vals = new Float32Array(s * w);
    for (let l = 0; l < L; l++) {
      for (let hd = 0; hd < H; hd++) {
        const off = (l * H + hd) * s * w;
        for (let i = 0; i < s * w; i++) vals[i] = thumbs.data[off + i];
        const img = new ImageData(w, s);
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
    const nPending = pendingCount();
    const nk = (model.get("key_tokens") || []).length;
    note.textContent = nPending
      ? `${previewNote || "preview thumbnails"} \u2014 exact: ${L * H - nPending} of ${L * H} heads; ` +
        "\u25e5 marks a cell still approximate"
      : nk
        ? `cross-attention: each cell is a ${model.get("tokens").length} \u00d7 ${nk} map ` +
          "(query rows \u00d7 key columns), stretched to a square"
        : "";
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
    scratch.width = thumbs.shape[3] ?? s;
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
    // Cells still showing the preview: a corner mark.
    if (nPending) {
      const m = Math.max(4, Math.round(cell / 4));
      ctx.fillStyle = th.muted;
      ctx.beginPath();
      for (let l = 0; l < L; l++) {
        for (let hd = 0; hd < H; hd++) {
          if (!pending[l * H + hd]) continue;
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
    if (hover) {
      const o = cellOrigin(lay, hover.layer, hover.head);
      ctx.lineWidth = 1;
      ctx.strokeStyle = th.accent;
      ctx.strokeRect(o.x - 0.5, o.y - 0.5, cell + 1, cell + 1);
    }
    publishGrid(canvas, lay);
    panel.dataset.layer = String(layer);
    panel.dataset.head = String(head);
    panel.dataset.pending = String(nPending);
    panel.dataset.thumbs = nPending ? "preview" : "exact";
    panel.dataset.thumbShape = `${s}x${thumbs.shape[3] ?? s}`;
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
      const approx = pending && pending[hit.layer * model.get("n_heads") + hit.head] ? " (preview)" : "";
      tip.show(`layer ${hit.layer} \u00b7 head ${hit.head}\nmax ${sc.toFixed(3)}${approx}`, where.x, where.y);
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
  model.on("msg:custom", onChunk);
  model.on("change:layer", draw);
  model.on("change:head", draw);
  model.on("change:error", draw);
  model.on("change:cell_size", draw);
  const stopWatching = onWidthChange(panel, draw);

  try {
    decodeThumbs();
    draw();
    catchUp();
  } catch (err) {
    error.textContent = `could not draw the matrix: ${err.message}`;
  }

  return () => {
    stopWatching();
    client.dispose();
    stopExport();
    model.off("msg:custom", onChunk);
    model.off("change:thumbs", onThumbs);
    model.off("change:layer", draw);
    model.off("change:head", draw);
    model.off("change:error", draw);
    model.off("change:cell_size", draw);
  };
}

export default { render };
