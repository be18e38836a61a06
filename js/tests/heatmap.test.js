// The heatmap view's pure parts (js/heatmap/): records and the cache, what a selection
// needs fetched, strip values from a record, outlines and label emphasis, keys and clicks.
import { describe, expect, it } from "vitest";
import { createMapCache, localStrip, makeRecord, planMap, stripKey, stripRequest, tileRecord } from "../heatmap/cache.js";
import { labelEmphasis, mapSize, mapTitle, outlines, overviewNote } from "../heatmap/draw.js";
import { clickSelection, hitText, keyAction, stepIndex } from "../heatmap/input.js";
import { rgbToRgba, visionCaption } from "../heatmap/vision.js";
import { fullView } from "../lib/zoom.js";

/** A float32 packed array of rows x cols with value(i, j) = i * 100 + j. */
function packed(rows, cols, extra = {}) {
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) data[i * cols + j] = i * 100 + j;
  return { dtype: "float32", shape: [rows, cols], data, ...extra };
}

describe("heatmap cache", () => {
  it("makeRecord decodes, takes step from the message and the max of the values", () => {
    const rec = makeRecord("1:2", "1:2", packed(3, 4, { step: 2 }));
    expect([rec.rows, rec.cols, rec.step, rec.r0, rec.c0, rec.tile]).toEqual([3, 4, 2, 0, 0, false]);
    expect(rec.max).toBe(203);
    expect(makeRecord("k", "k", packed(2, 2)).step).toBe(1);
  });

  it("tileRecord keys a tile by head and region and keeps its origin", () => {
    const p = packed(2, 3);
    const rec = tileRecord({ layer: 1, head: "max", r0: 4, r1: 6, c0: 7, c1: 10, step: 1, dtype: p.dtype, shape: p.shape }, p.data);
    expect(rec.key).toBe("1:max|4:6:7:10");
    expect(rec.map).toBe("1:max");
    expect([rec.r0, rec.c0, rec.tile]).toEqual([4, 7, true]);
  });

  it("createMapCache: pinned records survive eviction and are found first; clear drops all", () => {
    const cache = createMapCache({ small: 2, big: 1, bigValues: 10 });
    const rec = (key, n) => ({ key, data: new Float32Array(n) });
    cache.pin(rec("p", 1));
    for (const k of ["a", "b", "c"]) cache.set(rec(k, 4));
    expect(cache.get("a")).toBeUndefined(); // evicted from the small LRU (2 entries)
    expect(cache.get("c").key).toBe("c");
    cache.set(rec("big1", 20));
    cache.set(rec("big2", 20));
    expect(cache.get("big1")).toBeUndefined(); // the big LRU holds 1
    expect(cache.get("b").key).toBe("b"); // big ones never push small ones out
    expect(cache.get("p").key).toBe("p");
    cache.clear();
    expect([cache.get("p"), cache.get("b"), cache.get("big2")]).toEqual([undefined, undefined, undefined]);
  });

  it("localStrip reads a whole row / column, null when the record does not span it", () => {
    const rec = makeRecord("0:0", "0:0", packed(4, 5));
    expect(Array.from(localStrip(rec, 2, "from", 4, 5))).toEqual([200, 201, 202, 203, 204]);
    expect(Array.from(localStrip(rec, 3, "to", 4, 5))).toEqual([3, 103, 203, 303]);
    expect(localStrip(rec, 9, "from", 4, 5)).toBeNull();
    expect(localStrip(null, 0, "from", 4, 5)).toBeNull();
    expect(localStrip({ ...rec, step: 2 }, 0, "from", 4, 5)).toBeNull(); // an overview is not exact
    const tile = { ...rec, r0: 1 }; // rows 1..5 of a 6-row map: no whole column
    expect(localStrip(tile, 2, "to", 6, 5)).toBeNull();
    expect(Array.from(localStrip(tile, 1, "from", 6, 5))).toEqual([0, 1, 2, 3, 4]);
    const right = { ...rec, c0: 2 }; // keys 2..7 of 7: no whole row
    expect(localStrip(right, 1, "from", 4, 7)).toBeNull();
    expect(Array.from(localStrip(right, 3, "to", 4, 7))).toEqual([1, 101, 201, 301]);
  });

  it("strip keys and requests", () => {
    expect(stripKey(2, "mean", 7, "to")).toBe("2:mean|to|7");
    expect(stripRequest(1, 3, 5, "from", 10, 12)).toEqual({ layer: 1, head: 3, r0: 5, r1: 6, c0: 0, c1: 12 });
    expect(stripRequest(1, 3, 5, "to", 10, 12)).toEqual({ layer: 1, head: 3, r0: 0, r1: 10, c0: 5, c1: 6 });
  });

  it("planMap: a cached whole map serves any zoom; an overview only the whole map", () => {
    const cache = createMapCache();
    const full = fullView(8);
    const zoom = { r0: 2, r1: 4, c0: 0, c1: 8 };
    let plan = planMap(cache, null, { layer: 0, head: 1, view: full, nq: 8, nk: 8 });
    expect(plan).toMatchObject({ want: "0:1", full: true, hit: null, interim: null, type: "get_map", payload: { layer: 0, head: 1 } });
    const whole = makeRecord("0:1", "0:1", packed(8, 8));
    cache.set(whole);
    plan = planMap(cache, null, { layer: 0, head: 1, view: zoom, nq: 8, nk: 8 });
    expect(plan.hit).toBe(whole);
    // An overview (step 2) of a 16-token map: the whole map is a hit, a zoom needs a tile.
    const over = makeRecord("0:2", "0:2", packed(8, 8, { step: 2 }));
    cache.set(over);
    expect(planMap(cache, null, { layer: 0, head: 2, view: fullView(16), nq: 16, nk: 16 }).hit).toBe(over);
    plan = planMap(cache, null, { layer: 0, head: 2, view: zoom, nq: 16, nk: 16 });
    expect(plan).toMatchObject({ want: "0:2|2:4:0:8", full: false, hit: null, interim: over, type: "get_tile" });
    expect(plan.payload).toEqual({ layer: 0, head: 2, r0: 2, r1: 4, c0: 0, c1: 8 });
    // Already showing the overview zoomed: no interim redraw.
    expect(planMap(cache, over, { layer: 0, head: 2, view: zoom, nq: 16, nk: 16 }).interim).toBe(over);
    const tile = tileRecord({ layer: 0, head: 2, ...zoom, step: 1, dtype: "float32", shape: [2, 8] }, new Float32Array(16));
    cache.set(tile);
    expect(planMap(cache, tile, { layer: 0, head: 2, view: zoom, nq: 16, nk: 16 }).hit).toBe(tile);
  });
});

