// The heatmap's data: maps and tiles by key, fetched once each from the kernel (get_map /
// get_tile), pushed ahead of a selection change (map pushes), or embedded in the state
// (exported pages); exact strip rows/columns for pooled maps.
import { decode, maxOf } from "../lib/codec.js";
import { Lru } from "../lib/lru.js";
import { mapKey, MSG, onPush } from "../lib/protocol.js";
import { covers, formatView, isFull, recordExtent, tileKey } from "../lib/zoom.js";

/**
 * A record: {key, map ("layer:head"), data, rows, cols, r0, c0, step, tile, max}; value
 * (i, j) covers tokens r0 + i*step.. x c0 + j*step.. (the block max when step > 1: an
 * overview). `packed` is {dtype, shape, step?} (a reply or a trait), `data` its bytes
 * when they travel as a buffer.
 */
export function makeRecord(key, map, packed, data, extra = {}) {
  const arr = decode(packed, data);
  const rows = arr.shape[0];
  const cols = arr.shape.length > 1 ? arr.shape[1] : 1;
  const step = Number(packed.step || extra.step || 1);
  return { key, map, data: arr.data, rows, cols, r0: extra.r0 || 0, c0: extra.c0 || 0, step, tile: !!extra.tile, max: maxOf(arr.data) };
}

/** The record of a "tile" reply ({layer, head, r0, r1, c0, c1, step, dtype, shape}). */
export function tileRecord(msg, data) {
  const view = { r0: msg.r0, r1: msg.r1, c0: msg.c0, c1: msg.c1 };
  return makeRecord(tileKey(msg.layer, msg.head, view), mapKey(msg.layer, msg.head), msg, data, {
    r0: msg.r0,
    c0: msg.c0,
    step: msg.step,
    tile: true,
  });
}

/** Maps and tiles by key. Overviews of long texts are 1M values (4 MB) each: fewer of those.
 * Pinned records (embedded in the state) are never evicted. */
export function createMapCache({ small = 48, big = 6, bigValues = 1 << 18 } = {}) {
  const smallLru = new Lru(small);
  const bigLru = new Lru(big);
  const pinned = new Map();
  return {
    get: (k) => pinned.get(k) || smallLru.get(k) || bigLru.get(k),
    set: (rec) => (rec.data.length > bigValues ? bigLru : smallLru).set(rec.key, rec),
    pin: (rec) => pinned.set(rec.key, rec),
    clear: () => {
      smallLru.clear();
      bigLru.clear();
      pinned.clear();
    },
  };
}

/**
 * The token's exact row (dir "from") or column ("to") from a full-resolution record that
 * spans it end to end (nq queries x nk keys), else null.
 */
export function localStrip(rec, token, dir, nq, nk) {
  if (!rec || (rec.step || 1) !== 1) return null;
  const e = recordExtent(rec);
  if (dir === "from") {
    if (e.c0 > 0 || e.c1 < nk || token < e.r0 || token >= e.r1) return null;
    const i = token - e.r0;
    return Float32Array.from(rec.data.subarray(i * rec.cols, i * rec.cols + nk));
  }
  if (e.r0 > 0 || e.r1 < nq || token < e.c0 || token >= e.c1) return null;
  const j = token - e.c0;
  const out = new Float32Array(nq);
  for (let i = 0; i < nq; i++) out[i] = rec.data[i * rec.cols + j];
  return out;
}

/** Cache key of a strip: "layer:head|dir|token". */
export function stripKey(layer, head, token, dir) {
  return `${mapKey(layer, head)}|${dir}|${token}`;
}

/** The get_tile payload of a token's whole row ("from") or column ("to"). */
export function stripRequest(layer, head, token, dir, nq, nk) {
  return dir === "from"
    ? { layer, head, r0: token, r1: token + 1, c0: 0, c1: nk }
    : { layer, head, r0: 0, r1: nq, c0: token, c1: token + 1 };
}

/**
 * What the map for (layer, head) in `view` needs: the record to show now (`hit`), or the
 * key and request to fetch (`want`, `type`, `payload`), and a stand-in to show meanwhile
 * (`interim`: the overview of the same head, zoomed). A full-resolution map serves every
 * zoom locally; a max-pooled overview only the whole map: a zoomed region is a tile.
 */
export function planMap(cache, current, { layer, head, view, nq, nk }) {
  const key = mapKey(layer, head);
  const full = isFull(view, nq, nk);
  const base = cache.get(key);
  const useBase = !!base && (full || covers(base, view));
  const want = useBase || full ? key : tileKey(layer, head, view);
  const hit = useBase ? base : cache.get(want) || null;
  const interim = !hit && base && (!current || current.map !== key || !covers(current, view)) ? base : null;
  const payload = full ? { layer, head } : { layer, head, r0: view.r0, r1: view.r1, c0: view.c0, c1: view.c1 };
  return { key, want, full, hit, interim, type: full ? MSG.GET_MAP : MSG.GET_TILE, payload };
}

// -- the fetching side, on the view state `v` (see index.js) ------------------------------

/** One request per key, however many change events ask for it. */
export function fetchOnce(v, key, type, payload) {
  let pending = v.inflight.get(key);
  if (!pending) {
    pending = v.client.request(type, payload);
    v.inflight.set(key, pending);
    const done = () => v.inflight.delete(key);
    pending.then(done, done);
  }
  return pending;
}

/** Store a whole map (a "map" reply or push, or a trait) under "layer:head". */
export function storeMap(v, layer, head, packed, data, pin = false) {
  const key = mapKey(layer, head);
  const rec = makeRecord(key, key, packed, data);
  if (pin) v.maps.pin(rec);
  else v.maps.set(rec);
  return rec;
}

