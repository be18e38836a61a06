// A stand-in for the anywidget model when panels run in an exported HTML file with no
// kernel: same get/set/on/off/save_changes/send surface, state held in the page, and
// selection links between models done in the browser (like ipywidgets' jslink).
import { fromBase64 } from "./codec.js";

/** Replace every {"$b64": "..."} in a JSON value with a DataView over its bytes. */
export function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$b64") {
      const b = fromBase64(value.$b64);
      return new DataView(b.buffer, b.byteOffset, b.byteLength);
    }
    const out = {};
    for (const k of keys) out[k] = revive(value[k]);
    return out;
  }
  return value;
}

/**
 * A model over `state`. `onSend(msg, model)` receives what the view sends (requests);
 * `model.reply(msg, buffers)` delivers a custom message back to the view, asynchronously,
 * as a kernel would.
 */
export function createStaticModel(state, { onSend } = {}) {
  const listeners = new Map();
  const changed = new Set();
  const model = {
    state,
    get(key) {
      return state[key];
    },
    set(key, value) {
      if (state[key] === value) return;
      state[key] = value;
      changed.add(key);
      model.emit(`change:${key}`, value);
    },
    save_changes() {
      changed.clear();
    },
    on(event, fn) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(fn);
    },
    off(event, fn) {
      if (!listeners.has(event)) return;
      if (fn) listeners.get(event).delete(fn);
      else listeners.delete(event);
    },
    emit(event, ...args) {
      for (const fn of [...(listeners.get(event) || [])]) fn(...args);
    },
    send(msg) {
      if (onSend) onSend(msg, model);
    },
    reply(msg, buffers = []) {
      setTimeout(() => model.emit("msg:custom", msg, buffers), 0);
    },
  };
  return model;
}

/**
 * Keep `names` equal across `models` in the page: a change in one is copied to the
 * others (only to models that have the trait). Returns an unlink function.
 */
export function linkModels(models, names = ["layer", "head", "token"]) {
  let busy = false;
  const offs = [];
  for (const src of models) {
    for (const name of names) {
      if (!(name in src.state)) continue;
      const fn = (value) => {
        if (busy) return;
        busy = true;
        try {
          for (const dst of models) if (dst !== src && name in dst.state) dst.set(name, value);
        } finally {
          busy = false;
        }
      };
      src.on(`change:${name}`, fn);
      offs.push(() => src.off(`change:${name}`, fn));
    }
  }
  return () => offs.forEach((off) => off());
}
