import { afterEach, describe, expect, it, vi } from "vitest";
import { createClient, Lru, mapKey } from "../lib/requests.js";

/** The subset of an anywidget model the views use, recording what they send. */
function fakeModel(state = {}) {
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

afterEach(() => {
  vi.useRealTimers();
});

describe("Lru", () => {
  it("evicts the least recently set entry first", () => {
    const c = new Lru(3);
    c.set("a", 1);
    c.set("b", 2);
    c.set("c", 3);
    c.set("d", 4);
    expect(c.size).toBe(3);
    expect(c.has("a")).toBe(false);
    expect([...c.map.keys()]).toEqual(["b", "c", "d"]);
  });

  it("get refreshes recency, so the untouched entry goes first", () => {
    const c = new Lru(3);
    c.set("a", 1);
    c.set("b", 2);
    c.set("c", 3);
    expect(c.get("a")).toBe(1);
    c.set("d", 4);
    expect(c.has("a")).toBe(true);
    expect(c.has("b")).toBe(false);
    c.set("e", 5);
    expect([...c.map.keys()]).toEqual(["a", "d", "e"]);
  });

  it("re-setting a key updates it, refreshes it and does not grow the map", () => {
    const c = new Lru(2);
    c.set("a", 1);
    c.set("b", 2);
    c.set("a", 10);
    expect(c.size).toBe(2);
    c.set("c", 3);
    expect(c.get("a")).toBe(10);
    expect(c.has("b")).toBe(false);
  });

  it("misses are undefined and do not insert; falsy values are cached", () => {
    const c = new Lru(2);
    expect(c.get("x")).toBeUndefined();
    expect(c.size).toBe(0);
    c.set("zero", 0);
    expect(c.get("zero")).toBe(0);
    expect(c.has("zero")).toBe(true);
  });

  it("defaults to 64 entries", () => {
    const c = new Lru();
    for (let i = 0; i < 100; i++) c.set(i, i);
    expect(c.size).toBe(64);
    expect(c.has(35)).toBe(false);
    expect(c.has(36)).toBe(true);
  });
});

describe("mapKey", () => {
  it("is the same for numbers and the strings split from a preloaded key", () => {
    expect(mapKey(2, 5)).toBe("2:5");
    expect(mapKey("2", "5")).toBe(mapKey(2, 5));
    expect(mapKey(0, "mean")).toBe("0:mean");
  });
});

describe("createClient", () => {
  it("sends {type, id, ...payload} and resolves with the reply that carries its id", async () => {
    const model = fakeModel();
    const client = createClient(model);
    expect(model.listeners("msg:custom")).toBe(1);
    const p = client.request("get_map", { layer: 1, head: 3 });
    expect(model.sent).toHaveLength(1);
    const sent = model.sent[0].content;
    expect(sent).toMatchObject({ type: "get_map", layer: 1, head: 3 });
    expect(typeof sent.id).toBe("string");
    expect(client.pending).toBe(1);
    const buf = new DataView(new ArrayBuffer(8));
    model.emit({ type: "map", id: sent.id, layer: 1, head: 3 }, [buf]);
    const { msg, buffers } = await p;
    expect(msg).toMatchObject({ type: "map", layer: 1, head: 3 });
    expect(buffers).toEqual([buf]);
    expect(client.pending).toBe(0);
  });

  it("matches replies by id when they come back out of order", async () => {
    const model = fakeModel();
    const client = createClient(model);
    const p1 = client.request("get_map", { layer: 0, head: 0 });
    const p2 = client.request("get_map", { layer: 0, head: 1 });
    const [id1, id2] = model.sent.map((s) => s.content.id);
    expect(id1).not.toBe(id2);
    model.emit({ type: "map", id: id2, head: 1 }, []);
    model.emit({ type: "map", id: id1, head: 0 }, []);
    expect((await p1).msg.head).toBe(0);
    expect((await p2).msg.head).toBe(1);
  });

  it("ignores messages that are not replies to its own requests", async () => {
    const model = fakeModel();
    const client = createClient(model);
    const p = client.request("get_map");
    const id = model.sent[0].content.id;
    model.emit(undefined, []);
    model.emit("a string", []);
    model.emit({ type: "map" }, []);
    model.emit({ type: "map", id: "someone-else" }, []);
    expect(client.pending).toBe(1);
    model.emit({ type: "map", id }); // no buffers: resolves with []
    expect((await p).buffers).toEqual([]);
    // A duplicate reply after resolution is ignored, not thrown.
    expect(() => model.emit({ type: "map", id }, [])).not.toThrow();
  });

  it("two clients on one model each get only their own replies", async () => {
    const model = fakeModel();
    const a = createClient(model);
    const b = createClient(model);
    const pa = a.request("get_map", { head: 0 });
    const pb = b.request("get_map", { head: 1 });
    const [ida, idb] = model.sent.map((s) => s.content.id);
    expect(ida).not.toBe(idb);
    model.emit({ type: "map", id: idb, head: 1 }, []);
    expect(a.pending).toBe(1);
    expect(b.pending).toBe(0);
    model.emit({ type: "map", id: ida, head: 0 }, []);
    expect((await pa).msg.head).toBe(0);
    expect((await pb).msg.head).toBe(1);
  });

  it("ids differ between separately loaded copies of the module (two browser tabs)", async () => {
    vi.resetModules();
    const m1 = await import("../lib/requests.js?copy=1");
    const m2 = await import("../lib/requests.js?copy=2");
    const model = fakeModel();
    m1.createClient(model, { timeoutMs: 10 }).request("x").catch(() => {});
    m2.createClient(model, { timeoutMs: 10 }).request("x").catch(() => {});
    const [id1, id2] = model.sent.map((s) => s.content.id);
    expect(id1).not.toBe(id2);
  });

  it("rejects with the kernel's error message", async () => {
    const model = fakeModel();
    const client = createClient(model);
    const p = client.request("get_map", { layer: 99 });
    model.emit({ type: "error", id: model.sent[0].content.id, message: "ValueError: layer: expected 0 <= layer < 6" });
    await expect(p).rejects.toThrow("ValueError: layer: expected 0 <= layer < 6");
    expect(client.pending).toBe(0);
    const p2 = client.request("get_map");
    model.emit({ type: "error", id: model.sent[1].content.id });
    await expect(p2).rejects.toThrow("request failed");
  });

  it("rejects after timeoutMs with a message naming the request, and forgets it", async () => {
    vi.useFakeTimers();
    const model = fakeModel();
    const client = createClient(model, { timeoutMs: 500 });
    const p = client.request("get_map");
    const settled = vi.fn();
    p.catch(settled);
    await vi.advanceTimersByTimeAsync(499);
    expect(settled).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    await expect(p).rejects.toThrow("no reply to get_map after 500 ms (is the kernel running?)");
    expect(client.pending).toBe(0);
    // A late reply is ignored.
    expect(() => model.emit({ type: "map", id: model.sent[0].content.id }, [])).not.toThrow();
  });

  it("a reply clears its timer (no late rejection)", async () => {
    vi.useFakeTimers();
    const model = fakeModel();
    const client = createClient(model, { timeoutMs: 100 });
    const p = client.request("get_map");
    model.emit({ type: "map", id: model.sent[0].content.id }, []);
    await expect(p).resolves.toMatchObject({ msg: { type: "map" } });
    expect(vi.getTimerCount()).toBe(0);
  });

  it("dispose rejects every pending request, clears timers and detaches", async () => {
    vi.useFakeTimers();
    const model = fakeModel();
    const client = createClient(model, { timeoutMs: 1000 });
    const p1 = client.request("get_map", { head: 0 });
    const p2 = client.request("get_map", { head: 1 });
    expect(vi.getTimerCount()).toBe(2);
    client.dispose();
    await expect(p1).rejects.toThrow("view closed");
    await expect(p2).rejects.toThrow("view closed");
    expect(client.pending).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(model.listeners("msg:custom")).toBe(0);
  });
});