describe("heatmap drawing helpers", () => {
  it("title and overview note", () => {
    expect(mapTitle(2, 5, fullView(10), true)).toBe("layer 2 \u00b7 head 5");
    expect(mapTitle(0, "mean", { r0: 1, r1: 4, c0: 0, c1: 9 }, false)).toBe(
      "layer 0 \u00b7 mean of heads \u00b7 queries 1\u20133 \u00d7 keys 0\u20138",
    );
    expect(overviewNote(true, 4)).toBe("");
    expect(overviewNote(false, 4)).toMatch(/max of 4\u00d74 token pairs/);
    expect(overviewNote(false, 1)).toBe("loading the zoomed region\u2026");
  });

  it("mapSize: the trait wins, else 36 px a token between 120 and min(available, 640)", () => {
    expect(mapSize(300, 1000, 4, 4)).toBe(300);
    expect(mapSize(0, 1000, 4, 4)).toBe(144);
    expect(mapSize(0, 1000, 2, 2)).toBe(120);
    expect(mapSize(0, 1000, 100, 3)).toBe(640);
    expect(mapSize(0, 400, 100, 3)).toBe(400);
  });

  it("labelEmphasis: self-attention shares the selection across axes, cross keeps them apart", () => {
    const hover = { kind: "cell", row: 3, col: 7 };
    const self = labelEmphasis({ cross: false, token: 1, keyToken: null, hover });
    expect(self.rowAlways).toEqual([1, 3, 7]);
    expect(self.colAlways).toEqual([1, 3, 7]);
    expect([1, 3, 7, 4].map(self.strongRow)).toEqual([true, true, true, false]);
    const cross = labelEmphasis({ cross: true, token: 1, keyToken: 5, hover });
    expect(cross.rowAlways).toEqual([1, 3]);
    expect(cross.colAlways).toEqual([5, 7]);
    expect([1, 3, 7].map(cross.strongRow)).toEqual([true, true, false]);
    expect([5, 7, 1].map(cross.strongCol)).toEqual([true, true, false]);
    const none = labelEmphasis({ cross: false, token: null, keyToken: null, hover: { kind: "row", row: 2 } });
    expect(none.rowAlways).toEqual([2]);
  });

  it("outlines: subject row or column inside the view, the other axis dashed, the hovered cell", () => {
    const view = { r0: 2, r1: 6, c0: 0, c1: 4 };
    expect(outlines({ view, dir: "from", subject: 3, other: null, hover: null, nq: 8, nk: 8 })).toEqual([
      { kind: "subject", x: 0, y: 1, w: "all", h: 1 },
    ]);
    expect(outlines({ view, dir: "to", subject: 1, other: 4, hover: { kind: "cell", row: 5, col: 2 }, nq: 8, nk: 8 })).toEqual([
      { kind: "subject", x: 1, y: 0, w: 1, h: "all" },
      { kind: "other", x: 0, y: 2, w: "all", h: 1 },
      { kind: "hover", x: 2, y: 3, w: 1, h: 1 },
    ]);
    expect(outlines({ view, dir: "from", subject: 5, other: 1, hover: null, nq: 8, nk: 8 })).toEqual([
      { kind: "subject", x: 0, y: 3, w: "all", h: 1 },
      { kind: "other", x: 1, y: 0, w: 1, h: "all" },
    ]);
    // Outside the view, past the end, or no selection: nothing.
    expect(outlines({ view, dir: "from", subject: 7, other: 6, hover: { kind: "row", row: 3 }, nq: 8, nk: 8 })).toEqual([]);
    expect(outlines({ view: fullView(8), dir: "from", subject: 9, other: null, hover: null, nq: 8, nk: 8 })).toEqual([]);
  });
});

