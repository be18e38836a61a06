// The flow view's pure parts (js/flow/): decoding a route graph, the row layout with
// collapsed gaps, hit-testing, pruning by keep (exported pages), edge styles, captions.
import { describe, expect, it } from "vitest";
import { makeLut } from "../lib/colormap.js";
import { edgeSignature, graphCaption, scoreChip } from "../flow/draw.js";
import { decodeGraph, edgeStyle, gapText, nodeStyle, pruneRoute, rowLayout, slotAt } from "../flow/graph.js";
import { flowHitText, flowKey, hitRoute } from "../flow/input.js";
import { ROUTE } from "../lib/style.js";

const f32 = (a) => ({ dtype: "float32", shape: [a.length], data: Float32Array.from(a) });
const i32 = (a) => ({ dtype: "int32", shape: [a.length], data: Int32Array.from(a) });

/** Two layers over 4 tokens: layer 0 has 3 edges (strongest first), layer 1 one. */
function graph() {
  return decodeGraph({
    label: "rollout",
    method: "rollout",
    token: 1,
    keep: 1,
    counts: i32([3, 1]),
    query: i32([1, 1, 2, 1]),
    key: i32([0, 3, 0, 0]),
    weight: f32([0.4, 0.2, 0.1, 0.5]),
    carry: f32(new Array(8).fill(0.1)),
    node: f32(new Array(12).fill(0.25)),
    rows: i32([0, 1]),
    count: 4,
    capped: [],
    signed: false,
  });
}

describe("flow route graph", () => {
  it("decodeGraph: offsets, arrays, peak; a decoded graph passes through", () => {
    const g = graph();
    expect(Array.from(g.off)).toEqual([0, 3, 4]);
    expect(Array.from(g.key)).toEqual([0, 3, 0, 0]);
    expect(g.peak).toBeCloseTo(0.5);
    expect(g.carry.length).toBe(8);
    expect(decodeGraph(g)).toBe(g);
  });

  it("rowLayout: labelled rows row_px tall, runs of other tokens one gap each", () => {
    const r = rowLayout(10, [2, 3, 7], "route", 0);
    expect(r.slots.map((s) => s.kind)).toEqual(["gap", "token", "token", "gap", "token", "gap"]);
    expect(r.labelled).toBe(3);
    expect(gapText(r.slots[3])).toBe("\u2026 3 tokens");
    expect(r.height).toBe(3 * ROUTE.row_px + 3 * ROUTE.gap_px);
    expect(ROUTE.row_px).toBeGreaterThanOrEqual(10); // click targets
    expect(r.y[5]).toBe(r.y[4]); // collapsed tokens sit on their gap's centre
    expect(slotAt(r, r.y[7])).toEqual(r.slots[4]);
    const all = rowLayout(10, [2], "all", 0);
    expect(all.labelled).toBe(10);
  });

  it("hitRoute: header, token row, gap", () => {
    const rows = rowLayout(6, [0, 5], "route", 18);
    const lay = { L: 2, left: 40, top: 18, colW: 50, width: 150, height: 18 + rows.height + 4, rows };
    expect(hitRoute(lay, 90, 5)).toEqual({ kind: "column", col: 1 });
    expect(hitRoute(lay, 40, 18 + 3)).toEqual({ kind: "token", row: 0, col: 0 });
    expect(hitRoute(lay, 140, 18 + ROUTE.row_px + 2)).toEqual({ kind: "gap", col: 2, from: 1, to: 4 });
    expect(hitRoute(lay, 500, 20)).toBeNull();
  });

  it("pruneRoute: the shortest strongest-first prefix per layer reaching keep x total, capped", () => {
    const g = graph();
    const p = pruneRoute(g, [0.7, 0.5], 0.8);
    expect(Array.from(p.off)).toEqual([0, 2, 3]); // 0.4 + 0.2 >= 0.56; layer 1 keeps its one edge
    expect(Array.from(p.key)).toEqual([0, 3, 0]);
    expect(pruneRoute(g, [0.7, 0.5], 1).count).toBe(4);
    const c = pruneRoute(g, [0.7, 0.5], 1, 1);
    expect([c.count, c.capped]).toEqual([2, [0]]);
  });

  it("edgeStyle and nodeStyle grow with the share", () => {
    expect(edgeStyle(1, 1)).toEqual({ width: ROUTE.width[0] + ROUTE.width[1], alpha: ROUTE.alpha[0] + ROUTE.alpha[1] });
    expect(edgeStyle(0.5, 1).width).toBeLessThan(edgeStyle(1, 1).width);
    expect(edgeStyle(0.25, 1).width).toBeCloseTo(ROUTE.width[0] + ROUTE.width[1] * 0.5);
    expect(edgeStyle(2, 0).width).toBe(ROUTE.width[0]);
    expect(nodeStyle(0.01, 10)).toBeNull();
    expect(nodeStyle(1, 10)).toEqual({ radius: 4.5, alpha: 1 });
  });

  it("edgeSignature tells edge sets apart", () => {
    const g = graph();
    expect(edgeSignature(g)).toBe(edgeSignature(graph()));
    expect(edgeSignature(pruneRoute(g, [0.7, 0.5], 0.5))).not.toBe(edgeSignature(g));
  });
});

