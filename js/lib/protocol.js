// The kernel <-> view protocol, in one place. Every custom message the views and the
// Python widgets exchange is named here, with its payload and binary buffers; the
// Python side mirrors this table in attn_widgets/widgets/protocol.py.
//
// Framing. A request is `{type, id, ...payload}` sent with model.send(); the kernel answers
// with one message `{type, id, ...fields}` (buffers alongside) carrying the same `id`, or
// `{type: "error", id, message}`. Pushes are messages the kernel sends unasked: they have
// `id: null` (a pushed map) or no id at all (thumbnail chunks).
//
// Arrays. A packed array is `{dtype, shape, data}` (little-endian, C order); in a reply the
// `dtype`/`shape` travel in the message and `data` is buffers[0]. Every array is decoded by
// codec.decode(), which honours byteOffset (buffers may be windows into larger ones).
//
// | request (view -> kernel)              | reply (kernel -> view)                               |
// |---------------------------------------|------------------------------------------------------|
// | get_map   {layer, head}               | map   {layer, head, dtype, shape, step?}, [float16]  |
// | get_tile  {layer, head, r0, r1, c0, c1} | tile {layer, head, r0, r1, c0, c1, step, dtype, shape}, [float16] |
// | get_thumbs {}                         | thumbs {shape, note}, [uint8 maps, float32 scales, uint8 pending] |
// | get_svg   {}                          | svg   {bytes}, [UTF-8 SVG]                           |
// | (any failure)                         | error {message}                                      |
//
// | push (kernel -> view, unasked)        | buffers                                              |
// |---------------------------------------|------------------------------------------------------|
// | map  {push: true, id: null, seq, layer, head, dtype, shape} | [float16 map]                  |
// | thumbs_chunk {layer0, layer1, shape: [n, H, s, s?]}    | [uint8 maps, float32 scales [n, H]] |
//
// The matrix's `scales` are the heads' colour tops: the value of code 255 (the trait `cap`-th
// percentile of the head's nonzero pixels; above it: 255, darkest; cap 100: the max), so code
// q < 255 is q / 255 * scale. Signed (compare) thumbnails: the largest |difference|, uncapped.
//
// | notice (view -> kernel, no reply)     |                                                      |
// |---------------------------------------|------------------------------------------------------|
// | map_ack {seq}                         | a pushed map arrived (seq null: the view started); the kernel keeps at most one push in flight and sends the newest selection's map on the ack (backpressure) |
//
// | synced trait (kernel -> view)        |                                                      |
// |---------------------------------------|------------------------------------------------------|
// | job {kind, what, done, total, unit, text, token?} | a background job's progress ({} when none): the flow panel's LazyTrace route ("route"), HeadSummary's statistics ("stats"); jobText() gives the status line |
// | methods[k].reason (flow panel)        | why method k is not offered ("" when it is), e.g. the exact max-flow's size limit |
//
// Errors reach a panel four ways, all shown by one ErrorLine (see errorLine below): the
// `error` trait (kernel-side failures outside a request), "error" replies (a request
// failed), the flow panel's `status: "error"` (its `error` trait says why), and failures
// in the view itself (a buffer that does not decode).

/** Message names, as they travel in `type`. */
export const MSG = Object.freeze({
  GET_MAP: "get_map",
  GET_TILE: "get_tile",
  GET_THUMBS: "get_thumbs",
  GET_SVG: "get_svg",
  MAP: "map",
  MAP_ACK: "map_ack",
  TILE: "tile",
  THUMBS: "thumbs",
  THUMBS_CHUNK: "thumbs_chunk",
  SVG: "svg",
  ERROR: "error",
});

/** The heads a selection may aggregate over instead of one numeric head. */
export const AGGREGATES = Object.freeze(["mean", "max"]);

/**
 * @typedef {{kind: string, what: string, done: number, total: number, unit: string,
 *   text?: string, token?: number}} JobProgress
 */

/** The status line of a background job (`job` trait): "<what>: <unit> <done>/<total>". */
export function jobText(job) {
  if (!job || !job.kind) return "";
  if (job.text) return String(job.text);
  return `${job.what}: ${job.unit || "layer"} ${job.done}/${job.total}`;
}

/** The flow panel's `status` values. */
export const FLOW_STATUS = Object.freeze({ IDLE: "", COMPUTING: "computing", READY: "ready", ERROR: "error" });

