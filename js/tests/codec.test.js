import { describe, expect, it } from "vitest";
import { asBytes, decode, fromBase64, halfToFloat, maxOf } from "../lib/codec.js";

// Little-endian bytes of some float16 values (as numpy writes them).
function f16bytes(halves) {
  const b = new Uint8Array(halves.length * 2);
  halves.forEach((h, i) => {
    b[2 * i] = h & 0xff;
    b[2 * i + 1] = h >> 8;
  });
  return b;
}

function f32bytes(values) {
  const b = new Uint8Array(values.length * 4);
  const dv = new DataView(b.buffer);
  values.forEach((v, i) => dv.setFloat32(4 * i, v, true));
  return b;
}

/** `payload` placed at `offset` inside a bigger buffer filled with junk (0xAB). */
function embed(payload, offset, tail = 7) {
  const big = new Uint8Array(offset + payload.length + tail).fill(0xab);
  big.set(payload, offset);
  return big.buffer;
}

describe("halfToFloat", () => {
  it.each([
    [0x0000, 0],
    [0x3c00, 1],
    [0xbc00, -1],
    [0x4000, 2],
    [0x3800, 0.5],
    [0x3555, 0.333251953125],
    [0x7bff, 65504], // largest finite half
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
  ])("0x%s decodes to %s", (h, v) => {
    expect(halfToFloat(h)).toBe(v);
  });

  it("handles signed zero, infinities and NaN", () => {
    expect(Object.is(halfToFloat(0x8000), -0)).toBe(true);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(halfToFloat(0x7e00)).toBeNaN();
    expect(halfToFloat(0x7c01)).toBeNaN();
  });

  it("agrees with float32 rounding for every finite half", () => {
    // Every half is exactly representable in float32; the decode must be exact.
    for (let h = 0; h < 0x7c00; h += 17) {
      const v = halfToFloat(h);
      expect(Math.fround(v)).toBe(v);
      expect(v).toBeGreaterThanOrEqual(0);
    }
  });
});

describe("asBytes", () => {
  it("asBytes (was exportbar.toBytes) views DataViews, ArrayBuffers and typed arrays without copying", () => {
    const ab = new ArrayBuffer(8);
    const dv = new DataView(ab, 2, 4);
    const b = asBytes(dv);
    expect(b.length).toBe(4);
    expect(b.buffer).toBe(ab);
    expect(b.byteOffset).toBe(2);
    expect(asBytes(ab).length).toBe(8);
    expect(asBytes(new Float32Array(2)).length).toBe(8);
    expect(() => asBytes("svg")).toThrow(/expected binary data, received \[object String\]/);
    expect(() => asBytes(null)).toThrow(/Null/);
  });
  it("wraps exactly the viewed bytes of a DataView slice (no copy)", () => {
    const buf = new ArrayBuffer(16);
    const dv = new DataView(buf, 5, 6);
    const b = asBytes(dv);
    expect(b.buffer).toBe(buf);
    expect(b.byteOffset).toBe(5);
    expect(b.byteLength).toBe(6);
  });

  it("accepts ArrayBuffer and typed arrays, rejects other values", () => {
    expect(asBytes(new ArrayBuffer(3)).byteLength).toBe(3);
    const f = new Float32Array(new ArrayBuffer(32), 8, 2);
    const b = asBytes(f);
    expect([b.byteOffset, b.byteLength]).toEqual([8, 8]);
    expect(() => asBytes([1, 2, 3])).toThrow(/expected binary data, received \[object Array\]/);
    expect(() => asBytes(null)).toThrow(TypeError);
  });
});

