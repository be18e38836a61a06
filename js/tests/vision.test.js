import { describe, expect, it } from "vitest";
import { makeLut } from "../lib/colormap.js";
import {
  hitPatch,
  imageLayout,
  paintOverlay,
  patchGrid,
  patchToken,
  patchValues,
  stripAxis,
  tokenPatch,
} from "../lib/vision.js";
import { hitView, mapBox, viewLayout } from "../lib/zoom.js";

describe("patchGrid", () => {
  it("accepts a grid whose patches and special tokens are exactly the tokens", () => {
    expect(patchGrid([4, 4], 1, 17)).toEqual({ rows: 4, cols: 4, offset: 1 });
    expect(patchGrid([2, 3], 0, 6)).toEqual({ rows: 2, cols: 3, offset: 0 });
  });

  it("rejects everything else (then the panel shows the plain strip)", () => {
    expect(patchGrid([], 0, 4)).toBe(null);
    expect(patchGrid(undefined, 0, 4)).toBe(null);
    expect(patchGrid([4, 4], 1, 18)).toBe(null);
    expect(patchGrid([0, 4], 0, 0)).toBe(null);
    expect(patchGrid([2.5, 2], 0, 5)).toBe(null);
    expect(patchGrid([2, 2], -1, 3)).toBe(null);
  });
});

describe("patch <-> token", () => {
  const grid = { rows: 3, cols: 4, offset: 2 };

  it("is row-major after the special tokens, and round-trips", () => {
    expect(patchToken(0, 0, grid)).toBe(2);
    expect(patchToken(1, 2, grid)).toBe(2 + 4 + 2);
    expect(patchToken(2, 3, grid)).toBe(13);
    for (let i = 2; i < 14; i++) {
      const p = tokenPatch(i, grid);
      expect(patchToken(p.row, p.col, grid)).toBe(i);
    }
  });

  it("special tokens and out-of-range indices have no patch", () => {
    expect(tokenPatch(0, grid)).toBe(null);
    expect(tokenPatch(1, grid)).toBe(null);
    expect(tokenPatch(14, grid)).toBe(null);
    expect(tokenPatch(null, grid)).toBe(null);
  });
});

describe("imageLayout / hitPatch", () => {
  it("fits the image keeping its aspect, never upscaling past maxUp", () => {
    const a = imageLayout({ imgW: 200, imgH: 100, rows: 2, cols: 4, maxW: 300, maxH: 300 });
    expect([a.width, a.height]).toEqual([300, 150]);
    expect([a.cellW, a.cellH]).toEqual([75, 75]);
    const b = imageLayout({ imgW: 8, imgH: 8, rows: 2, cols: 2, maxW: 360, maxH: 360, maxUp: 4 });
    expect([b.width, b.height]).toEqual([32, 32]);
  });

  it("hits the patch under the point, nothing outside", () => {
    const lay = imageLayout({ imgW: 32, imgH: 32, rows: 4, cols: 4, maxW: 320, maxH: 320 });
    expect(lay.cellW).toBe(80);
    expect(hitPatch(lay, 0, 0)).toEqual({ row: 0, col: 0 });
    expect(hitPatch(lay, 85, 250)).toEqual({ row: 3, col: 1 });
    expect(hitPatch(lay, 319.9, 319.9)).toEqual({ row: 3, col: 3 });
    expect(hitPatch(lay, 320, 10)).toBe(null);
    expect(hitPatch(lay, -1, 10)).toBe(null);
    expect(hitPatch(lay, NaN, 10)).toBe(null);
  });
});

