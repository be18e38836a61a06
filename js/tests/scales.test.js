// The views' colour-scale helpers: matrix thumbnails rescaled from each head's own max to a
// shared bar top (displayMax / codeTable), signed differences (signedIndex), the heatmap's
// bar top (mapTop), and the strip's scroll-into-view (scrollToShow).
import { describe, expect, it } from "vitest";
import { mapTop, uniformFloor } from "../heatmap/draw.js";
import { scrollToShow } from "../heatmap/strip.js";
import { codeTable, displayMax, signedIndex } from "../matrix/thumbs.js";
import { capNote, matrixLegend } from "../matrix/draw.js";

describe("matrix rescaling", () => {
  // 2 layers x 2 heads; layer 0: a sharp head (max 1) and a uniform one (1/13)
  const scales = Float32Array.from([1, 1 / 13, 1 / 13, 1 / 13]);

  it("displayMax: own / layer / global tops, never below 4 / n_keys", () => {
    expect(Array.from(displayMax(scales, 2, 2, "head", 13)).map((x) => +x.toFixed(4))).toEqual([1, 0.3077, 0.3077, 0.3077]);
    expect(Array.from(displayMax(scales, 2, 2, "layer", 13)).map((x) => +x.toFixed(4))).toEqual([1, 1, 0.3077, 0.3077]);
    expect(Array.from(displayMax(scales, 2, 2, "global", 13))).toEqual([1, 1, 1, 1]);
    expect(displayMax(Float32Array.from([0.001]), 1, 1, "head", 512)[0]).toBeCloseTo(4 / 512, 12);
    expect(displayMax(Float32Array.from([0.001]), 1, 1, "head", 512, true)[0]).toBeCloseTo(0.001, 9); // signed: no floor
  });

  it("uniform attention is never drawn saturated (the LUT index the view picks for code 255)", () => {
    const top = displayMax(scales, 2, 2, "layer", 13);
    expect(codeTable(scales[3], top[3], "sqrt")[255]).toBe(128); // a layer of uniform heads: floor 4/13
    expect(codeTable(scales[1], top[1], "sqrt")[255]).toBe(Math.round(Math.sqrt(1 / 13) * 255)); // next to a sharp head
    expect(codeTable(scales[0], top[0], "sqrt")[255]).toBe(255); // the sharp head itself
    expect(codeTable(scales[3], top[3], "linear")[255]).toBe(64);
  });

  it("codeTable is the identity for a head on its own max, linear", () => {
    expect(Array.from(codeTable(0.8, 0.8, "linear"))).toEqual(Array.from({ length: 256 }, (_, i) => i));
  });

  it("signed: 0 is the centre, +-max the ends, magnitude under the norm", () => {
    expect(signedIndex(0, 0.2)).toBe(128);
    expect(signedIndex(0.2, 0.2)).toBe(255);
    expect(signedIndex(-0.2, 0.2)).toBe(0);
    expect(signedIndex(0.05, 0.2, "sqrt")).toBe(Math.round(((Math.sqrt(0.25) + 1) / 2) * 255));
    const tab = codeTable(0.1, 0.1, "linear", true);
    expect([tab[0], tab[128], tab[255]]).toEqual([0, 128, 255]);
  });

  it("the legend of the selected cell names its top and, signed, both traces", () => {
    const top = displayMax(scales, 2, 2, "layer", 13);
    const m = matrixLegend({ signed: false }, top, 1, 0, 2, "layer", "sqrt", null);
    expect(m.max).toBeCloseTo(4 / 13, 12);
    expect(m.note).toBe("top: layer 1");
    const d = matrixLegend({ signed: true }, top, 0, 1, 2, "global", "linear", ["ft", "base"]);
    expect(d.diverging && d.names).toEqual(["ft", "base"]);
  });

  it("a capped colour top is named on the legend (not at 100, not for a difference)", () => {
    expect(capNote(99.5)).toBe("capped at p99.5 (above: darkest)");
    expect(capNote(100)).toBe("");
    expect(capNote(90, true)).toBe("");
    const top = displayMax(scales, 2, 2, "head", 13);
    const c = matrixLegend({ signed: false }, top, 1, 1, 2, "head", "sqrt", null, 99.5);
    expect(c.note).toBe("capped at p99.5 (above: darkest), top: layer 1 head 1");
    expect(matrixLegend({ signed: false }, top, 1, 1, 2, "head", "sqrt", null, 100).note).toBe("top: layer 1 head 1");
    const d = matrixLegend({ signed: true }, top, 0, 1, 2, "global", "linear", ["ft", "base"], 99.5);
    expect(d.note).toBe("");
  });
});

describe("heatmap bar top", () => {
  const headMax = Float32Array.from([0.2, 0.9, 0.1, 0.3]); // 2 layers x 2 heads
  it("head / layer / global, with the uniform floor", () => {
    expect(mapTop("head", 0.15, headMax, 1, 2, 13)).toBeCloseTo(4 / 13, 12);
    expect(mapTop("head", 0.5, headMax, 1, 2, 13)).toBe(0.5);
    expect(mapTop("layer", 0.1, headMax, 1, 2, 100)).toBeCloseTo(0.3, 6);
    expect(mapTop("global", 0.1, headMax, 1, 2, 100)).toBeCloseTo(0.9, 6);
    expect(mapTop("layer", 0.1, null, 1, 2, 100)).toBe(0.1); // maxima not there yet: the map's own
    expect(uniformFloor(2)).toBe(1);
  });
});

describe("strip scroll", () => {
  it("keeps a visible token where it is, centres one out of view", () => {
    expect(scrollToShow(50, 20, 0, 200)).toBe(0);
    expect(scrollToShow(500, 20, 0, 200)).toBe(410);
    expect(scrollToShow(10, 20, 300, 200)).toBe(0);
    expect(scrollToShow(190, 20, 0, 200)).toBe(100); // half out: scrolled
  });
});

describe("percentile cap", () => {
  it("matches numpy's linear percentile and skips non-finite values", async () => {
    const { percentile, recordTop } = await import("../heatmap/draw.js");
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([0, 10], 99.5)).toBeCloseTo(9.95, 12);
    expect(percentile([5, NaN, 1], 100)).toBe(5);
    expect(percentile([], 50)).toBe(0);
    const rec = { data: Float32Array.from([0, 1, 2, 3, 100]), max: 100 };
    expect(recordTop(rec, 100)).toBe(100);
    expect(recordTop(rec, 75)).toBe(3);
  });
});

describe("percentile by selection", () => {
  it("equals the sorted order statistics on random data, ties and tiny inputs", async () => {
    const { percentile } = await import("../heatmap/draw.js");
    const sorted = (xs, q) => {
      const v = Float64Array.from(xs.filter(Number.isFinite)).sort();
      const pos = ((v.length - 1) * q) / 100;
      const lo = Math.floor(pos);
      const hi = Math.min(lo + 1, v.length - 1);
      return v[lo] + (v[hi] - v[lo]) * (pos - lo);
    };
    let seed = 7;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (const n of [1, 2, 3, 10, 257, 5000]) {
      const xs = Array.from({ length: n }, () => (rand() < 0.2 ? 0.5 : rand()));
      for (const q of [0, 1, 50, 99.5, 100]) expect(percentile(Float32Array.from(xs), q)).toBeCloseTo(sorted(Array.from(Float32Array.from(xs)), q), 12);
    }
    expect(percentile([NaN, Infinity, 2], 50)).toBe(2);
  });
});