describe("heatmap input", () => {
  it("keyAction maps keys to moves, zoom and reset; others are not ours", () => {
    expect(["ArrowDown", "ArrowRight", "ArrowUp", "ArrowLeft"].map(keyAction)).toEqual([{ move: 1 }, { move: 1 }, { move: -1 }, { move: -1 }]);
    expect(keyAction("Escape")).toEqual({ clear: true });
    expect([keyAction("+"), keyAction("="), keyAction("-"), keyAction("0")]).toEqual([{ zoom: 2 }, { zoom: 2 }, { zoom: 0.5 }, { reset: true }]);
    expect(keyAction("a")).toBeNull();
  });

  it("stepIndex starts at 0 and stays in range", () => {
    expect(stepIndex(null, 1, 5)).toBe(1);
    expect(stepIndex(undefined, -1, 5)).toBe(0);
    expect(stepIndex(4, 1, 5)).toBe(4);
    expect(stepIndex(0, -1, 5)).toBe(0);
    expect(stepIndex(2, -1, 5)).toBe(1);
  });

  it("clickSelection: one token, or cross-attention rows, columns and cells", () => {
    expect(clickSelection({ kind: "cell", row: 2, col: 5 }, false)).toEqual({ token: 2 });
    expect(clickSelection({ kind: "col", col: 5 }, false)).toEqual({ token: 5 });
    expect(clickSelection({ kind: "cell", row: 2, col: 5 }, true)).toEqual({ token: 2, key_token: 5 });
    expect(clickSelection({ kind: "row", row: 2 }, true)).toEqual({ token: 2, direction: "from" });
    expect(clickSelection({ kind: "col", col: 5 }, true)).toEqual({ key_token: 5, direction: "to" });
  });

  it("hitText names both tokens of a cell and its value; labels say query / key for cross", () => {
    const tokens = ["a", "b\n"];
    const keys = ["x", "y"];
    expect(hitText({ kind: "cell", row: 1, col: 0 }, { tokens, keys, value: 0.25 })).toBe("b\\n [1] \u2192 x [0]\n0.2500");
    expect(hitText({ kind: "cell", row: 0, col: 1 }, { tokens, keys, value: 0.5, step: 4 })).toBe("a [0] \u2192 y [1]\n0.5000 (max of 4\u00d74)");
    expect(hitText({ kind: "cell", row: 0, col: 1 }, { tokens, keys, value: NaN })).toMatch(/loading/);
    expect(hitText({ kind: "row", row: 0 }, { tokens, keys, cross: true })).toBe("a [0] (query)");
    expect(hitText({ kind: "col", col: 1 }, { tokens, keys, cross: true })).toBe("y [1] (key)");
    expect(hitText({ kind: "col", col: 1 }, { tokens, keys })).toBe("y [1]");
  });
});

describe("heatmap vision helpers", () => {
  it("rgbToRgba makes opaque pixels", () => {
    expect(Array.from(rgbToRgba(Uint8Array.from([1, 2, 3, 4, 5, 6]), 2))).toEqual([1, 2, 3, 255, 4, 5, 6, 255]);
  });
  it("visionCaption", () => {
    const grid = { rows: 2, cols: 3, offset: 1 };
    expect(visionCaption(new Float32Array(7), "from", "cat", 3, grid, 0.5)).toBe(
      "attention from cat [3] over the 2×3 patches (opacity: 0 … max 0.500); click a patch",
    );
    expect(visionCaption(null, "to", "cat", 3, grid, 0)).toMatch(/^click a patch/);
  });
});