describe("flow text, chips and keys", () => {
  it("graphCaption: keep and edge count; label when comparing; the capped layers", () => {
    const g = { label: "flow", count: 5, keep: 0.8, capped: [] };
    expect(graphCaption(g, false)).toBe("5 edges, keep 0.80");
    expect(graphCaption(g, true)).toBe("flow \u00b7 5 edges, keep 0.80");
    expect(graphCaption({ ...g, capped: [0, 2] }, false)).toBe("5 edges, keep 0.80 \u00b7 capped in layers 0, 2");
  });

  it("scoreChip: positive scores on the LUT, negative ones in the warn colour with opacity", () => {
    const lut = makeLut([[255, 255, 255], [0, 0, 0]]);
    expect(scoreChip(1, 1, lut, "orange")).toEqual({ background: "rgb(0, 0, 0)", color: "#fff", opacity: "" });
    expect(scoreChip(0, 1, lut, "orange")).toEqual({ background: "rgb(255, 255, 255)", color: "#000", opacity: "" });
    const neg = scoreChip(-0.5, 1, lut, "orange");
    expect([neg.background, neg.color]).toEqual(["orange", "#000"]);
    expect(Number(neg.opacity)).toBeCloseTo(0.65);
  });

  it("flowHitText: headers, gaps, tokens, and the traced token's share", () => {
    expect(flowHitText({ kind: "gap", from: 3, to: 9 }, { tokens: [] })).toContain("7 tokens");
    const tokens = ["a", "b\t"];
    expect(flowHitText({ kind: "column", col: 0 }, { tokens })).toBe("input embeddings");
    expect(flowHitText({ kind: "column", col: 3 }, { tokens })).toBe("click: select layer 2");
    expect(flowHitText({ kind: "token", row: 1, col: 0 }, { tokens })).toBe("b\\t [1] \u00b7 input");
    expect(flowHitText({ kind: "token", row: 0, col: 2 }, { tokens, share: 0.5, traced: 1 })).toBe(
      "a [0] \u00b7 after layer 1\nshare of token 1: 0.5000",
    );
  });

  it("flowKey moves the traced token within range; Escape clears; others are not ours", () => {
    expect(flowKey("ArrowDown", null, 4)).toBe(1);
    expect(flowKey("ArrowDown", 3, 4)).toBe(3);
    expect(flowKey("ArrowUp", 0, 4)).toBe(0);
    expect(flowKey("ArrowUp", 2, 4)).toBe(1);
    expect(flowKey("Escape", 2, 4)).toBeNull();
    expect(flowKey("ArrowLeft", 2, 4)).toBeUndefined();
  });
});
