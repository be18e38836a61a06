import { describe, expect, it } from "vitest";
import { columnLabels, layerRanges } from "../flow/graph.js";

describe("layerRanges", () => {
  it("writes runs of three or more as ranges", () => {
    expect(layerRanges([4, 5, 6, 7, 9])).toBe("4\u20137, 9");
    expect(layerRanges([0, 1, 3, 4])).toBe("0, 1, 3, 4");
    expect(layerRanges([31, 30, 29, 2])).toBe("2, 29\u201331");
    expect(layerRanges([])).toBe("");
    expect(layerRanges([5])).toBe("5");
  });
});

describe("columnLabels", () => {
  it("labels every column when they are wide enough", () => {
    const { stride, show } = columnLabels(7, 60, 30);
    expect(stride).toBe(1);
    expect([...show]).toEqual([1, 1, 1, 1, 1, 1, 1]);
  });
  it("thins narrow columns so no two labels overlap, the selected one always shown", () => {
    const colW = 7;
    const labelPx = 26;
    const { stride, show } = columnLabels(33, colW, labelPx, 21);
    expect(stride).toBe(5);
    expect(show[0]).toBe(1);
    expect(show[21]).toBe(1);
    const xs = [...show].map((v, c) => (v ? c * colW : null)).filter((x) => x !== null);
    for (let i = 1; i < xs.length; i++) expect(xs[i] - xs[i - 1]).toBeGreaterThanOrEqual(labelPx);
  });
});