describe("decode", () => {
  const halves = [0x3c00, 0x0001, 0x7c00, 0xc000, 0x3800, 0x0000];
  const expected = [1, 2 ** -24, Infinity, -2, 0.5, 0];

  it("float16: decodes values (subnormal, inf) into a Float32Array", () => {
    const out = decode({ dtype: "float16", shape: [2, 3], data: f16bytes(halves) });
    expect(out.data).toBeInstanceOf(Float32Array);
    expect(Array.from(out.data)).toEqual(expected.map(Math.fround));
    expect(out.shape).toEqual([2, 3]);
    expect(out.dtype).toBe("float16");
  });

  it.each([0, 1, 2, 3, 5, 8])("float16: honours byteOffset %i of a DataView into a bigger buffer", (offset) => {
    const buf = embed(f16bytes(halves), offset);
    const data = new DataView(buf, offset, halves.length * 2);
    const out = decode({ dtype: "float16", shape: [6], data });
    expect(Array.from(out.data)).toEqual(expected.map(Math.fround));
  });

  it.each([0, 1, 4, 6])("float32: honours byteOffset %i of a Uint8Array slice", (offset) => {
    const vals = [0.125, -3.5, 1e-7, 0.3];
    const buf = embed(f32bytes(vals), offset);
    const data = new Uint8Array(buf, offset, 16);
    const out = decode({ dtype: "float32", shape: [2, 2], data });
    expect(out.data).toBeInstanceOf(Float32Array);
    expect(Array.from(out.data)).toEqual(vals.map(Math.fround));
  });

  it("float32: an aligned slice is a view, not a copy", () => {
    const buf = embed(f32bytes([1, 2]), 8);
    const out = decode({ dtype: "float32", shape: [2], data: new DataView(buf, 8, 8) });
    expect(out.data.buffer).toBe(buf);
    expect(out.data.byteOffset).toBe(8);
  });

  it("float32: a misaligned slice is copied, leaving the source intact", () => {
    const buf = embed(f32bytes([1, 2]), 3);
    const before = new Uint8Array(buf).slice();
    const out = decode({ dtype: "float32", shape: [2], data: new DataView(buf, 3, 8) });
    expect(Array.from(out.data)).toEqual([1, 2]);
    expect(out.data.buffer).not.toBe(buf);
    expect(new Uint8Array(buf)).toEqual(before);
  });

  it("uint8: honours byteOffset and byteLength of a slice", () => {
    const buf = embed(new Uint8Array([0, 7, 128, 255]), 3);
    const out = decode({ dtype: "uint8", shape: [4], data: new DataView(buf, 3, 4) });
    expect(out.data).toBeInstanceOf(Uint8Array);
    expect(Array.from(out.data)).toEqual([0, 7, 128, 255]);
  });

  it("int32 and uint16 are little-endian", () => {
    const i32 = decode({ dtype: "int32", shape: [2], data: new Uint8Array([1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]) });
    expect(Array.from(i32.data)).toEqual([1, -1]);
    const u16 = decode({ dtype: "uint16", shape: [2], data: new Uint8Array([0x34, 0x12, 0xff, 0xff]) });
    expect(Array.from(u16.data)).toEqual([0x1234, 0xffff]);
  });

  it("dataOverride replaces packed.data (buffers arriving beside the message)", () => {
    const out = decode({ dtype: "uint8", shape: [2], data: undefined }, new Uint8Array([4, 5]).buffer);
    expect(Array.from(out.data)).toEqual([4, 5]);
  });

  it("an empty shape product decodes to an empty array", () => {
    expect(decode({ dtype: "float32", shape: [0, 3], data: new ArrayBuffer(0) }).data.length).toBe(0);
  });

  it("rejects byte counts that do not fill the shape, naming both", () => {
    expect(() => decode({ dtype: "float16", shape: [2, 3], data: new Uint8Array(10) })).toThrow(
      "float16[2,3] needs 12 bytes, received 10",
    );
    expect(() => decode({ dtype: "float32", shape: [2], data: new Uint8Array(12) })).toThrow(/needs 8 bytes, received 12/);
    expect(() => decode({ dtype: "uint8", shape: [4], data: new DataView(new ArrayBuffer(10), 2, 3) })).toThrow(
      /needs 4 bytes, received 3/,
    );
  });

  it("rejects an unknown dtype", () => {
    expect(() => decode({ dtype: "float64", shape: [1], data: new Uint8Array(8) })).toThrow("unknown dtype float64");
  });

  it("returns a copy of the shape", () => {
    const shape = [2];
    const out = decode({ dtype: "uint8", shape, data: new Uint8Array(2) });
    out.shape.push(9);
    expect(shape).toEqual([2]);
  });
});

describe("maxOf", () => {
  it("returns the largest value, 0 for empty or all-negative input, and skips NaN", () => {
    expect(maxOf(new Float32Array([0.1, 0.7, 0.2]))).toBeCloseTo(0.7, 6);
    expect(maxOf([])).toBe(0);
    expect(maxOf([-1, -2])).toBe(0);
    expect(maxOf([NaN, 0.5, NaN])).toBe(0.5);
  });
});

describe("maxOf ignores infinities", () => {
  it("returns the largest finite value", () => {
    expect(maxOf(new Float32Array([1, Infinity, 3, NaN]))).toBe(3);
  });
});
