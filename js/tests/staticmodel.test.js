import { describe, expect, it, vi } from "vitest";
import { decode } from "../lib/codec.js";
import { fromBase64 } from "../lib/codec.js";
import { createStaticModel, linkModels, revive } from "../lib/staticmodel.js";

describe("revive", () => {
  it("turns {$b64} into a DataView over exactly those bytes, nested anywhere", () => {
    const f32 = new Float32Array([1.5, -2, 0.25]);
    const b64 = Buffer.from(f32.buffer).toString("base64");
    const out = revive({ a: [{ m: { dtype: "float32", shape: [3], data: { $b64: b64 } } }], n: 3, s: "x" });
    expect(out.n).toBe(3);
    expect(out.s).toBe("x");
    const dv = out.a[0].m.data;
    expect(dv).toBeInstanceOf(DataView);
    expect(dv.byteLength).toBe(12);
    expect(Array.from(decode(out.a[0].m).data)).toEqual([1.5, -2, 0.25]);
  });

  it("leaves objects with other keys alone", () => {
    expect(revive({ $b64: "AA==", other: 1 })).toEqual({ $b64: "AA==", other: 1 });
    expect(revive(null)).toBe(null);
  });

  it("decodes base64", () => {
    expect(Array.from(fromBase64("AAEC/w=="))).toEqual([0, 1, 2, 255]);
  });
});

describe("createStaticModel", () => {
  it("get/set emit change events only on real changes", () => {
    const m = createStaticModel({ layer: 0 });
    const seen = vi.fn();
    m.on("change:layer", seen);
    m.set("layer", 0);
    expect(seen).not.toHaveBeenCalled();
    m.set("layer", 3);
    expect(seen).toHaveBeenCalledWith(3);
    expect(m.get("layer")).toBe(3);
    m.off("change:layer", seen);
    m.set("layer", 4);
    expect(seen).toHaveBeenCalledTimes(1);
    m.save_changes();
  });

  it("routes sends to onSend and replies asynchronously as msg:custom", async () => {
    const m = createStaticModel({}, { onSend: (msg, model) => model.reply({ type: "error", id: msg.id, message: "no kernel" }) });
    const got = new Promise((resolve) => m.on("msg:custom", (msg, buffers) => resolve({ msg, buffers })));
    m.send({ type: "get_map", id: "r1" });
    const { msg, buffers } = await got;
    expect(msg).toEqual({ type: "error", id: "r1", message: "no kernel" });
    expect(buffers).toEqual([]);
  });
});

describe("linkModels", () => {
  it("copies selection changes to every other model that has the trait", () => {
    const a = createStaticModel({ layer: 0, head: 0, token: null });
    const b = createStaticModel({ layer: 0, head: 0, token: null });
    const c = createStaticModel({ layer: 0, token: null }); // no head trait
    const unlink = linkModels([a, b, c]);
    a.set("head", 7);
    expect(b.get("head")).toBe(7);
    expect("head" in c.state).toBe(false);
    c.set("token", 4);
    expect(a.get("token")).toBe(4);
    expect(b.get("token")).toBe(4);
    b.set("layer", 2);
    expect(a.get("layer")).toBe(2);
    expect(c.get("layer")).toBe(2);
    unlink();
    a.set("layer", 5);
    expect(b.get("layer")).toBe(2);
  });

  it("does not loop when models echo each other", () => {
    const a = createStaticModel({ layer: 0 });
    const b = createStaticModel({ layer: 0 });
    linkModels([a, b]);
    const spy = vi.fn();
    b.on("change:layer", spy);
    a.set("layer", 1);
    expect(spy).toHaveBeenCalledTimes(1);
  });
});
