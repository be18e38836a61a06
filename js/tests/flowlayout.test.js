import { describe, expect, it } from "vitest";
import { bucketEdges, bucketStyle, colX, fitRow, flowLayout, hitFlow, layerOffsets, rowY } from "../lib/flowlayout.js";

describe("flowLayout / colX / rowY", () => {
  it("spreads nLayers + 1 columns over the inner width", () => {
    const lay = flowLayout({ nLayers: 6, n: 13, width: 700, rowH: 18, left: 80, right: 80, top: 20 });
    expect(lay.cols).toBe(7);
    expect(lay.colW).toBeCloseTo(540 / 6, 10);
    expect(colX(lay, 0)).toBe(80);
    expect(colX(lay, 6)).toBeCloseTo(620, 10);
    expect(lay.width).toBe(700);
    expect(lay.height).toBe(20 + 13 * 18 + 4);
    expect(rowY(lay, 0)).toBe(29);
    expect(rowY(lay, 12)).toBe(20 + 12.5 * 18);
  });

  it("keeps at least 8 px per column when the panel is too narrow", () => {
    const lay = flowLayout({ nLayers: 11, n: 3, width: 100, rowH: 10, left: 60, right: 60, top: 0 });
    expect(lay.colW).toBeGreaterThanOrEqual(8);
    expect(lay.width).toBe(60 + 12 * 8 + 60);
  });

  it("a single column has no width", () => {
    const lay = flowLayout({ nLayers: 0, n: 2, width: 300, rowH: 10, left: 10, right: 10, top: 0 });
    expect(lay.colW).toBe(0);
    expect(colX(lay, 0)).toBe(10);
  });
});

describe("fitRow", () => {
  it("fits n rows into maxHeight within [min, max]", () => {
    expect(fitRow(10, 100)).toBe(10);
    expect(fitRow(2, 100)).toBe(18);
    expect(fitRow(1000, 100)).toBe(1);
    expect(fitRow(1000, 100, { min: 2 })).toBe(2);
    expect(fitRow(0, 100)).toBe(18);
  });
});

describe("hitFlow", () => {
  const lay = flowLayout({ nLayers: 4, n: 5, width: 500, rowH: 20, left: 50, right: 50, top: 30 });

  it("every (token, column) node hits itself", () => {
    for (let c = 0; c <= 4; c++) {
      for (let i = 0; i < 5; i++) {
        expect(hitFlow(lay, colX(lay, c), rowY(lay, i))).toEqual({ kind: "token", row: i, col: c });
        const x = colX(lay, c) + (c === 4 ? -1 : 1) * lay.colW * 0.49; // nearest column is still c
        expect(hitFlow(lay, x, rowY(lay, i) + 9)).toEqual({ kind: "token", row: i, col: c });
      }
    }
  });

  it("the header band selects a column; labels clamp to the nearest column", () => {
    expect(hitFlow(lay, colX(lay, 2), 10)).toEqual({ kind: "column", col: 2 });
    expect(hitFlow(lay, 0, rowY(lay, 1))).toEqual({ kind: "token", row: 1, col: 0 });
    expect(hitFlow(lay, lay.width, rowY(lay, 1))).toEqual({ kind: "token", row: 1, col: 4 });
  });

  it("outside the panel, or below the last row, hits nothing", () => {
    expect(hitFlow(lay, -1, 50)).toBeNull();
    expect(hitFlow(lay, 100, -1)).toBeNull();
    expect(hitFlow(lay, lay.width + 1, 50)).toBeNull();
    expect(hitFlow(lay, 100, lay.height + 1)).toBeNull();
    expect(hitFlow(lay, 100, 30 + 5 * 20 + 2)).toBeNull(); // bottom margin
  });
});

describe("bucketEdges / bucketStyle", () => {
  it("classes |w| / peak into nBuckets, negatives offset by nBuckets, zero/non-finite -1", () => {
    const b = bucketEdges(new Float32Array([1, 0.5, 0.1249, 0.125, -1, -0.01, 0, NaN, Infinity, 3]), 1, 8);
    expect(Array.from(b)).toEqual([7, 4, 0, 1, 15, 8, -1, -1, -1, 7]);
  });

  it("a zero peak puts every non-zero edge in the weakest class", () => {
    expect(Array.from(bucketEdges([0.3, -0.3], 0, 4))).toEqual([0, 4]);
  });

  it("styles get wider and more opaque with strength, same for both signs", () => {
    let prev = null;
    for (let k = 0; k < 8; k++) {
      const s = bucketStyle(k, 8);
      if (prev) {
        expect(s.width).toBeGreaterThan(prev.width);
        expect(s.alpha).toBeGreaterThan(prev.alpha);
      }
      expect(bucketStyle(k + 8, 8)).toEqual(s);
      prev = s;
    }
    expect(bucketStyle(7, 8)).toEqual({ width: 3, alpha: 0.9 });
  });
});

describe("layerOffsets", () => {
  it("is the exclusive prefix sum of per-layer counts", () => {
    expect(Array.from(layerOffsets([3, 0, 5]))).toEqual([0, 3, 3, 8]);
    expect(Array.from(layerOffsets([]))).toEqual([0]);
  });
});
