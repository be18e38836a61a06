// The matrix's thumbnails: uint8 maps [L, H, s(, sk)] with float32 scales [L, H] and,
// for long contexts, a pending mask [L, H] (1 = still a preview) that shrinks as exact
// layers arrive ("thumbs_chunk" pushes, or the "get_thumbs" reply of a late view).
// Pure functions of arrays, so the view and the tests share them.
import { decode } from "../lib/codec.js";
import { COLORMAP } from "../lib/style.js";
import { normT } from "../lib/colormap.js";

/**
 * Own copies of the `thumbs` trait's arrays ({maps, scales, pending, note}): chunks write
 * into them. Layers in `exactLayers` (received as chunks) stay exact. Null without maps.
 */
export function thumbsFromTrait(t, exactLayers = new Set()) {
  if (!t || !t.maps) return null;
  const d = decode(t.maps);
  const state = {
    data: Uint8Array.from(d.data),
    shape: d.shape,
    scales: t.scales ? Float32Array.from(decode(t.scales).data) : null,
    pending: t.pending ? Uint8Array.from(decode(t.pending).data) : null,
    note: t.note || "",
    signed: !!t.signed, // compare mode: codes 0..255 are -max..max of the difference
  };
  const H = d.shape[1];
  if (state.pending) for (const l of exactLayers) state.pending.fill(0, l * H, (l + 1) * H);
  return state;
}

/** Values per (layer, head) cell: s x sk (cross-attention) or s x s. */
export function cellValues(shape) {
  return shape[2] * (shape[3] ?? shape[2]);
}

/** Heads still showing the preview. */
export function pendingCount(state) {
  let c = 0;
  if (state && state.pending) for (let i = 0; i < state.pending.length; i++) c += state.pending[i];
  return c;
}

/** The arrays of a "thumbs_chunk" push: {layer0, layer1, maps, scales}. */
export function decodeChunk(msg, buffers) {
  const maps = decode({ dtype: "uint8", shape: msg.shape }, buffers[0]).data;
  const [n, H] = msg.shape;
  const scales = decode({ dtype: "float32", shape: [n, H] }, buffers[1]).data;
  return { layer0: msg.layer0, layer1: msg.layer1, maps, scales };
}

/** The arrays of a "thumbs" reply: {shape, maps, scales, pending, note}. */
export function decodeThumbsReply(msg, buffers) {
  const [L, H] = msg.shape;
  return {
    shape: msg.shape,
    maps: decode({ dtype: "uint8", shape: msg.shape }, buffers[0]).data,
    scales: decode({ dtype: "float32", shape: [L, H] }, buffers[1]).data,
    pending: decode({ dtype: "uint8", shape: [L, H] }, buffers[2]).data,
    note: msg.note || "",
  };
}

/** Copy exact layers l0..l1 (a chunk) into `state`. */
export function applyLayers(state, l0, l1, maps, scales) {
  const H = state.shape[1];
  const per = H * cellValues(state.shape);
  state.data.set(maps.subarray(0, (l1 - l0) * per), l0 * per);
  if (state.scales) state.scales.set(scales.subarray(0, (l1 - l0) * H), l0 * H);
  if (state.pending) state.pending.fill(0, l0 * H, l1 * H);
}

/**
 * Merge a "thumbs" reply (what the kernel has so far) into `state`, except the layers in
 * `exactLayers` (a chunk already brought them); layers the reply has exact join them.
 */
export function mergeReply(state, reply, exactLayers) {
  const [L, H] = reply.shape;
  const per = H * cellValues(reply.shape);
  for (let l = 0; l < L; l++) {
    if (exactLayers.has(l)) continue;
    if (reply.pending[l * H] === 0) exactLayers.add(l);
    state.data.set(reply.maps.subarray(l * per, (l + 1) * per), l * per);
    if (state.scales) state.scales.set(reply.scales.subarray(l * H, (l + 1) * H), l * H);
    if (state.pending) state.pending.set(reply.pending.subarray(l * H, (l + 1) * H), l * H);
  }
  state.note = reply.note || state.note;
}

// ---- colour scales: the uint8 cells are each head's own 0..max (or, signed, -max..max);
// the heads' maxima (`scales`) let the view rescale them to a shared top without new data.

/** The lowest top of an attention colour bar over `nKeys` keys (style.json uniform_floor). */
export function uniformFloor(nKeys) {
  return Math.min(1, COLORMAP.uniform_floor / Math.max(1, nKeys | 0));
}

/**
 * The top of each head's colour bar (Float64Array [L * H]) from the heads' maxima: its own
 * ("head"), its layer's ("layer") or all layers' ("global") largest, at least uniformFloor
 * (not for signed differences, whose maxima are |difference|). render/style.display_max.
 */
export function displayMax(scales, L, H, scale, nKeys, signed = false) {
  const out = new Float64Array(L * H);
  let all = 0;
  for (let i = 0; i < L * H; i++) all = Math.max(all, scales[i]);
  for (let l = 0; l < L; l++) {
    let lm = 0;
    for (let hd = 0; hd < H; hd++) lm = Math.max(lm, scales[l * H + hd]);
    for (let hd = 0; hd < H; hd++) {
      const i = l * H + hd;
      const m = scale === "global" ? all : scale === "layer" ? lm : scales[i];
      out[i] = signed ? m : Math.max(m, uniformFloor(nKeys));
    }
  }
  return out;
}

/** Diverging LUT index of a signed value on -vmax..vmax, magnitude under `norm` (0 -> 128). */
export function signedIndex(value, vmax, norm = "linear") {
  const t = Math.sign(value) * normT(Math.abs(value), vmax, norm);
  return Math.round(((t + 1) / 2) * 255);
}

/**
 * LUT index for each uint8 code 0..255 of a head whose codes span 0..`headMax` (signed:
 * -headMax..headMax), shown on a bar topping out at `vmax` under `norm`.
 */
export function codeTable(headMax, vmax, norm = "linear", signed = false) {
  const tab = new Uint8Array(256);
  for (let q = 0; q < 256; q++) {
    if (signed) tab[q] = signedIndex((q / 255) * 2 * headMax - headMax, vmax, norm);
    else tab[q] = Math.round(normT((q / 255) * headMax, vmax, norm) * 255);
  }
  if (signed) tab[128] = 128; // code 128 is the encoder's 0 (+-1 / 255 of headMax): the background
  return tab;
}

/** RGBA pixels of cell (layer, head) through `lut`, rescaled by `table` (codeTable; default identity). */
export function paintCell(state, layer, head, lut, table = null) {
  const [, H, s, sk] = state.shape;
  const w = sk ?? s;
  const off = (layer * H + head) * s * w;
  const src = state.data.subarray(off, off + s * w);
  const px = new Uint8ClampedArray(src.length * 4);
  for (let i = 0; i < src.length; i++) {
    const j = (table ? table[src[i]] : src[i]) * 4;
    px[i * 4] = lut[j];
    px[i * 4 + 1] = lut[j + 1];
    px[i * 4 + 2] = lut[j + 2];
    px[i * 4 + 3] = 255;
  }
  return px;
}
