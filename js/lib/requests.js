// Request/response over anywidget custom messages, matched by id (the kernel is a
// server: the view asks for exactly the data it shows).

let NEXT = 1;
// Replies are broadcast to every front-end on the kernel (two browser tabs on one
// notebook), so ids carry a per-page prefix: a plain counter restarts at 1 in each tab.
const PAGE = Math.random().toString(36).slice(2, 10);

/** A small LRU map. */
export class Lru {
  constructor(limit = 64) {
    this.limit = limit;
    this.map = new Map();
  }
  get(key) {
    if (!this.map.has(key)) return undefined;
    const v = this.map.get(key);
    this.map.delete(key);
    this.map.set(key, v);
    return v;
  }
  set(key, value) {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
  }
  has(key) {
    return this.map.has(key);
  }
  get size() {
    return this.map.size;
  }
}

/**
 * Client for one view. `request(type, payload)` resolves with {msg, buffers} or rejects
 * with the kernel's error message. `dispose()` detaches and rejects what is pending.
 */
export function createClient(model, { timeoutMs = 60000 } = {}) {
  const pending = new Map();
  const onMsg = (msg, buffers) => {
    if (!msg || msg.id === undefined || !pending.has(msg.id)) return;
    const { resolve, reject, timer } = pending.get(msg.id);
    pending.delete(msg.id);
    clearTimeout(timer);
    if (msg.type === "error") reject(new Error(msg.message || "request failed"));
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

/** Cache key of a head map. */
export function mapKey(layer, head) {
  return `${layer}:${head}`;
}
