// The matrix view's pure parts (js/matrix/): thumbnail state, chunks, catch-up, keys.
import { describe, expect, it } from "vitest";
import { makeLut } from "../lib/colormap.js";
import { matrixNote } from "../matrix/draw.js";
import { arrowMove, cellText } from "../matrix/input.js";
import {
  applyLayers,
  cellValues,
  decodeChunk,
  decodeThumbsReply,
  mergeReply,
  paintCell,
  pendingCount,
  thumbsFromTrait,
} from "../matrix/thumbs.js";

const L = 3;
const H = 2;
const S = 2;

/** A `thumbs` trait: maps filled with `fill`, scales l*10+h, all pending unless `exact`. */
function trait(fill = 1, exact = false) {
  const maps = new Uint8Array(L * H * S * S).fill(fill);
  const scales = Float32Array.from({ length: L * H }, (_, i) => Math.floor(i / H) * 10 + (i % H));
  return {
    maps: { dtype: "uint8", shape: [L, H, S, S], data: new DataView(maps.buffer) },
    scales: { dtype: "float32", shape: [L, H], data: scales },
    pending: { dtype: "uint8", shape: [L, H], data: new Uint8Array(L * H).fill(exact ? 0 : 1) },
    note: "preview (sampled rows)",
  };
}

describe("matrix thumbnails", () => {
  it("thumbsFromTrait copies the arrays (chunks write into them) and keeps exact layers exact", () => {
    const t = trait();
    const s = thumbsFromTrait(t, new Set([1]));
    expect(s.shape).toEqual([L, H, S, S]);
    s.data[0] = 200;
    expect(new Uint8Array(t.maps.data.buffer)[0]).toBe(1); // own copy
    expect(Array.from(s.pending)).toEqual([1, 1, 0, 0, 1, 1]);
    expect(pendingCount(s)).toBe(4);
    expect(s.note).toBe("preview (sampled rows)");
    expect(thumbsFromTrait({})).toBeNull();
    expect(thumbsFromTrait(null)).toBeNull();
    expect(pendingCount(null)).toBe(0);
  });

  it("cellValues: s x s, or sq x sk for cross-attention", () => {
    expect(cellValues([2, 3, 4])).toBe(16);
    expect(cellValues([2, 3, 4, 6])).toBe(24);
  });

  it("a chunk (decoded from its buffers) replaces its layers and clears their pending marks", () => {
    const s = thumbsFromTrait(trait());
    const maps = new Uint8Array(H * S * S).fill(9);
    const sc = Float32Array.from([0.5, 0.25]);
    // Buffers may be windows into larger ones (byteOffset honoured).
    const big = new Uint8Array(3 + maps.length);
    big.set(maps, 3);
    const c = decodeChunk({ type: "thumbs_chunk", layer0: 2, layer1: 3, shape: [1, H, S, S] }, [
      new DataView(big.buffer, 3, maps.length),
      new DataView(sc.buffer),
    ]);
    expect([c.layer0, c.layer1]).toEqual([2, 3]);
    applyLayers(s, c.layer0, c.layer1, c.maps, c.scales);
    expect(Array.from(s.data.subarray(2 * H * S * S))).toEqual(new Array(H * S * S).fill(9));
    expect(Array.from(s.data.subarray(0, H * S * S))).toEqual(new Array(H * S * S).fill(1));
    expect(Array.from(s.scales)).toEqual([0, 1, 10, 11, 0.5, 0.25]);
    expect(Array.from(s.pending)).toEqual([1, 1, 1, 1, 0, 0]);
  });

  it("mergeReply takes the kernel's snapshot except layers a chunk already brought", () => {
    const s = thumbsFromTrait(trait());
    const exact = new Set([0]);
    s.data.fill(7, 0, H * S * S); // layer 0 came as a chunk
    s.pending.fill(0, 0, H);
    const maps = new Uint8Array(L * H * S * S).fill(5);
    const scales = new Float32Array(L * H).fill(2);
    const pend = Uint8Array.from([0, 0, 0, 0, 1, 1]); // the kernel has layers 0 and 1 exact
    const reply = decodeThumbsReply({ type: "thumbs", shape: [L, H, S, S], note: "" }, [maps, scales, pend]);
    mergeReply(s, reply, exact);
    expect(s.data[0]).toBe(7); // kept
    expect(s.data[H * S * S]).toBe(5); // layer 1 from the reply
    expect([...exact].sort()).toEqual([0, 1]);
    expect(Array.from(s.pending)).toEqual([0, 0, 0, 0, 1, 1]);
    expect(Array.from(s.scales)).toEqual([0, 1, 2, 2, 2, 2]);
    expect(s.note).toBe("preview (sampled rows)"); // an empty note keeps the old one
  });

  it("paintCell paints one cell's values on the 0..255 scale", () => {
    const s = thumbsFromTrait(trait(0, true));
    s.data.set([0, 255, 255, 0], (1 * H + 1) * S * S); // layer 1, head 1
    const lut = makeLut([[0, 0, 0], [255, 255, 255]]);
    expect(Array.from(paintCell(s, 1, 1, lut))).toEqual([0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 255]);
    expect(Array.from(paintCell(s, 0, 0, lut)).filter((_, i) => i % 4 === 0)).toEqual([0, 0, 0, 0]);
  });
});

describe("matrix text and keys", () => {
  it("matrixNote: preview progress first, then the cross-attention shape, else nothing", () => {
    expect(matrixNote({ nPending: 2, previewNote: "", L: 2, H: 3, nq: 4, nk: 0 })).toBe(
      "preview thumbnails \u2014 exact: 4 of 6 heads; \u25e5 marks a cell still approximate",
    );
    expect(matrixNote({ nPending: 0, previewNote: "x", L: 2, H: 3, nq: 4, nk: 5 })).toMatch(/^cross-attention: each cell is a 4 \u00d7 5 map/);
    expect(matrixNote({ nPending: 0, previewNote: "x", L: 2, H: 3, nq: 4, nk: 0 })).toBe("");
  });

  it("arrowMove clamps to the grid; other keys are not ours", () => {
    expect(arrowMove("ArrowRight", 1, 2, 3, 3)).toEqual({ layer: 1, head: 2 });
    expect(arrowMove("ArrowLeft", 1, 2, 3, 3)).toEqual({ layer: 1, head: 1 });
    expect(arrowMove("ArrowDown", 2, 0, 3, 3)).toEqual({ layer: 2, head: 0 });
    expect(arrowMove("ArrowUp", 0, 0, 3, 3)).toEqual({ layer: 0, head: 0 });
    expect(arrowMove("ArrowUp", 2, 1, 3, 3)).toEqual({ layer: 1, head: 1 });
    expect(arrowMove("Enter", 0, 0, 3, 3)).toBeNull();
  });

  it("cellText", () => {
    expect(cellText(1, 2, 0.12345, false)).toBe("layer 1 \u00b7 head 2\nmax 0.123");
    expect(cellText(1, 2, 0.5, true)).toBe("layer 1 \u00b7 head 2\nmax 0.500 (preview)");
    // a capped top is the head's percentile, not its max: the tooltip says which
    expect(cellText(1, 2, 0.25, false, 99.5)).toBe("layer 1 \u00b7 head 2\np99.5 0.250");
  });
});
