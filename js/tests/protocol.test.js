import { afterEach, describe, expect, it, vi } from "vitest";
import { createClient, errorLine, mapKey, MSG, onPush } from "../lib/protocol.js";
import { fakeModel } from "./fakes.js";


afterEach(() => {
  vi.useRealTimers();
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
    const m1 = await import("../lib/protocol.js?copy=1");
    const m2 = await import("../lib/protocol.js?copy=2");
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

describe("MSG", () => {
  it("names every message exactly as it travels", () => {
    expect(MSG).toEqual({
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
    expect(Object.isFrozen(MSG)).toBe(true);
  });
});

describe("onPush", () => {
  it("passes pushes of its type with enough buffers, not replies or other types", () => {
    const model = fakeModel();
    const got = [];
    const stop = onPush(model, MSG.THUMBS_CHUNK, (msg, buffers) => got.push([msg.layer0, buffers.length]), { nBuffers: 2 });
    model.emit({ type: "thumbs_chunk", layer0: 1 }, [new ArrayBuffer(1), new ArrayBuffer(1)]);
    model.emit({ type: "thumbs_chunk", layer0: 2 }, [new ArrayBuffer(1)]); // too few buffers
    model.emit({ type: "map", layer0: 3 }, [new ArrayBuffer(1), new ArrayBuffer(1)]); // other type
    model.emit({ type: "thumbs_chunk", id: "r-1", layer0: 4 }, [new ArrayBuffer(1), new ArrayBuffer(1)]); // a reply
    model.emit(undefined, []);
    model.emit({ type: "thumbs_chunk", id: null, layer0: 5 }, [new ArrayBuffer(1), new ArrayBuffer(1)]); // id null: a push
    expect(got).toEqual([[1, 2], [5, 2]]);
    stop();
    expect(model.listeners("msg:custom")).toBe(0);
    model.emit({ type: "thumbs_chunk", layer0: 6 }, [new ArrayBuffer(1), new ArrayBuffer(1)]);
    expect(got.length).toBe(2);
  });
});

describe("errorLine", () => {
  const el = () => ({ textContent: "", dataset: {} });

  it("shows the error trait first, then the view's own errors, as text", () => {
    const model = fakeModel({ error: "" });
    const box = el();
    const errors = errorLine(box, model);
    expect(errors.show()).toBe("");
    errors.set("fetch", "could not load <b>layer</b> 2");
    expect(box.textContent).toBe("could not load <b>layer</b> 2");
    expect(box.dataset.source).toBe("fetch");
    model.set("error", "thumbnails: RuntimeError: boom");
    errors.show();
    expect(box.textContent).toBe("thumbnails: RuntimeError: boom");
    expect(box.dataset.source).toBe("kernel");
    model.set("error", "");
    errors.show();
    expect(box.textContent).toBe("could not load <b>layer</b> 2");
    errors.clear("fetch");
    expect(box.textContent).toBe("");
    expect(box.dataset.source).toBeUndefined();
  });

  it("keeps the older of two sources on top; setting '' clears one", () => {
    const model = fakeModel({ error: "" });
    const box = el();
    const errors = errorLine(box, model);
    errors.set("a", "first");
    errors.set("b", "second");
    expect(errors.text).toBe("first");
    errors.set("a", "");
    expect(box.textContent).toBe("second");
  });

  it("fail() turns a rejection into a prefixed message", async () => {
    const model = fakeModel({});
    const box = el();
    const errors = errorLine(box, model);
    await Promise.reject(new Error("no reply")).catch(errors.fail("thumbs", "could not load the thumbnails"));
    expect(box.textContent).toBe("could not load the thumbnails: no reply");
  });
});
