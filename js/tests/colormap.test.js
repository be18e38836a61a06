import { describe, expect, it } from "vitest";
import { lutCss, lutIndex, luminance, makeLut, paint, parseColor, textOn, themeLut } from "../lib/colormap.js";

const entry = (lut, i) => [lut[4 * i], lut[4 * i + 1], lut[4 * i + 2]];
const lumAt = (lut, i) => luminance(entry(lut, i));
const contrast = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);

// Panel backgrounds of real themes: JupyterLab light/dark, and common third-party ones.
const LIGHT_BGS = ["#ffffff", "#fff", "rgb(255, 255, 255)", "#fafafa", "#fdf6e3"];
const DARK_BGS = ["#111111", "#111", "#000000", "#1e1e1e", "#282c34", "#002b36", "rgba(17, 17, 17, 1)"];

describe("parseColor", () => {
  it.each([
    ["#fff", [255, 255, 255]],
    ["#1a2B3c", [26, 43, 60]],
    ["#1a2b3cff", [26, 43, 60]],
    ["  #000  ", [0, 0, 0]],
    ["rgb(1, 2, 3)", [1, 2, 3]],
    ["rgba(10,20,30,0.5)", [10, 20, 30]],
    ["rgb(1.6 2.4 3)", [2, 2, 3]],
  ])("%s -> %j", (s, rgb) => {
    expect(parseColor(s)).toEqual(rgb);
  });

  it.each([["red"], [""], ["#12"], ["hsl(0, 0%, 0%)"], [null], [undefined], [0xffffff]])("%j -> null", (s) => {
    expect(parseColor(s)).toBeNull();
  });
});

describe("luminance", () => {
  it("spans 0 (black) .. 1 (white) with green the brightest primary", () => {
    expect(luminance([0, 0, 0])).toBe(0);
    expect(luminance([255, 255, 255])).toBeCloseTo(1, 10);
    expect(luminance([0, 255, 0])).toBeGreaterThan(luminance([255, 0, 0]));
    expect(luminance([255, 0, 0])).toBeGreaterThan(luminance([0, 0, 255]));
    expect(luminance([119, 119, 119])).toBeCloseTo(0.1845, 3);
  });
});

describe("makeLut", () => {
  it("hits the stops exactly at the ends and the middle, alpha opaque", () => {
    const lut = makeLut([[0, 0, 0], [100, 200, 50], [255, 255, 255]]);
    expect(lut).toHaveLength(1024);
    expect(entry(lut, 0)).toEqual([0, 0, 0]);
    expect(entry(lut, 255)).toEqual([255, 255, 255]);
    // 127.5 is the middle stop; entries 127/128 straddle it.
    expect(entry(lut, 127)[1]).toBeLessThanOrEqual(200);
    expect(entry(lut, 128)[1]).toBeGreaterThanOrEqual(200);
    for (let i = 0; i < 256; i++) expect(lut[4 * i + 3]).toBe(255);
  });

  it("interpolates linearly between two stops", () => {
    const lut = makeLut([[0, 0, 0], [255, 0, 0]]);
    for (let i = 0; i < 256; i++) expect(lut[4 * i]).toBe(i);
  });

  it("needs at least two stops", () => {
    expect(() => makeLut([[0, 0, 0]])).toThrow(/at least two stops/);
    expect(() => makeLut(null)).toThrow(/at least two stops/);
  });
});

describe("themeLut", () => {
  // 8-bit rounding leaves plateaus, and interpolating in sRGB can dip by a hair where one
  // channel falls while another rises: allow 1e-3 of luminance, far below what an eye sees.
  const EPS = 1e-3;

  it.each(LIGHT_BGS)("light background %s: starts at the background, luminance decreasing", (bg) => {
    const lut = themeLut(bg);
    expect(entry(lut, 0)).toEqual(parseColor(bg));
    for (let i = 1; i < 256; i++) expect(lumAt(lut, i)).toBeLessThanOrEqual(lumAt(lut, i - 1) + EPS);
    expect(lumAt(lut, 64)).toBeLessThan(lumAt(lut, 0) - 0.1);
    expect(lumAt(lut, 255)).toBeLessThan(0.05); // strong attention is dark on light
  });

  it.each(DARK_BGS)("dark background %s: starts at the background, luminance increasing", (bg) => {
    const lut = themeLut(bg);
    expect(entry(lut, 0)).toEqual(parseColor(bg));
    for (let i = 1; i < 256; i++) expect(lumAt(lut, i)).toBeGreaterThanOrEqual(lumAt(lut, i - 1) - EPS);
    expect(lumAt(lut, 192)).toBeGreaterThan(lumAt(lut, 0) + 0.3);
    expect(lumAt(lut, 255)).toBeGreaterThan(0.8); // strong attention is bright on dark
  });

  it("picks different maps for light and dark themes", () => {
    expect(entry(themeLut("#ffffff"), 255)).toEqual([8, 48, 107]);
    expect(entry(themeLut("#111111"), 255)).toEqual([255, 255, 204]);
  });

  it("falls back to a white background when the colour cannot be parsed", () => {
    expect(Array.from(themeLut("var(--nope)"))).toEqual(Array.from(themeLut("#ffffff")));
    expect(Array.from(themeLut(undefined))).toEqual(Array.from(themeLut("#ffffff")));
  });
});

