// The flow view's pure parts (js/flow/): decoding a graph, the traced token's edge flows,
// edge and node styles from style.json, captions, chips, tooltips and keys.
import { describe, expect, it } from "vitest";
import { makeLut } from "../lib/colormap.js";
import { graphCaption, scoreChip } from "../flow/draw.js";
import { bucketWidth, decodeGraph, edgeFlows, nodeStyle, tracedStyle } from "../flow/graph.js";
import { flowHitText, flowKey } from "../flow/input.js";

const f32 = (a) => ({ dtype: "float32", shape: [a.length], data: Float32Array.from(a) });
const i32 = (a) => ({ dtype: "int32", shape: [a.length], data: Int32Array.from(a) });

/** Two layers over 3 tokens: layer 0 has edges (key 0 -> query 1, 2 -> 2), layer 1 one edge 1 -> 0. */
function graph() {
  return decodeGraph({
    label: "rollout",
    counts: i32([2, 1]),
    query: i32([1, 2, 0]),
    key: i32([0, 2, 1]),
    weight: f32([0.5, -0.25, 1]),
    peak: 1,
    count: 3,
    total: 9,
    capped: false,
    signed: true,
  });
}

describe("flow graph", () => {
  it("decodeGraph: per-layer offsets and signed buckets", () => {
    const g = graph();
    expect(Array.from(g.off)).toEqual([0, 2, 3]);
    expect(Array.from(g.query)).toEqual([1, 2, 0]);
    expect(Array.from(g.buckets)).toEqual([4, 8 + 2, 7]); // |w|/peak * 8, negatives + 8
    expect([g.label, g.count, g.total, g.capped, g.signed]).toEqual(["rollout", 3, 9, false, true]);
  });

  it("edgeFlows: the share at each edge's query node (next column) times |weight|", () => {
    const g = graph();
    const L = 2;
    const T = 3;
    // nodes [G=1, L+1=3, T=3]: column c, token i -> 10 * c + i (+1 so none is zero)
    const data = Float32Array.from({ length: (L + 1) * T }, (_, j) => 10 * Math.floor(j / T) + (j % T) + 1);
    const { flows, max } = edgeFlows(g, { data, shape: [1, L + 1, T] }, 0, L);
    // edge 0: layer 0, query 1 -> column 1 token 1 = 12; x 0.5 = 6. edge 1: 13 x 0.25. edge 2: column 2 token 0 = 21 x 1.
    expect(Array.from(flows)).toEqual([6, 3.25, 21]);
    expect(max).toBe(21);
  });

  it("styles: traced edges and nodes below min_share are skipped; widths grow with x", () => {
    expect(tracedStyle(0.01)).toBeNull();
    expect(tracedStyle(0)).toBeNull();
    expect(tracedStyle(1)).toEqual({ width: 3.6, alpha: 1 });
    expect(tracedStyle(0.5).width).toBeCloseTo(2.1);
    expect(nodeStyle(0.01, 10)).toBeNull();
    expect(nodeStyle(1, 10)).toEqual({ radius: 4.5, alpha: 1 }); // clamp(10 * 0.45, 1, 6) * 1
    expect(nodeStyle(1, 100).radius).toBe(6);
    expect(nodeStyle(0.5, 1).radius).toBeCloseTo(0.7); // radius_min 1 x (0.4 + 0.3)
    expect(bucketWidth({ width: 3 }, 1)).toBe(1);
    expect(bucketWidth({ width: 3 }, 0.1)).toBe(0.5);
    expect(bucketWidth({ width: 2 }, 18)).toBe(2);
  });
});

describe("flow text, chips and keys", () => {
  it("graphCaption: the full caption when comparing or capped", () => {
    const g = { label: "flow", count: 5, total: 40, capped: false };
    expect(graphCaption(g, false)).toBe("5 edges drawn");
    expect(graphCaption(g, true)).toBe("flow \u00b7 5 of 40 edges");
    expect(graphCaption({ ...g, capped: true }, false)).toBe("flow \u00b7 5 of 40 edges (capped: raise the threshold)");
  });

  it("scoreChip: positive scores on the LUT, negative ones in the warn colour with opacity", () => {
    const lut = makeLut([[255, 255, 255], [0, 0, 0]]);
    expect(scoreChip(1, 1, lut, "orange")).toEqual({ background: "rgb(0, 0, 0)", color: "#fff", opacity: "" });
    expect(scoreChip(0, 1, lut, "orange")).toEqual({ background: "rgb(255, 255, 255)", color: "#000", opacity: "" });
    const neg = scoreChip(-0.5, 1, lut, "orange");
    expect([neg.background, neg.color]).toEqual(["orange", "#000"]);
    expect(Number(neg.opacity)).toBeCloseTo(0.65);
  });

  it("flowHitText: headers, tokens, and the traced token's share", () => {
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
