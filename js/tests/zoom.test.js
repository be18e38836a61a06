import { describe, expect, it } from "vitest";
import {
  covers,
  formatView,
  fullView,
  hitView,
  isFull,
  rangeLabels,
  rectToView,
  recordExtent,
  sourceRect,
  tileKey,
  tileStep,
  valueAt,
  viewFromZoom,
  viewLayout,
  zoomBy,
  zoomFromView,
} from "../lib/zoom.js";

describe("views and the zoom trait", () => {
  it("[] and malformed values are the whole map", () => {
    expect(viewFromZoom([], 10)).toEqual({ r0: 0, r1: 10, c0: 0, c1: 10 });
    expect(viewFromZoom(null, 10, 7)).toEqual(fullView(10, 7));
    expect(viewFromZoom([1, 2, 3], 10)).toEqual(fullView(10));
    expect(viewFromZoom([1, NaN, 3, 4], 10)).toEqual(fullView(10));
  });

  it("clamps into the map and never returns an empty range", () => {
    expect(viewFromZoom([2, 5, 3, 9], 10)).toEqual({ r0: 2, r1: 5, c0: 3, c1: 9 });
    expect(viewFromZoom([-4, 50, 8, 8], 10)).toEqual({ r0: 0, r1: 10, c0: 8, c1: 9 });
    expect(viewFromZoom([12, 3, 0, 1], 10)).toEqual({ r0: 9, r1: 10, c0: 0, c1: 1 });
  });

  it("round-trips through zoomFromView; the whole map is []", () => {
    const v = { r0: 1, r1: 4, c0: 0, c1: 10 };
    expect(zoomFromView(v, 10)).toEqual([1, 4, 0, 10]);
    expect(viewFromZoom(zoomFromView(v, 10), 10)).toEqual(v);
    expect(zoomFromView(fullView(10, 6), 10, 6)).toEqual([]);
    expect(isFull(fullView(5), 5)).toBe(true);
    expect(isFull({ r0: 0, r1: 5, c0: 1, c1: 5 }, 5)).toBe(false);
  });

  it("formats as r0:r1:c0:c1 (the data-zoom attribute)", () => {
    expect(formatView({ r0: 0, r1: 1024, c0: 16, c1: 80 })).toBe("0:1024:16:80");
    expect(tileKey(3, "mean", { r0: 1, r1: 2, c0: 3, c1: 4 })).toBe("3:mean|1:2:3:4");
  });
});

describe("viewLayout / hitView", () => {
  it("the full view hits exactly like a plain n x n square (reference below)", () => {
    // Reference: the square map of n tokens at (left, top), labels left and above.
    const hitSquare = ({ n, size, left, top }, x, y) => {
      const cell = size / n;
      const inX = x >= left && x < left + size;
      const inY = y >= top && y < top + size;
      const col = Math.min(n - 1, Math.floor((x - left) / cell));
      const row = Math.min(n - 1, Math.floor((y - top) / cell));
      if (inX && inY) return { kind: "cell", row, col };
      if (inY && x >= 0 && x < left) return { kind: "row", row };
      if (inX && y >= 0 && y < top) return { kind: "col", col };
      return null;
    };
    const n = 37;
    const a = { n, size: 400, left: 60, top: 60 };
    const b = viewLayout({ view: fullView(n), size: 400, left: 60, top: 60 });
    for (const [x, y] of [[61, 61], [459, 459], [200, 300], [10, 100], [100, 10], [5, 5], [470, 100], [300, 61]]) {
      expect(hitView(b, x, y)).toEqual(hitSquare(a, x, y));
    }
  });

  it("returns absolute token indices in a zoomed view, with non-square cells", () => {
    const lay = viewLayout({ view: { r0: 100, r1: 110, c0: 2000, c1: 2040 }, size: 400, left: 50, top: 20 });
    expect(lay.cellH).toBe(40);
    expect(lay.cellW).toBe(10);
    expect(hitView(lay, 50, 20)).toEqual({ kind: "cell", row: 100, col: 2000 });
    expect(hitView(lay, 449.9, 419.9)).toEqual({ kind: "cell", row: 109, col: 2039 });
    expect(hitView(lay, 10, 65)).toEqual({ kind: "row", row: 101 });
    expect(hitView(lay, 75, 5)).toEqual({ kind: "col", col: 2002 });
    expect(hitView(lay, 460, 460)).toBe(null);
  });
});

describe("rectToView", () => {
  const lay = viewLayout({ view: fullView(100), size: 400, left: 0, top: 0 }); // 4 px per token

  it("a short drag is a click", () => {
    expect(rectToView(lay, 10, 10, 13, 12)).toBe(null);
  });

  it("covers every cell the rectangle touches, in any corner order", () => {
    expect(rectToView(lay, 10, 20, 50, 41)).toEqual({ r0: 5, r1: 11, c0: 2, c1: 13 });
    expect(rectToView(lay, 50, 41, 10, 20)).toEqual({ r0: 5, r1: 11, c0: 2, c1: 13 });
  });

  it("clamps drags that leave the map", () => {
    expect(rectToView(lay, -30, 390, 420, 500)).toEqual({ r0: 97, r1: 100, c0: 0, c1: 100 });
  });
});

