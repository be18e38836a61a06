// Prompt and generated tokens (js/lib/generation.js and the panels' pure parts that use it):
// which tokens are generated, where the boundary falls in a zoomed range, in the flow rows
// after collapsing, on a thumbnail, on the heatmap canvas, and the legend entry.
import { describe, expect, it } from "vitest";
import { rowLayout } from "../flow/graph.js";
import { drawBoundary } from "../heatmap/draw.js";
import {
  boundaryOffset,
  generationColour,
  isGenerated,
  promptLength,
  splitRowsAt,
  stripBoundary,
} from "../lib/generation.js";
import { syncGenerationLegend } from "../lib/legend.js";
import { GENERATION, ROUTE } from "../lib/style.js";
import { thumbTick } from "../matrix/draw.js";
import { fakeModel } from "./fakes.js";

const tokens = (n) => Array.from({ length: n }, (_, i) => `t${i}`);

describe("which tokens are generated", () => {
  it("promptLength: the fact when it is a boundary, else 0", () => {
    expect(promptLength(fakeModel({ tokens: tokens(8), prompt_length: 5 }))).toBe(5);
    expect(promptLength(fakeModel({ tokens: tokens(8), prompt_length: 0 }))).toBe(0);
    expect(promptLength(fakeModel({ tokens: tokens(8) }))).toBe(0); // an older kernel: no fact
    expect(promptLength(fakeModel({ tokens: tokens(8), prompt_length: 8 }))).toBe(0); // no answer
    expect(promptLength(fakeModel({ tokens: tokens(8), prompt_length: 2.5 }))).toBe(0);
    expect(promptLength(fakeModel({ tokens: tokens(8), prompt_length: "3" }))).toBe(0);
    expect(promptLength(fakeModel({ tokens: tokens(3), prompt_length: 5 }), 8)).toBe(5); // explicit count
  });

  it("isGenerated: tokens p.. only, none when p = 0", () => {
    expect([0, 1, 2, 3, 4].map((i) => isGenerated(i, 3))).toEqual([false, false, false, true, true]);
    expect([0, 1, 2].map((i) => isGenerated(i, 0))).toEqual([false, false, false]);
  });

  it("generationColour: the light colour on light backgrounds, the dark one on dark", () => {
    expect(generationColour("#ffffff")).toBe(GENERATION.light);
    expect(generationColour("rgb(17, 17, 17)")).toBe(GENERATION.dark);
    expect(generationColour("#111")).toBe(GENERATION.dark);
    expect(generationColour("not a colour")).toBe(GENERATION.light); // default background: white
    expect(GENERATION.light).not.toBe(GENERATION.dark);
  });

  it("boundaryOffset: cells from the range start, only strictly inside", () => {
    expect(boundaryOffset(5, 0, 10)).toBe(5);
    expect(boundaryOffset(5, 3, 10)).toBe(2); // zoomed: rows 3..9
    expect(boundaryOffset(5, 5, 10)).toBe(null); // all answer
    expect(boundaryOffset(5, 0, 5)).toBe(null); // all prompt
    expect(boundaryOffset(5, 6, 9)).toBe(null);
    expect(boundaryOffset(0, 0, 10)).toBe(null);
  });

  it("stripBoundary: the marker goes before token p", () => {
    expect(stripBoundary(4, 9)).toBe(4);
    expect(stripBoundary(0, 9)).toBe(-1);
    expect(stripBoundary(9, 9)).toBe(-1);
  });
});