describe("patchValues / paintOverlay", () => {
  it("takes the patch tokens' values (skipping the special ones) and their max", () => {
    const vals = [0.9, 0.1, 0.3, 0.0, 0.2];
    const pv = patchValues(vals, { rows: 2, cols: 2, offset: 1 });
    expect(Array.from(pv.data).map((x) => +x.toFixed(3))).toEqual([0.1, 0.3, 0, 0.2]);
    expect(pv.max).toBeCloseTo(0.3);
    expect(patchValues([1, NaN], { rows: 1, cols: 1, offset: 1 }).max).toBe(0);
  });

  it("opacity grows with the value: transparent at 0, `alpha` at the max", () => {
    const lut = makeLut([[255, 255, 255], [0, 0, 255]]);
    const px = paintOverlay(Float32Array.from([0, 0.5, 1, 2]), 1, lut, undefined, { alpha: 0.8 });
    expect(px[3]).toBe(0);
    expect(px[7]).toBe(Math.round(0.5 * 0.8 * 255));
    expect(px[11]).toBe(Math.round(0.8 * 255));
    expect(px[15]).toBe(px[11]); // clipped at the max
    expect([px[8], px[9], px[10]]).toEqual([0, 0, 255]); // the LUT's top colour
    expect(Array.from(paintOverlay([1, 1], 0, lut)).filter((_, i) => i % 4 === 3)).toEqual([0, 0]);
  });
});

describe("stripAxis (cross-attention strips)", () => {
  const tokens = ["q0", "q1", "q2"];
  const keyTokens = ["k0", "k1", "k2", "k3", "k4"];

  it("self-attention: the token, over the tokens, either way", () => {
    for (const dir of ["from", "to"]) {
      expect(stripAxis({ cross: false, dir, token: 1, keyToken: null, tokens, keyTokens: tokens })).toEqual({
        subject: 1,
        labels: tokens,
        axis: "tokens",
        selected: 1,
      });
    }
  });

  it('"from": the query token\'s row over the keys; "to": the key\'s column over the queries', () => {
    expect(stripAxis({ cross: true, dir: "from", token: 2, keyToken: 4, tokens, keyTokens })).toEqual({
      subject: 2,
      labels: keyTokens,
      axis: "keys",
      selected: 4,
    });
    expect(stripAxis({ cross: true, dir: "to", token: 2, keyToken: 4, tokens, keyTokens })).toEqual({
      subject: 4,
      labels: tokens,
      axis: "queries",
      selected: 2,
    });
    expect(stripAxis({ cross: true, dir: "to", token: 2, keyToken: undefined, tokens, keyTokens }).subject).toBe(null);
  });
});

describe("rectangular map boxes (cross-attention)", () => {
  it("keeps cells square with the longer side `size`, but no side under minSide", () => {
    expect(mapBox(4, 8, 400)).toEqual({ w: 400, h: 200 });
    expect(mapBox(8, 4, 400)).toEqual({ w: 200, h: 400 });
    expect(mapBox(1, 40, 400)).toEqual({ w: 400, h: 48 });
    expect(mapBox(5, 5, 400)).toEqual({ w: 400, h: 400 });
    expect(mapBox(1, 100, 30).h).toBe(30);
  });

  it("viewLayout with a box hits per axis", () => {
    const lay = viewLayout({ view: { r0: 0, r1: 4, c0: 0, c1: 8 }, size: 400, left: 50, top: 30, boxW: 400, boxH: 200 });
    expect([lay.cellW, lay.cellH, lay.width, lay.height]).toEqual([50, 50, 450, 230]);
    expect(hitView(lay, 50, 30)).toEqual({ kind: "cell", row: 0, col: 0 });
    expect(hitView(lay, 449, 229)).toEqual({ kind: "cell", row: 3, col: 7 });
    expect(hitView(lay, 100, 240)).toBe(null); // below the box, inside the old square
    expect(hitView(lay, 10, 80)).toEqual({ kind: "row", row: 1 });
    expect(hitView(lay, 180, 10)).toEqual({ kind: "col", col: 2 });
    const sq = viewLayout({ view: { r0: 0, r1: 4, c0: 0, c1: 4 }, size: 400, left: 0, top: 0 });
    expect([sq.sizeW, sq.sizeH]).toEqual([400, 400]);
  });
});