describe("zoomBy", () => {
  it("halves around a token and stays inside the map", () => {
    expect(zoomBy(fullView(1024), 2, { nRows: 1024, row: 100, col: 900 })).toEqual({ r0: 0, r1: 512, c0: 512, c1: 1024 });
    expect(zoomBy(fullView(1024), 2, { nRows: 1024 })).toEqual({ r0: 256, r1: 768, c0: 256, c1: 768 });
  });

  it("keeps at least minSpan tokens and zooming out reaches the whole map", () => {
    let v = fullView(64);
    for (let i = 0; i < 10; i++) v = zoomBy(v, 2, { nRows: 64, minSpan: 4 });
    expect(v.r1 - v.r0).toBe(4);
    for (let i = 0; i < 10; i++) v = zoomBy(v, 0.5, { nRows: 64 });
    expect(isFull(v, 64)).toBe(true);
  });

  it("rejects a non-positive factor", () => {
    expect(() => zoomBy(fullView(8), 0, { nRows: 8 })).toThrow();
  });
});

describe("tileStep", () => {
  it("full resolution while the region has at most maxSide^2 cells", () => {
    expect(tileStep(1024, 1024, 1024)).toBe(1);
    expect(tileStep(1, 4096, 1024)).toBe(1); // a strip row is sent exactly
    expect(tileStep(4096, 4096, 1024)).toBe(4);
    expect(tileStep(2048, 600, 1024)).toBe(2);
    expect(tileStep(4096, 4096, 1000)).toBe(5);
  });

  it("a pooled region never exceeds maxSide per side", () => {
    for (const [r, c] of [[4096, 4096], [3000, 1500], [4096, 300], [1025, 1025]]) {
      const s = tileStep(r, c, 1024);
      expect(Math.ceil(r / s)).toBeLessThanOrEqual(1024);
      expect(Math.ceil(c / s)).toBeLessThanOrEqual(1024);
    }
  });
});

describe("records: covers, valueAt, sourceRect", () => {
  // A 2x3 overview of a 8x12 map, pooled by 4.
  const overview = { data: Float32Array.from([1, 2, 3, 4, 5, 6]), rows: 2, cols: 3, r0: 0, c0: 0, step: 4 };
  // A full-resolution tile of rows 10..13 x cols 20..22.
  const tile = { data: Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), rows: 3, cols: 3, r0: 10, c0: 20, step: 1 };

  it("extent, coverage", () => {
    expect(recordExtent(overview)).toEqual({ r0: 0, c0: 0, r1: 8, c1: 12 });
    expect(covers(overview, { r0: 0, r1: 2, c0: 0, c1: 2 })).toBe(false); // pooled: never full resolution
    expect(covers(tile, { r0: 10, r1: 13, c0: 20, c1: 23 })).toBe(true);
    expect(covers(tile, { r0: 11, r1: 12, c0: 21, c1: 22 })).toBe(true);
    expect(covers(tile, { r0: 9, r1: 12, c0: 21, c1: 22 })).toBe(false);
  });

  it("valueAt maps token cells through offset and step", () => {
    expect(valueAt(overview, 0, 0)).toBe(1);
    expect(valueAt(overview, 7, 11)).toBe(6);
    expect(valueAt(overview, 5, 4)).toBe(5);
    expect(valueAt(tile, 11, 22)).toBe(6);
    expect(valueAt(tile, 9, 20)).toBeNaN();
    expect(valueAt(tile, 10, 23)).toBeNaN();
  });

  it("sourceRect crops a view out of a record, in record pixels", () => {
    expect(sourceRect(overview, { r0: 0, r1: 8, c0: 0, c1: 12 })).toEqual({
      sx: 0, sy: 0, sw: 3, sh: 2, dst: { x: 0, y: 0, w: 1, h: 1 },
    });
    const r = sourceRect(overview, { r0: 2, r1: 6, c0: 4, c1: 8 });
    expect([r.sx, r.sy, r.sw, r.sh]).toEqual([1, 0.5, 1, 1]);
    expect(sourceRect(tile, { r0: 11, r1: 12, c0: 20, c1: 23 })).toEqual({
      sx: 0, sy: 1, sw: 3, sh: 1, dst: { x: 0, y: 0, w: 1, h: 1 },
    });
  });

  it("parts of the view outside the record are cut; no overlap is null", () => {
    const r = sourceRect(tile, { r0: 8, r1: 12, c0: 20, c1: 23 });
    expect(r.sy).toBe(0);
    expect(r.sh).toBe(2);
    expect(r.dst).toEqual({ x: 0, y: 0.5, w: 1, h: 0.5 });
    expect(sourceRect(tile, { r0: 0, r1: 5, c0: 0, c1: 5 })).toBe(null);
  });
});

describe("rangeLabels", () => {
  it("labels a zoomed range without overlap, keeping the selection", () => {
    const got = rangeLabels(100, 140, 5, 11, [117, 3]);
    expect(got).toContain(117);
    expect(got.every((i) => i >= 100 && i < 140)).toBe(true);
    const sorted = [...got].sort((a, b) => a - b);
    for (let k = 1; k < sorted.length; k++) expect((sorted[k] - sorted[k - 1]) * 5).toBeGreaterThanOrEqual(11);
  });

  it("labels every token when cells are tall enough", () => {
    expect(rangeLabels(10, 20, 40, 11)).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  });
});