/**
 * Maps the kernel pushes with a selection change (ahead of the state update). Each is
 * acknowledged (`map_ack`): the kernel keeps at most one push in flight per panel and, on
 * the ack, sends the map of the newest selection (backpressure for bursts from Python).
 * The first ack (seq null) tells the kernel this view has started.
 */
export function listenForPushes(v) {
  const ack = (seq) => v.model.send({ type: MSG.MAP_ACK, seq: seq === undefined ? null : seq });
  const stop = onPush(v.model, MSG.MAP, (msg, buffers) => {
    if (!msg.push) return;
    try {
      const rec = storeMap(v, msg.layer, msg.head, msg, buffers[0]);
      // The state update may have come first (and found no map): draw it now.
      if (rec.key === v.wanted && (!v.current || v.current.key !== rec.key)) ensureMap(v);
    } catch (err) {
      v.errors.set("fetch", `could not read a map sent by the kernel: ${err.message}`);
    } finally {
      ack(msg.seq);
    }
  });
  ack(null);
  return stop;
}

/** The maps in the state: the initial one and, in exported pages, the preloaded ones. */
export function preload(v) {
  const init = v.model.get("initial_map");
  if (init && init.data) storeMap(v, init.layer, init.head, init);
  const pre = v.model.get("preloaded") || {};
  for (const [key, packed] of Object.entries(pre)) {
    const [layer, head] = key.split(":");
    storeMap(v, layer, head, packed, undefined, true);
  }
}

/** Show the selected head's map in the current view, fetching it if needed. */
export async function ensureMap(v) {
  const { model } = v;
  const layer = model.get("layer");
  const head = model.get("head");
  if (typeof head === "number") v.lastHead = head;
  const view = v.currentView();
  const plan = planMap(v.maps, v.current, { layer, head, view, nq: v.nTokens(), nk: v.nKeys() });
  v.wanted = plan.want;
  if (plan.hit) {
    v.current = plan.hit;
    v.status.textContent = "";
    v.errors.clear("fetch");
    v.draw();
    return;
  }
  // While a tile loads, the overview of the same head is shown zoomed: blurry, labelled
  // as an overview, and at once.
  if (plan.interim) {
    v.current = plan.interim;
    v.draw();
  }
  v.status.textContent = "loading\u2026";
  const gen = v.gen || 0; // bumped when the weighting changes: older replies are dropped
  // Backpressure: at most one whole-map request in flight per view. A burst of selection
  // changes only updates `v.wanted`; when the request in flight ends, the newest wanted
  // map is fetched (or found: a push may have brought it meanwhile).
  if (plan.full && v.mapBusy && v.mapBusy !== plan.want) {
    v.mapAgain = true;
    return;
  }
  if (plan.full) v.mapBusy = plan.want;
  try {
    const { msg, buffers } = await fetchOnce(v, plan.want, plan.type, plan.payload);
    if (gen !== (v.gen || 0)) return;
    let rec = v.maps.get(plan.want);
    if (!rec) {
      rec = plan.full ? storeMap(v, msg.layer, msg.head, msg, buffers[0]) : tileRecord(msg, buffers[0]);
      if (!plan.full) v.maps.set(rec);
    }
    if (rec.key === v.wanted) {
      v.current = rec;
      v.status.textContent = "";
      v.errors.clear("fetch");
      v.draw();
    }
  } catch (err) {
    if (plan.want === v.wanted) {
      v.status.textContent = "";
      const where = plan.full ? "" : ` (tokens ${formatView(view)})`;
      v.errors.set("fetch", `could not load layer ${layer}, head ${head}${where}: ${err.message}`);
    }
  } finally {
    if (plan.full && v.mapBusy === plan.want) {
      v.mapBusy = null;
      if (v.mapAgain) {
        v.mapAgain = false;
        if (v.wanted !== plan.want) ensureMap(v);
      }
    }
  }
}

/** The subject token's strip values, from a record on hand or a fetched strip; else null. */
export function stripValues(v, token, dir) {
  const layer = v.model.get("layer");
  const head = v.model.get("head");
  const key = mapKey(layer, head);
  const nq = v.nTokens();
  const nk = v.nKeys();
  if (v.current && v.current.map === key) {
    const vals = localStrip(v.current, token, dir, nq, nk);
    if (vals) return vals;
  }
  return localStrip(v.maps.get(key), token, dir, nq, nk) || v.strips.get(stripKey(layer, head, token, dir)) || null;
}

/** Pooled maps cannot give exact strip values: fetch the row / column as a 1 x T tile. */
export async function fetchStrip(v, token, dir) {
  const layer = v.model.get("layer");
  const head = v.model.get("head");
  const k = stripKey(layer, head, token, dir);
  if (v.stripFailed.has(k)) return;
  try {
    const payload = stripRequest(layer, head, token, dir, v.nTokens(), v.nKeys());
    const gen = v.gen || 0;
    const { msg, buffers } = await fetchOnce(v, `strip|${k}`, MSG.GET_TILE, payload);
    if (gen !== (v.gen || 0)) return;
    v.strips.set(k, decode(msg, buffers[0]).data);
    const now = stripKey(v.model.get("layer"), v.model.get("head"), v.axis().subject, v.model.get("direction"));
    if (now === k) v.draw();
  } catch (err) {
    v.stripFailed.add(k);
    v.errors.set("fetch", `could not load the strip for token ${token}: ${err.message}`);
  }
}