/**
 * @typedef {"float32" | "float16" | "uint8" | "uint16" | "int32"} WireDtype
 * @typedef {number | "mean" | "max"} Head
 * @typedef {{dtype: WireDtype, shape: number[], data: DataView | ArrayBuffer | ArrayBufferView}} PackedArray
 *
 * @typedef {{layer: number, head: Head}} GetMap
 * @typedef {{layer: number, head: Head, r0: number, r1: number, c0: number, c1: number}} GetTile
 *   Half-open token ranges: rows (queries) r0..r1, columns (keys) c0..c1.
 * @typedef {{}} GetThumbs
 * @typedef {{}} GetSvg
 *
 * @typedef {{type: "map", id: string | null, layer: number, head: Head, dtype: "float16",
 *   shape: [number, number], step?: number, push?: true}} MapReply
 *   buffers[0]: the map. `step` > 1: a max-pooled overview, value (i, j) covers tokens
 *   i*step.. x j*step.. (absent: the whole map at full resolution).
 * @typedef {{type: "tile", id: string, layer: number, head: Head, r0: number, r1: number,
 *   c0: number, c1: number, step: number, dtype: "float16", shape: [number, number]}} TileReply
 *   buffers[0]: the region, max-pooled by `step`.
 * @typedef {{type: "thumbs", id: string, shape: number[], note: string}} ThumbsReply
 *   shape [L, H, s] or [L, H, sq, sk] (cross-attention); buffers: uint8 maps of that shape,
 *   float32 scales [L, H], uint8 pending [L, H] (1 = still a preview).
 * @typedef {{type: "thumbs_chunk", layer0: number, layer1: number, shape: number[]}} ThumbsChunk
 *   Exact thumbnails of layers layer0..layer1; buffers: uint8 maps of `shape`
 *   ([layer1 - layer0, H, s(, sk)]), float32 scales [layer1 - layer0, H].
 * @typedef {{type: "svg", id: string, bytes: number}} SvgReply  buffers[0]: UTF-8 SVG text.
 * @typedef {{type: "error", id: string | null, message: string}} ErrorReply
 * @typedef {{msg: object, buffers: Array<DataView | ArrayBuffer | ArrayBufferView>}} Reply
 */

let NEXT = 1;
// Replies are broadcast to every front-end on the kernel (two browser tabs on one
// notebook), so ids carry a per-page prefix: a plain counter restarts at 1 in each tab.
const PAGE = Math.random().toString(36).slice(2, 10);

/**
 * Request/response client for one view. `request(type, payload)` resolves with
 * {msg, buffers} ({@link Reply}) or rejects with the kernel's error message.
 * `dispose()` detaches and rejects what is pending.
 */
export function createClient(model, { timeoutMs = 60000 } = {}) {
  const pending = new Map();
  const onMsg = (msg, buffers) => {
    if (!msg || msg.id === undefined || !pending.has(msg.id)) return;
    const { resolve, reject, timer } = pending.get(msg.id);
    pending.delete(msg.id);
    clearTimeout(timer);
    if (msg.type === MSG.ERROR) reject(new Error(msg.message || "request failed"));
    else resolve({ msg, buffers: buffers || [] });
  };
  model.on("msg:custom", onMsg);
  return {
    request(type, payload = {}) {
      const id = `r${PAGE}-${NEXT++}`;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`no reply to ${type} after ${timeoutMs} ms (is the kernel running?)`));
        }, timeoutMs);
        pending.set(id, { resolve, reject, timer });
        model.send({ ...payload, type, id });
      });
    },
    get pending() {
      return pending.size;
    },
    dispose() {
      model.off("msg:custom", onMsg);
      for (const { reject, timer } of pending.values()) {
        clearTimeout(timer);
        reject(new Error("view closed"));
      }
      pending.clear();
    },
  };
}

/**
 * Call `fn(msg, buffers)` for every push of `type` that carries at least `nBuffers`
 * buffers (replies to requests, which have a string id, are not pushes). Returns a
 * function that stops listening.
 */
export function onPush(model, type, fn, { nBuffers = 1 } = {}) {
  const handler = (msg, buffers) => {
    if (!msg || msg.type !== type || typeof msg.id === "string") return;
    if (!buffers || buffers.length < nBuffers) return;
    fn(msg, buffers);
  };
  model.on("msg:custom", handler);
  return () => model.off("msg:custom", handler);
}

/** Cache key of a head map. */
export function mapKey(layer, head) {
  return `${layer}:${head}`;
}

/**
 * The one error display of a panel. Sources, in the order they are shown (the first that
 * has a message wins): the `error` trait, then the view's own ones set with
 * `set(source, text)` (a failed request, a buffer that did not decode, ...). Writes
 * `el.textContent` (never HTML) and `el.dataset.source` (which one is shown).
 */
export function errorLine(el, model) {
  const own = new Map();
  const current = () => {
    const trait = model.get("error");
    if (trait) return ["kernel", String(trait)];
    for (const [source, text] of own) if (text) return [source, text];
    return ["", ""];
  };
  const show = () => {
    const [source, text] = current();
    el.textContent = text;
    if (source) el.dataset.source = source;
    else delete el.dataset.source;
    return text;
  };
  return {
    /** Show `text` for `source` ("" clears it). */
    set(source, text) {
      own.delete(source); // re-set: moves to the end, an older message stays first
      if (text) own.set(source, String(text));
      return show();
    },
    clear(source) {
      own.delete(source);
      return show();
    },
    /** A rejection handler: `${prefix}: ${err.message}` for `source`. */
    fail(source, prefix) {
      return (err) => this.set(source, `${prefix}: ${err && err.message ? err.message : err}`);
    },
    /** Re-read the `error` trait (call on change:error and when drawing). */
    show,
    get text() {
      return current()[1];
    },
  };
}
