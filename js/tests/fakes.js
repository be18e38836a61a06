// Stand-ins shared by the tests (not a test file itself).

/** The subset of an anywidget model the views use, recording what they send. */
export function fakeModel(state = {}) {
  const handlers = new Map();
  return {
    state: { ...state },
    sent: [],
    saves: 0,
    get(k) {
      return this.state[k];
    },
    set(k, v) {
      this.state[k] = v;
    },
    save_changes() {
      this.saves++;
    },
    on(ev, fn) {
      if (!handlers.has(ev)) handlers.set(ev, new Set());
      handlers.get(ev).add(fn);
    },
    off(ev, fn) {
      handlers.get(ev)?.delete(fn);
    },
    send(content, callbacks, buffers) {
      this.sent.push({ content, buffers });
    },
    listeners(ev) {
      return handlers.get(ev)?.size ?? 0;
    },
    /** The kernel answering: a custom message to every listener. */
    emit(msg, buffers) {
      for (const fn of [...(handlers.get("msg:custom") ?? [])]) fn(msg, buffers);
    },
  };
}