describe("flow rows with the boundary", () => {
  const R = ROUTE.row_px;
  const G = ROUTE.gap_px;
  const B = GENERATION.band_px;

  it("every row labelled: a band between rows p - 1 and p, the answer rows move down", () => {
    const base = rowLayout(6, null, "all", 10);
    const r = splitRowsAt(base, 3);
    expect(r.boundary).toEqual({ y0: 10 + 3 * R, y1: 10 + 3 * R + B, y: 10 + 3 * R + B / 2 });
    expect(Array.from(r.y)).toEqual([0, 1, 2, 3, 4, 5].map((i) => 10 + (i + 0.5) * R + (i >= 3 ? B : 0)));
    expect(r.height).toBe(base.height + B);
    expect(r.y[2]).toBeLessThan(r.boundary.y);
    expect(r.y[3]).toBeGreaterThan(r.boundary.y);
    expect(r.slots.map((s) => s.i)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("a gap holding prompt and answer tokens is split at the boundary", () => {
    // 8 tokens, rows 0 and 6 labelled: gaps 1..5 and 7..7; the boundary at 3 cuts the first.
    const r = splitRowsAt(rowLayout(8, [0, 6], "route", 0), 3);
    expect(r.slots.map((s) => (s.kind === "gap" ? `${s.from}-${s.to}` : `#${s.i}`))).toEqual(["#0", "1-2", "3-5", "#6", "7-7"]);
    expect(r.boundary.y0).toBe(R + G); // after row 0 and the prompt gap
    expect(r.y[1]).toBe(r.y[2]);
    expect(r.y[2]).toBeLessThan(r.boundary.y);
    expect(r.y[3]).toBe(r.boundary.y1 + G / 2); // the answer gap's centre, below the band
    expect(r.y[3]).toBe(r.y[5]);
    expect(r.height).toBe(R + G + B + G + R + G);
    // Each token's slot holds its y.
    for (let i = 0; i < 8; i++) {
      const s = r.slots[r.slotOf[i]];
      expect(r.y[i]).toBeGreaterThanOrEqual(s.y0);
      expect(r.y[i]).toBeLessThanOrEqual(s.y1);
      expect(s.kind === "gap" ? s.from <= i && i <= s.to : s.i === i).toBe(true);
    }
  });

  it("a boundary right after a labelled row or at a gap's start does not split anything", () => {
    const a = splitRowsAt(rowLayout(6, [0, 1, 2], "route", 0), 3); // gap 3..5 is all answer
    expect(a.slots.map((s) => s.kind)).toEqual(["token", "token", "token", "gap"]);
    expect(a.boundary.y0).toBe(3 * R);
    expect(a.y[4]).toBe(3 * R + B + G / 2);
    const b = splitRowsAt(rowLayout(6, [3, 4], "route", 0), 3); // gap 0..2 is all prompt
    expect(b.slots.map((s) => (s.kind === "gap" ? `${s.from}-${s.to}` : `#${s.i}`))).toEqual(["0-2", "#3", "#4", "5-5"]);
    expect(b.boundary.y0).toBe(G);
    expect(b.y[3]).toBe(G + B + R / 2);
  });

  it("not a generation: the rows as they were, no boundary", () => {
    const base = rowLayout(5, [1], "route", 4);
    for (const p of [0, 5, 9]) {
      const r = splitRowsAt(base, p);
      expect(r.boundary).toBe(null);
      expect(r.slots).toBe(base.slots);
      expect(r.y).toBe(base.y);
    }
  });
});

describe("the panels' boundary marks", () => {
  it("thumbTick: the boundary's place on a thumbnail edge; none when small or not a generation", () => {
    const t = thumbTick(6, 24, 40);
    expect(t.at).toBe(10);
    expect(t.len).toBe(Math.max(2, Math.round(40 * GENERATION.tick_frac)));
    expect(thumbTick(0, 24, 40)).toBe(null);
    expect(thumbTick(24, 24, 40)).toBe(null);
    expect(thumbTick(6, 24, GENERATION.tick_min_cell - 1)).toBe(null);
  });

  function fakeCtx() {
    const segs = [];
    let cur = null;
    return {
      segs,
      strokes: [],
      beginPath() {},
      moveTo(x, y) {
        cur = [x, y];
      },
      lineTo(x, y) {
        segs.push([...cur, x, y, this.strokeStyle]);
      },
      stroke() {
        this.strokes.push(this.strokeStyle);
      },
    };
  }
  const th = { background: "#ffffff" };

  it("drawBoundary: row and column p inside a zoomed view, halo under the line", () => {
    const ctx = fakeCtx();
    const lay = { left: 50, top: 40, cellW: 10, cellH: 20, sizeW: 200, sizeH: 200 };
    const view = { r0: 2, r1: 12, c0: 0, c1: 20 };
    const b = drawBoundary(ctx, lay, view, 7, th, "#c2185b");
    expect(b).toEqual({ row: 5, col: 7 });
    const line = ctx.segs.filter((s) => s[4] === "#c2185b").map((s) => s.slice(0, 4));
    expect(line).toEqual([
      [50, 40 + 5 * 20, 250, 40 + 5 * 20],
      [50 + 7 * 10, 40, 50 + 7 * 10, 240],
    ]);
    expect(ctx.strokes).toEqual(["#ffffff", "#c2185b"]); // halo first
  });

  it("drawBoundary: nothing when the view is all answer or not a generation", () => {
    const lay = { left: 0, top: 0, cellW: 10, cellH: 10, sizeW: 100, sizeH: 100 };
    for (const [p, view] of [[7, { r0: 7, r1: 12, c0: 7, c1: 12 }], [0, { r0: 0, r1: 10, c0: 0, c1: 10 }]]) {
      const ctx = fakeCtx();
      expect(drawBoundary(ctx, lay, view, p, th, "#c2185b")).toEqual({ row: null, col: null });
      expect(ctx.segs).toEqual([]);
    }
  });
});

describe("the prompt | answer legend entry", () => {
  function node(tag) {
    const e = {
      tagName: tag,
      className: "",
      textContent: "",
      title: "",
      style: {},
      dataset: {},
      children: [],
      parent: null,
      classList: { contains: (c) => e.className.split(" ").includes(c) },
      appendChild(c) {
        c.parent = e;
        e.children.push(c);
        return c;
      },
      remove() {
        e.parent.children.splice(e.parent.children.indexOf(e), 1);
      },
    };
    return e;
  }
  const doc = { createElement: node };
  const text = (e) => [e.textContent, ...e.children.map(text)].join(" ");

  it("added for a generation, updated in place, removed when there is none", () => {
    const slot = node("div");
    slot.appendChild(node("div")); // the colour bar lives there too
    const el = syncGenerationLegend(slot, 11, 19, "#c2185b", "the line on the map", doc);
    expect(slot.children.length).toBe(2);
    expect(text(el)).toContain("prompt");
    expect(text(el)).toContain("answer");
    expect(text(el)).toContain("tokens 11\u201318 generated; the line on the map");
    expect(el.dataset.promptLength).toBe("11");
    const again = syncGenerationLegend(slot, 11, 19, "#f48fb1", "", doc);
    expect(again).toBe(el);
    expect(slot.children.length).toBe(2);
    expect(el._aw.answer.style.color).toBe("#f48fb1");
    expect(syncGenerationLegend(slot, 0, 19, "#c2185b", "", doc)).toBe(null);
    expect(slot.children.length).toBe(1);
    expect(syncGenerationLegend(slot, 0, 19, "#c2185b", "", doc)).toBe(null); // never an empty entry
    expect(slot.children.length).toBe(1);
  });
});
