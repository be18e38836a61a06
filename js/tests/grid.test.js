import { describe, expect, it } from "vitest";
import { drawGridFrame, gridLabelStride, publishGrid } from "../lib/grid.js";
import { matrixLayout } from "../lib/layout.js";

function fakeCtx() {
  const calls = [];
  return {
    calls,
    fillText: (...a) => calls.push(["text", ...a]),
    strokeRect: (...a) => calls.push(["rect", ...a]),
  };
}
const th = { muted: "#666", warn: "#f80", font: "sans-serif" };

describe("grid frame", () => {
  it("labels every head and layer on roomy cells and outlines the selected cell", () => {
    const lay = matrixLayout({ nLayers: 6, nHeads: 12, cell: 20, left: 30, top: 16 });
    const ctx = fakeCtx();
    drawGridFrame(ctx, lay, th, 2, 7);
    const texts = ctx.calls.filter((c) => c[0] === "text").map((c) => c[1]);
    expect(texts).toEqual([...Array(12).keys()].map(String).concat([...Array(6).keys()].map((l) => `L${l}`)));
    const [, x, y, w, h] = ctx.calls.find((c) => c[0] === "rect");
    expect([x, y, w, h]).toEqual([30 + 7 * lay.pitch - 1, 16 + 2 * lay.pitch - 1, 22, 22]);
    expect(ctx.strokeStyle).toBe("#f80");
  });

  it("outlines the whole layer row for an aggregate head and thins labels on small cells", () => {
    const lay = matrixLayout({ nLayers: 32, nHeads: 32, cell: 5, left: 30, top: 16 });
    const ctx = fakeCtx();
    drawGridFrame(ctx, lay, th, 3, "mean");
    expect(gridLabelStride(5)).toBe(3);
    expect(ctx.calls.filter((c) => c[0] === "text").length).toBe(2 * Math.ceil(32 / 3));
    const [, , , w] = ctx.calls.find((c) => c[0] === "rect");
    expect(w).toBe(32 * lay.pitch - lay.gap + 2);
  });

  it("publishes the geometry tests click by", () => {
    const canvas = { dataset: {} };
    publishGrid(canvas, matrixLayout({ nLayers: 2, nHeads: 3, cell: 10, left: 30, top: 16 }));
    expect(canvas.dataset).toEqual({ left: "30", top: "16", cell: "10", pitch: "12" });
  });
});
