// One route graph: decoding a `graphs` trait entry, the row layout (labelled rows and
// collapsed gaps), edge styles, and pruning by `keep` for exported pages. Pure functions
// of arrays (the drawing is draw.js).
import { decode } from "../lib/codec.js";
import { layerOffsets } from "../lib/flowlayout.js";
import { NODES, ROUTE } from "../lib/style.js";

const f32 = (p) => (p && p.data ? decode(p).data : new Float32Array(0));

/**
 * A `graphs` entry ({label, method, token, keep, counts, query, key, weight, carry, node,
 * rows, count, capped, signed, diff, [status, names, agree, ...]}) decoded: per-layer edge
 * offsets, flat edge arrays, carry [L*T], node [(L+1)*T] and the labelled rows.
 */
export function decodeGraph(g) {
  if (g.off) return g; // already decoded (exported pages prune decoded graphs)
  const weight = f32(g.weight);
  let peak = 0;
  for (let e = 0; e < weight.length; e++) peak = Math.max(peak, Math.abs(weight[e]));
  return {
    ...g,
    off: layerOffsets(decode(g.counts).data),
    query: decode(g.query).data,
    key: decode(g.key).data,
    weight,
    status: g.status && g.status.data ? decode(g.status).data : null,
    carry: f32(g.carry),
    node: f32(g.node),
    rows: g.rows && g.rows.data ? decode(g.rows).data : null,
    peak,
  };
}

/**
 * Rows of the panel: with mode "all" one labelled row per token; with "route" one per
 * token in `labelled` (sorted indices) and one gap row for each run of other tokens.
 * Returns {slots: [{kind: "token", i} | {kind: "gap", from, to}], y: Float32Array(n) (row
 * centre of each token, its gap's centre if collapsed), slotOf: Int32Array(n), height}.
 */
export function rowLayout(n, labelled, mode, top = 0, rowPx = ROUTE.row_px, gapPx = ROUTE.gap_px) {
  const on = new Uint8Array(n);
  if (mode === "all" || !labelled) on.fill(1);
  else for (const i of labelled) if (i >= 0 && i < n) on[i] = 1;
  const slots = [];
  const y = new Float32Array(n);
  const slotOf = new Int32Array(n);
  let at = top;
  let i = 0;
  while (i < n) {
    if (on[i]) {
      slots.push({ kind: "token", i, y0: at, y1: at + rowPx });
      y[i] = at + rowPx / 2;
      slotOf[i] = slots.length - 1;
      at += rowPx;
      i++;
      continue;
    }
    let j = i;
    while (j < n && !on[j]) j++;
    slots.push({ kind: "gap", from: i, to: j - 1, y0: at, y1: at + gapPx });
    for (let k = i; k < j; k++) {
      y[k] = at + gapPx / 2;
      slotOf[k] = slots.length - 1;
    }
    at += gapPx;
    i = j;
  }
  return { slots, y, slotOf, height: at - top, labelled: slots.filter((s) => s.kind === "token").length };
}

/** The slot under y (binary search over slots), or null. */
export function slotAt(rows, y) {
  const s = rows.slots;
  let lo = 0;
  let hi = s.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (y < s[mid].y0) hi = mid - 1;
    else if (y >= s[mid].y1) lo = mid + 1;
    else return s[mid];
  }
  return null;
}

/** Text of a gap row. */
export function gapText(slot) {
  const c = slot.to - slot.from + 1;
  return `\u2026 ${c} token${c === 1 ? "" : "s"}`;
}

/** Width and opacity of an edge carrying `share` of the output when the strongest carries `peak`. */
export function edgeStyle(share, peak) {
  // sqrt: weak but real edges stay visible next to the strongest one (legend uses the same map).
  const x = peak > 0 ? Math.sqrt(Math.min(1, Math.abs(share) / peak)) : 0;
  return { width: ROUTE.width[0] + ROUTE.width[1] * x, alpha: ROUTE.alpha[0] + ROUTE.alpha[1] * x };
}

/** Radius and opacity of a node at v = |share| / column max; null below min_share. */
export function nodeStyle(v, rowH) {
  if (!(v >= NODES.min_share)) return null;
  const r = Math.max(NODES.radius_min, Math.min(NODES.radius_max, rowH * NODES.radius_row));
  return { radius: r * (NODES.radius_scale[0] + NODES.radius_scale[1] * v), alpha: NODES.alpha[0] + NODES.alpha[1] * v };
}

/**
 * Prune a keep=1 route to `keep` as route_graph does: per layer the shortest prefix of the
 * edges (sorted strongest first) whose |weight| reaches keep x layerTotal[l], at most `cap`.
 * Returns the graph with the kept edges only (count, off, query, key, weight, capped).
 */
export function pruneRoute(g, layerTotal, keep, cap = Infinity) {
  const L = g.off.length - 1;
  const idx = [];
  const counts = [];
  const capped = [];
  for (let l = 0; l < L; l++) {
    const target = keep * layerTotal[l];
    let sum = 0;
    let c = 0;
    for (let e = g.off[l]; e < g.off[l + 1]; e++) {
      if (sum >= target && c > 0) break;
      if (c >= cap) {
        capped.push(l);
        break;
      }
      sum += Math.abs(g.weight[e]);
      idx.push(e);
      c++;
    }
    counts.push(c);
  }
  const pick = (arr) => (arr ? Uint32Array.from(idx, (e) => arr[e]) : null);
  return {
    ...g,
    keep,
    off: layerOffsets(Int32Array.from(counts)),
    query: pick(g.query),
    key: pick(g.key),
    weight: Float32Array.from(idx, (e) => g.weight[e]),
    status: g.status ? Uint8Array.from(idx, (e) => g.status[e]) : null,
    count: idx.length,
    capped: g.capped && g.capped.length ? g.capped : capped,
  };
}

/** A list of layer indices as text, runs of three or more written as ranges:
 * [4, 5, 6, 7, 9] -> "4–7, 9". */
export function layerRanges(layers) {
  const xs = [...new Set((layers || []).map(Number))].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    if (j - i >= 2) out.push(`${xs[i]}\u2013${xs[j]}`);
    else for (let k = i; k <= j; k++) out.push(String(xs[k]));
    i = j + 1;
  }
  return out.join(", ");
}

/** Which column headers get a label: every `stride`-th column (input = column 0), where
 * `stride` is the smallest of 1, 2, 5, 10, ... that leaves `labelPx` for each label in
 * columns `colW` px apart; the selected layer's column (`selected`, or -1) always. */
export function columnLabels(nColumns, colW, labelPx, selected = -1) {
  const steps = [1, 2, 5, 10, 20, 50, 100];
  const stride = steps.find((s) => s * colW >= labelPx) || steps[steps.length - 1];
  const show = new Uint8Array(nColumns);
  for (let c = 0; c < nColumns; c += stride) show[c] = 1;
  if (selected >= 0 && selected < nColumns) {
    // the selected column's label replaces the regular ones it would overlap
    const reach = Math.ceil(labelPx / Math.max(colW, 1e-9)) - 1;
    for (let c = Math.max(0, selected - reach); c <= Math.min(nColumns - 1, selected + reach); c++) show[c] = 0;
    show[selected] = 1;
  }
  return { stride, show };
}
