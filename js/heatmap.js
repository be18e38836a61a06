// AttentionHeatmap view: the selected head's token x token map (canvas) with token
// labels, and a sentence strip coloured by the selected token's row or column.
import { decode, maxOf } from "./lib/codec.js";
import { lutCss, lutIndex, paint, textOn, themeLut } from "./lib/colormap.js";
import { ensureStyles, h, localPoint, setTraits, sizeCanvas, theme, tooltip } from "./lib/dom.js";
import { heatLayout, hitHeat, labelStride, printable, truncate, visibleLabels } from "./lib/layout.js";
import { createClient, Lru, mapKey } from "./lib/requests.js";

function render({ model, el }) {
  ensureStyles();
  const panel = h("div", "aw-panel aw-heatmap");
  const title = h("div", "aw-title");
  const controls = h("div", "aw-controls");
  const btnFrom = h("button", "aw-dir-from", "from token");
  const btnTo = h("button", "aw-dir-to", "to token");
  btnFrom.title = "strip: attention the selected token pays to each token (its row)";
  btnTo.title = "strip: attention each token pays to the selected token (its column)";
  const btnMean = h("button", "aw-agg-mean", "mean of heads");
  const btnMax = h("button", "aw-agg-max", "max of heads");
  const status = h("span", "aw-sub aw-status");
  controls.append(btnFrom, btnTo, btnMean, btnMax, status);
  const error = h("div", "aw-error");
  const canvas = h("canvas", "aw-canvas");
  canvas.tabIndex = 0;
  const strip = h("div", "aw-strip");
  strip.setAttribute("role", "listbox");
  panel.append(title, controls, error, canvas, strip);
  el.appendChild(panel);
  const tip = tooltip(panel);

  const client = createClient(model);
  const cache = new Lru(48);
  const pinned = new Map(); // maps embedded in the state (exported pages): never evicted
  const inflight = new Map(); // key -> pending request
  let fetchError = "";
  let lastHead = 0; // the numeric head to return to after "mean"/"max"
  const images = new Lru(8); // painted offscreen canvases per map key + theme
  let current = null; // {key, data, shape, max}
  let lay = null;
  let hover = null;
  let spans = [];
  let wanted = "";
  let lastWidth = 0;

  function store(layer, head, packed, data, pin = false) {
    const arr = decode(packed, data);
    const rec = { key: mapKey(layer, head), data: arr.data, n: arr.shape[0], max: maxOf(arr.data) };
    if (pin) pinned.set(rec.key, rec);
    else cache.set(rec.key, rec);
    return rec;
  }

  function preload() {
    const init = model.get("initial_map");
    if (init && init.data) store(init.layer, init.head, init);
    const pre = model.get("preloaded") || {};
    for (const [key, packed] of Object.entries(pre)) {
      const [layer, head] = key.split(":");
      store(layer, head, packed, undefined, true);
    }
  }

  function buildStrip() {
    strip.replaceChildren();
    const tokens = model.get("tokens");
    const special = model.get("special") || [];
    spans = tokens.map((tok, i) => {
      const s = h("span", special[i] ? "aw-tok aw-special" : "aw-tok", tok);
      s.dataset.index = String(i);
      s.setAttribute("role", "option");
      strip.appendChild(s);
      return s;
    });
  }

  async function ensureMap() {
    const layer = model.get("layer");
    const head = model.get("head");
    const key = mapKey(layer, head);
    if (typeof head === "number") lastHead = head;
    wanted = key;
    const hit = pinned.get(key) || cache.get(key);
    if (hit) {
      current = hit;
      status.textContent = "";
      fetchError = "";
      draw();
      return;
    }
    status.textContent = "loading\u2026";
    try {
      // One request per map, however many change events ask for it.
      let pending = inflight.get(key);
      if (!pending) {
        pending = client.request("get_map", { layer, head });
        inflight.set(key, pending);
        pending.then(
          () => inflight.delete(key),
          () => inflight.delete(key),
        );
      }
      const { msg, buffers } = await pending;
      const rec = cache.get(key) || store(msg.layer, msg.head, msg, buffers[0]);
      if (rec.key === wanted) {
        current = rec;
        status.textContent = "";
        fetchError = "";
        draw();
      }
    } catch (err) {
      if (key === wanted) {
        status.textContent = "";
        fetchError = `could not load layer ${layer}, head ${head}: ${err.message}`;
        error.textContent = fetchError;
      }
    }
  }

  function mapImage(rec, bg) {
    const k = `${rec.key}|${bg}`;
    let img = images.get(k);
    if (img) return img;
    const n = rec.n;
    img = document.createElement("canvas");
    img.width = n;
    img.height = n;
    const id = new ImageData(n, n);
    paint(rec.data, rec.max, themeLut(bg), id.data);
    img.getContext("2d").putImageData(id, 0, 0);
    images.set(k, img);
    return img;
  }

  function stripValues(rec, token, dir) {
    const n = rec.n;
    const out = new Float32Array(n);
    if (dir === "from") for (let j = 0; j < n; j++) out[j] = rec.data[token * n + j];
    else for (let i = 0; i < n; i++) out[i] = rec.data[i * n + token];
    return out;
  }

  function draw() {
    const th = theme(panel);
    const tokens = model.get("tokens");
    const n = tokens.length;
    const layer = model.get("layer");
    const head = model.get("head");
    const token = model.get("token");
    const dir = model.get("direction");
    const headText = typeof head === "number" ? `head ${head}` : `${head} of heads`;
    title.textContent = `layer ${layer} \u00b7 ${headText}`;
    btnFrom.setAttribute("aria-pressed", String(dir === "from"));
    btnTo.setAttribute("aria-pressed", String(dir === "to"));
    btnMean.setAttribute("aria-pressed", String(head === "mean"));
    btnMax.setAttribute("aria-pressed", String(head === "max"));
    error.textContent = model.get("error") || fetchError;
    if (!current) return;

    const ctx0 = canvas.getContext("2d");
    const font = 11;
    ctx0.font = `${font}px ${th.code}`;
    let labelW = 0;
    for (const t of tokens) labelW = Math.max(labelW, ctx0.measureText(truncate(printable(t), 14)).width);
    const left = Math.ceil(Math.min(110, labelW) + 8);
    const avail = (panel.clientWidth || el.clientWidth || 720) - left - 12;
    lastWidth = panel.clientWidth;
    const size = model.get("size") || Math.max(120, Math.min(avail, 640, n * 36));
    lay = heatLayout({ n, size, left, top: left });
    const ctx = sizeCanvas(canvas, lay.width, lay.height);
    ctx.fillStyle = th.background;
    ctx.fillRect(0, 0, lay.width, lay.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(mapImage(current, th.background), lay.left, lay.top, size, size);

    // Selected token: its row (dir "from") or column (dir "to"); hover: a crosshair.
    const c = lay.cell;
    if (token !== null && token !== undefined && token < n) {
      ctx.strokeStyle = th.warn;
      ctx.lineWidth = 2;
      if (dir === "from") ctx.strokeRect(lay.left, lay.top + token * c, size, Math.max(c, 1));
      else ctx.strokeRect(lay.left + token * c, lay.top, Math.max(c, 1), size);
    }
    if (hover && hover.kind === "cell") {
      ctx.strokeStyle = th.accent;
      ctx.lineWidth = 1;
      ctx.strokeRect(lay.left + hover.col * c, lay.top + hover.row * c, Math.max(c, 1), Math.max(c, 1));
    }

    // Labels, thinned so they never overlap; selection and hover always labelled.
    const stride = labelStride(c, font);
    const always = [token, hover && hover.row, hover && hover.col].filter((x) => x !== null && x !== undefined);
    const show = visibleLabels(n, stride, always);
    ctx.font = `${font}px ${th.code}`;
    ctx.textBaseline = "middle";
    for (const i of show) {
      const strong = i === token || (hover && (i === hover.row || i === hover.col));
      ctx.fillStyle = strong ? th.foreground : th.muted;
      const label = truncate(printable(tokens[i]), 14);
      ctx.textAlign = "right";
      ctx.fillText(label, lay.left - 4, lay.top + (i + 0.5) * c);
      ctx.save();
      ctx.translate(lay.left + (i + 0.5) * c, lay.top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
    ctx.fillStyle = th.muted;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.font = `10px ${th.font}`;
    ctx.fillText(`max ${current.max.toFixed(3)}`, 2, 2);

    drawStrip(th, token, dir);
    panel.dataset.shown = current.key;
    panel.dataset.token = token === null || token === undefined ? "" : String(token);
    panel.dataset.direction = dir;
    panel.dataset.draws = String(Number(panel.dataset.draws || 0) + 1);
  }

  function drawStrip(th, token, dir) {
    if (spans.length !== model.get("tokens").length) buildStrip();
    const lut = themeLut(th.background);
    const has = token !== null && token !== undefined && token < current.n;
    const vals = has ? stripValues(current, token, dir) : null;
    const vmax = vals ? maxOf(vals) : 0;
    spans.forEach((s, i) => {
      s.classList.toggle("aw-selected", i === token);
      s.setAttribute("aria-selected", String(i === token));
      if (vals) {
        const idx = lutIndex(vals[i], vmax);
        s.style.background = lutCss(lut, idx);
        s.style.color = textOn(lut, idx);
        s.dataset.value = vals[i].toFixed(4);
        s.title = `${vals[i].toFixed(4)}`;
      } else {
        s.style.background = "";
        s.style.color = "";
        delete s.dataset.value;
        s.title = "click to select this token";
      }
    });
  }

  function selectToken(i) {
    setTraits(model, { token: i });
    draw();
  }

  const onMove = (ev) => {
    if (!lay || !current) return;
    const p = localPoint(canvas, ev);
    const hit = hitHeat(lay, p.x, p.y);
    const prev = hover;
    hover = hit;
    if (JSON.stringify(prev) !== JSON.stringify(hit)) draw();
    const tokens = model.get("tokens");
    const where = localPoint(panel, ev);
    if (hit && hit.kind === "cell") {
      const v = current.data[hit.row * current.n + hit.col];
      tip.show(
        `${printable(tokens[hit.row])} [${hit.row}] \u2192 ${printable(tokens[hit.col])} [${hit.col}]\n${v.toFixed(4)}`,
        where.x,
        where.y,
      );
    } else if (hit) {
      const i = hit.kind === "row" ? hit.row : hit.col;
      tip.show(`${printable(tokens[i])} [${i}]`, where.x, where.y);
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
    const hit = hitHeat(lay, p.x, p.y);
    if (!hit) return;
    selectToken(hit.kind === "col" ? hit.col : hit.row);
  };
  const onStripClick = (ev) => {
    const span = ev.target.closest ? ev.target.closest(".aw-tok") : null;
    if (span && span.dataset.index !== undefined) selectToken(Number(span.dataset.index));
  };
  const onKey = (ev) => {
    const n = model.get("tokens").length;
    const tok = model.get("token");
    let next = tok === null || tok === undefined ? 0 : tok;
    if (ev.key === "ArrowDown" || ev.key === "ArrowRight") next = Math.min(n - 1, next + 1);
    else if (ev.key === "ArrowUp" || ev.key === "ArrowLeft") next = Math.max(0, next - 1);
    else if (ev.key === "Escape") next = null;
    else return;
    ev.preventDefault();
    selectToken(next);
  };
  canvas.addEventListener("mousemove", onMove);
  canvas.addEventListener("mouseleave", onLeave);
  canvas.addEventListener("click", onClick);
  canvas.addEventListener("keydown", onKey);
  strip.addEventListener("click", onStripClick);
  btnFrom.onclick = () => setTraits(model, { direction: "from" });
  btnTo.onclick = () => setTraits(model, { direction: "to" });
  const aggregate = (agg) => () => {
    const head = model.get("head");
    if (typeof head === "number") lastHead = head;
    setTraits(model, { head: head === agg ? lastHead : agg });
  };
  btnMean.onclick = aggregate("mean");
  btnMax.onclick = aggregate("max");

  const onSelection = () => ensureMap();
  const onTokens = () => {
    cache.map.clear();
    pinned.clear();
    images.map.clear();
    current = null;
    buildStrip();
    preload();
    ensureMap();
  };
  model.on("change:layer", onSelection);
  model.on("change:head", onSelection);
  model.on("change:token", draw);
  model.on("change:direction", draw);
  model.on("change:error", draw);
  model.on("change:size", draw);
  model.on("change:tokens", onTokens);
  const ro =
    typeof ResizeObserver !== "undefined"
      ? new ResizeObserver(() => {
          if (panel.clientWidth !== lastWidth) draw();
        })
      : null;
  if (ro) ro.observe(panel);

  try {
    buildStrip();
    preload();
    ensureMap();
  } catch (err) {
    error.textContent = `could not draw the heatmap: ${err.message}`;
  }

  return () => {
    if (ro) ro.disconnect();
    client.dispose();
    model.off("change:layer", onSelection);
    model.off("change:head", onSelection);
    model.off("change:token", draw);
    model.off("change:direction", draw);
    model.off("change:error", draw);
    model.off("change:size", draw);
    model.off("change:tokens", onTokens);
  };
}

export default { render };