describe("lutIndex", () => {
  it("scales value/max onto 0..255", () => {
    expect(lutIndex(0, 1)).toBe(0);
    expect(lutIndex(1, 1)).toBe(255);
    expect(lutIndex(0.5, 1)).toBe(128);
    expect(lutIndex(0.25, 0.5)).toBe(128);
  });

  it("clamps above max and below zero", () => {
    expect(lutIndex(3, 1)).toBe(255);
    expect(lutIndex(Infinity, 1)).toBe(255);
    expect(lutIndex(-0.5, 1)).toBe(0);
  });

  it("maps NaN and degenerate scales to 0", () => {
    expect(lutIndex(NaN, 1)).toBe(0);
    expect(lutIndex(0.5, NaN)).toBe(0);
    expect(lutIndex(0.5, 0)).toBe(0);
    expect(lutIndex(0.5, -1)).toBe(0);
    expect(lutIndex(undefined, 1)).toBe(0);
  });

  it("gamma < 1 lifts small weights", () => {
    expect(lutIndex(0.25, 1, 0.5)).toBe(128);
    expect(lutIndex(0.01, 1, 0.5)).toBeGreaterThan(lutIndex(0.01, 1));
  });
});

describe("lutCss", () => {
  it("formats an entry and clamps the index", () => {
    const lut = makeLut([[0, 0, 0], [255, 0, 0]]);
    expect(lutCss(lut, 0)).toBe("rgb(0, 0, 0)");
    expect(lutCss(lut, 255)).toBe("rgb(255, 0, 0)");
    expect(lutCss(lut, 999)).toBe("rgb(255, 0, 0)");
    expect(lutCss(lut, -4)).toBe("rgb(0, 0, 0)");
    expect(lutCss(lut, 10.7)).toBe("rgb(10, 0, 0)");
  });
});

describe("textOn", () => {
  it("is black on white and white on black", () => {
    const grey = makeLut([[0, 0, 0], [255, 255, 255]]);
    expect(textOn(grey, 255)).toBe("#000");
    expect(textOn(grey, 0)).toBe("#fff");
  });

  it.each([...LIGHT_BGS, ...DARK_BGS])(
    "on every entry of the %s map, picks the colour with more contrast (and at least 4.5:1)",
    (bg) => {
      const lut = themeLut(bg);
      for (let i = 0; i < 256; i++) {
        const L = lumAt(lut, i);
        const black = contrast(L, 0);
        const white = contrast(L, 1);
        const chosen = textOn(lut, i) === "#000" ? black : white;
        expect(chosen).toBeGreaterThanOrEqual(Math.max(black, white) - 1e-9);
        expect(chosen).toBeGreaterThanOrEqual(4.5);
      }
    },
  );

  it("clamps the index", () => {
    const grey = makeLut([[0, 0, 0], [255, 255, 255]]);
    expect(textOn(grey, 1000)).toBe("#000");
    expect(textOn(grey, -3)).toBe("#fff");
  });
});

describe("paint", () => {
  const lut = makeLut([[0, 0, 0], [255, 255, 255]]);

  it("writes opaque RGBA from the LUT, scaled to max and clamped", () => {
    const px = paint([0, 0.5, 1, 2, -1, NaN], 1, lut);
    expect(px).toHaveLength(24);
    const reds = [0, 1, 2, 3, 4, 5].map((i) => px[4 * i]);
    expect(reds).toEqual([0, 128, 255, 255, 0, 0]);
    for (let i = 0; i < 6; i++) expect(px[4 * i + 3]).toBe(255);
  });

  it("fills a provided buffer in place and applies gamma", () => {
    const out = new Uint8ClampedArray(8);
    const ret = paint([0.25, 1], 1, lut, out, 0.5);
    expect(ret).toBe(out);
    expect(out[0]).toBe(128);
    expect(out[4]).toBe(255);
  });

  it("max <= 0 paints everything with entry 0", () => {
    const px = paint([0.3, 0.9], 0, makeLut([[9, 9, 9], [255, 255, 255]]));
    expect(Array.from(px)).toEqual([9, 9, 9, 255, 9, 9, 9, 255]);
  });

  it("agrees with lutIndex to within one LUT step (strip and heatmap colours match)", () => {
    const vals = Array.from({ length: 101 }, (_, i) => i / 137);
    const max = 100 / 137;
    const px = paint(vals, max, lut);
    vals.forEach((v, i) => expect(Math.abs(px[4 * i] - lutIndex(v, max))).toBeLessThanOrEqual(1));
  });
});

describe("paint with alpha (overlays)", () => {
  it("keeps colours and makes opacity grow with the value up to alpha", () => {
    const lut = themeLut("#ffffff");
    const opaque = paint(new Float32Array([0, 0.5, 1]), 1, lut);
    const over = paint(new Float32Array([0, 0.5, 1]), 1, lut, undefined, 1, 0.5);
    for (let i = 0; i < 3; i++) for (let c = 0; c < 3; c++) expect(over[i * 4 + c]).toBe(opaque[i * 4 + c]);
    expect([over[3], over[7], over[11]]).toEqual([0, 64, 128]);
    expect(opaque[3]).toBe(255);
  });
});
