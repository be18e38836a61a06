// One flow graph: decoding the `graphs` trait entry, and the traced token's edge flows and
// node shares. Pure functions of arrays (the drawing is draw.js).
import { decode } from "../lib/codec.js";
import { bucketEdges, layerOffsets } from "../lib/flowlayout.js";
import { EDGES, NODES, TRACED } from "../lib/style.js";

/**
 * A `graphs` entry ({label, counts, query, key, weight (packed), peak, count, total,
 * capped, signed}) decoded: per-layer edge offsets, flat edge arrays and their buckets.
 */
export function decodeGraph(g) {
  const weight = decode(g.weight).data;
  return {
    label: g.label,
    off: layerOffsets(decode(g.counts).data),
    query: decode(g.query).data,
    key: decode(g.key).data,
    weight,
    buckets: bucketEdges(weight, g.peak, EDGES.n_buckets),
    peak: g.peak,
    count: g.count,
    total: g.total,
    capped: g.capped,
    signed: g.signed,
  };
}

/**
 * Flow through each edge for the traced token (graph `k` of `nodes` [G, L+1, T]): the share
 * at the edge's query node x |weight|. Returns {flows, max}.
 */
export function edgeFlows(g, nodes, k, L) {
  const T = nodes.shape[2];
  const r = nodes.data;
  const base = k * (L + 1) * T;
  const flows = new Float32Array(g.weight.length);
  let max = 0;
  for (let l = 0; l < L; l++) {
    for (let e = g.off[l]; e < g.off[l + 1]; e++) {
      const f = Math.abs(r[base + (l + 1) * T + g.query[e]]) * Math.abs(g.weight[e]);
      flows[e] = f;
      if (f > max) max = f;
    }
  }
  return { flows, max };
}

/** Width and opacity of a traced edge at x = flow / strongest flow; null below min_share. */
export function tracedStyle(x) {
  if (!(x >= TRACED.min_share)) return null;
  return { width: TRACED.width[0] + TRACED.width[1] * x, alpha: TRACED.alpha[0] + TRACED.alpha[1] * x };
}

/** Radius and opacity of a node at v = |share| / column max (rows rowH apart); null below min_share. */
export function nodeStyle(v, rowH) {
  if (!(v >= NODES.min_share)) return null;
  const r = Math.max(NODES.radius_min, Math.min(NODES.radius_max, rowH * NODES.radius_row));
  return { radius: r * (NODES.radius_scale[0] + NODES.radius_scale[1] * v), alpha: NODES.alpha[0] + NODES.alpha[1] * v };
}

/** Line width of an edge bucket's style, capped by the row height (thin rows, thin lines). */
export function bucketWidth(style, rowH) {
  return Math.min(style.width, Math.max(EDGES.min_width, rowH));
}
