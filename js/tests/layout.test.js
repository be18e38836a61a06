import { describe, expect, it } from "vitest";
import {
  cellOrigin,
  fitCell,
  hitMatrix,
  labelStride,
  matrixLayout,
  printable,
  truncate,
  visibleLabels,
} from "../lib/layout.js";
import { fullView, hitView, viewLayout } from "../lib/zoom.js";

describe("fitCell", () => {
  it("fits n heads into the available width, within [min, max]", () => {
    expect(fitCell(30 + 12 * 20, 12, { left: 30, gap: 2, min: 10, max: 64 })).toBe(18);
    expect(fitCell(10000, 12)).toBe(64);
    expect(fitCell(50, 12)).toBe(10);
    expect(fitCell(500, 0)).toBe(10);
    expect(fitCell(500, NaN, { min: 7 })).toBe(7);
  });

  it("the fitted grid is never wider than the space when min does not bind", () => {
    for (const avail of [200, 333, 640, 997]) {
      for (const H of [1, 4, 12, 16]) {
        const cell = fitCell(avail, H, { left: 30, min: 1, max: 500 });
        const lay = matrixLayout({ nLayers: 1, nHeads: H, cell, left: 30 });
        expect(lay.width).toBeLessThanOrEqual(avail);
      }
    }
  });
});

describe("matrixLayout / hitMatrix", () => {
  const configs = [
    { nLayers: 6, nHeads: 12, cell: 20 },
    { nLayers: 12, nHeads: 12, cell: 13, gap: 1, left: 30, top: 16 },
    { nLayers: 1, nHeads: 1, cell: 48, gap: 0 },
    { nLayers: 3, nHeads: 7, cell: 1, gap: 3, left: 0, top: 0 },
  ];

  it.each(configs)("every cell's interior hits itself: %j", (cfg) => {
    const lay = matrixLayout(cfg);
    expect(lay.pitch).toBe(cfg.cell + (cfg.gap ?? 2));
    expect(lay.width).toBe(lay.left + cfg.nHeads * lay.pitch);
    expect(lay.height).toBe(lay.top + cfg.nLayers * lay.pitch);
    for (let layer = 0; layer < cfg.nLayers; layer++) {
      for (let head = 0; head < cfg.nHeads; head++) {
        const o = cellOrigin(lay, layer, head);
        const want = { layer, head };
        expect(hitMatrix(lay, o.x, o.y)).toEqual(want); // top-left pixel
        expect(hitMatrix(lay, o.x + cfg.cell / 2, o.y + cfg.cell / 2)).toEqual(want); // centre
        expect(hitMatrix(lay, o.x + cfg.cell - 0.01, o.y + cfg.cell - 0.01)).toEqual(want); // last pixel
      }
    }
  });

  it("gaps between cells hit nothing", () => {
    const lay = matrixLayout({ nLayers: 2, nHeads: 2, cell: 10, gap: 2, left: 5, top: 5 });
    const o = cellOrigin(lay, 0, 0);
    expect(hitMatrix(lay, o.x + 10, o.y + 5)).toBeNull(); // gap to the right
    expect(hitMatrix(lay, o.x + 11.9, o.y + 5)).toBeNull();
    expect(hitMatrix(lay, o.x + 12, o.y + 5)).toEqual({ layer: 0, head: 1 });
    expect(hitMatrix(lay, o.x + 5, o.y + 10)).toBeNull(); // gap below
  });

  it("labels and everything outside the grid hit nothing", () => {
    const lay = matrixLayout({ nLayers: 6, nHeads: 12, cell: 20, left: 28, top: 18 });
    const outside = [
      [0, 0],
      [27.9, 30], // layer labels
      [40, 17.9], // head labels
      [-5, 30],
      [40, -5],
      [lay.width, 30],
      [lay.width + 100, 30],
      [40, lay.height],
      [40, lay.height + 100],
      [NaN, 30],
    ];
    for (const [x, y] of outside) expect(hitMatrix(lay, x, y)).toBeNull();
  });
});

// The whole-map heatmap layout (was layout.heatLayout / hitHeat, now the full view of zoom.js).
const heatLayout = ({ n, size, left, top }) => viewLayout({ view: fullView(n), size, left, top });

describe("full-view viewLayout / hitView (the heatmap without zoom)", () => {
  it.each([
    { n: 13, size: 390, left: 60, top: 60 },
    { n: 7, size: 100, left: 33, top: 21 }, // non-integer cell size
    { n: 512, size: 640, left: 110, top: 110 },
  ])("every cell, row label and column label hits itself: %j", (cfg) => {
    const lay = heatLayout(cfg);
    expect(lay.cellW).toBe(cfg.size / cfg.n);
    expect(lay.cellH).toBe(cfg.size / cfg.n);
    expect([lay.width, lay.height]).toEqual([cfg.left + cfg.size, cfg.top + cfg.size]);
    const c = lay.cellW;
    for (let i = 0; i < cfg.n; i++) {
      const y = lay.top + (i + 0.5) * c;
      const x = lay.left + (i + 0.5) * c;
      for (let j = 0; j < cfg.n; j += cfg.n > 64 ? 37 : 1) {
        expect(hitView(lay, lay.left + (j + 0.5) * c, y)).toEqual({ kind: "cell", row: i, col: j });
      }
      expect(hitView(lay, lay.left - 1, y)).toEqual({ kind: "row", row: i });
      expect(hitView(lay, 0, y)).toEqual({ kind: "row", row: i });
      expect(hitView(lay, x, lay.top - 1)).toEqual({ kind: "col", col: i });
      expect(hitView(lay, x, 0)).toEqual({ kind: "col", col: i });
    }
  });

  it("the edges of the map stay inside the last row/column", () => {
    const lay = heatLayout({ n: 7, size: 100, left: 33, top: 21 });
    const end = lay.left + lay.size - 1e-9;
    expect(hitView(lay, end, lay.top + lay.size - 1e-9)).toEqual({ kind: "cell", row: 6, col: 6 });
    expect(hitView(lay, lay.left, lay.top)).toEqual({ kind: "cell", row: 0, col: 0 });
  });

  it("out of bounds -> null (corner, beyond the map, negative)", () => {
    const lay = heatLayout({ n: 10, size: 200, left: 50, top: 40 });
    const outside = [
      [10, 10], // top-left corner between the label bands
      [lay.left + lay.size, lay.top + 5], // right edge, exclusive
      [lay.left + 5, lay.top + lay.size], // bottom edge, exclusive
      [lay.width + 50, lay.height + 50],
      [-1, lay.top + 5], // left of the row labels
      [lay.left + 5, -1], // above the column labels
      [lay.left + lay.size + 5, 10], // right of the column labels
      [10, lay.top + lay.size + 5], // below the row labels
    ];
    for (const [x, y] of outside) expect(hitView(lay, x, y)).toBeNull();
  });
});

describe("labelStride / visibleLabels", () => {
  it("is 1 when cells are taller than the text, larger when they are not", () => {
    expect(labelStride(36, 11)).toBe(1);
    expect(labelStride(12.65, 11)).toBe(1);
    expect(labelStride(6, 11)).toBe(3);
    expect(labelStride(0, 11)).toBe(Infinity);
    expect(labelStride(NaN, 11)).toBe(Infinity);
  });

  // The heatmap draws labels 11 px high on cells size/T px apart.
  it.each([
    [512, 640],
    [512, 120],
    [512, 2000],
    [100, 640],
    [13, 390],
    [1, 120],
  ])("T=%i on %i px: drawn labels never overlap, selection and hover included", (n, size) => {
    const font = 11;
    const cell = size / n;
    const stride = labelStride(cell, font);
    expect(Number.isInteger(stride) && stride >= 1).toBe(true);
    for (const always of [[], [0], [5], [n - 1], [250 % n, 251 % n], [3, 200 % n, 511 % n]]) {
      const shown = visibleLabels(n, stride, always);
      const valid = always.filter((a) => a < n);
      for (const a of valid) expect(shown).toContain(a);
      const regular = shown.filter((i) => !valid.includes(i));
      // Each regular label is a full text height away from its neighbours (shown is sorted,
      // so the neighbours are the nearest labels on either side).
      expect(shown).toEqual([...shown].sort((a, b) => a - b));
      let tooClose = 0;
      for (let k = 1; k < shown.length; k++) {
        const involvesRegular = regular.includes(shown[k]) || regular.includes(shown[k - 1]);
        if (involvesRegular && (shown[k] - shown[k - 1]) * cell < font) tooClose++;
      }
      expect(tooClose).toBe(0);
      // ... and thinning still labels the axis: no gap wider than 2 strides without a label.
      const all = [...shown, n];
      for (let k = 1; k < all.length; k++) expect(all[k] - all[k - 1]).toBeLessThanOrEqual(2 * stride);
    }
  });

  it("at T=512 in 640 px, draws about one label per text height", () => {
    const stride = labelStride(640 / 512, 11);
    expect(stride).toBe(11);
    const shown = visibleLabels(512, stride);
    expect(shown).toHaveLength(47);
    expect(shown.slice(0, 3)).toEqual([0, 11, 22]);
  });

  it("ignores always-shown values that are not valid indices, and de-duplicates", () => {
    expect(visibleLabels(5, 1, [null, undefined, -1, 5, 2.5, "3", 2, 2])).toEqual([0, 1, 2, 3, 4]);
    expect(visibleLabels(10, Infinity, [4, 4, null])).toEqual([4]);
    expect(visibleLabels(10, Infinity)).toEqual([]);
  });
});

describe("truncate", () => {
  it("keeps short labels and shortens long ones to exactly max characters", () => {
    expect(truncate("cat", 14)).toBe("cat");
    expect(truncate("abcdefghijklmn", 14)).toBe("abcdefghijklmn");
    const long = truncate("a".repeat(500), 14);
    expect(long).toBe(`${"a".repeat(13)}\u2026`);
    expect(Array.from(long)).toHaveLength(14);
  });

  it("never exceeds max, even for max 1 or 0", () => {
    expect(truncate("abc", 1)).toBe("\u2026");
    expect(Array.from(truncate("abc", 0)).length).toBeLessThanOrEqual(1);
  });

  it("does not split an emoji (surrogate pair) in half", () => {
    const t = truncate("\u{1F600}\u{1F600}\u{1F600}\u{1F600}", 3);
    expect(t).toBe("\u{1F600}\u{1F600}\u2026");
    expect(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(t)).toBe(false);
  });

  it("stringifies non-strings", () => {
    expect(truncate(12345, 3)).toBe("12\u2026");
    expect(truncate(null, 10)).toBe("null");
  });
});

describe("printable", () => {
  it("makes newlines and tabs visible as escapes", () => {
    expect(printable("a\nb\tc")).toBe("a\\nb\\tc");
    expect(printable("\n\n")).toBe("\\n\\n");
  });

  it("replaces other control characters (incl. \\r, NUL, ESC, DEL) with U+FFFD", () => {
    expect(printable("x\r\u0000\u001b[31m\u007fy")).toBe("x\ufffd\ufffd\ufffd[31m\ufffdy");
    expect(/[\u0000-\u001f\u007f]/.test(printable(String.fromCharCode(...Array.from({ length: 32 }, (_, i) => i))))).toBe(
      false,
    );
  });

  it("leaves ordinary and non-ASCII text (tokenizer markers, CJK, emoji) alone", () => {
    for (const tok of ["\u0120the", "##ing", "\u2581cat", "猫", "\u{1F600}", "<s>", "[CLS]", " "]) {
      expect(printable(tok)).toBe(tok);
    }
  });

  it("a long token with control characters is printable, then truncated to the label width", () => {
    const label = truncate(printable(`${"\n".repeat(20)}end`), 14);
    expect(Array.from(label)).toHaveLength(14);
    expect(label.startsWith("\\n\\n")).toBe(true);
  });
});

describe("printable (bidi and C1 controls)", () => {
  it("neutralises right-to-left overrides and C1 control characters", () => {
    const out = printable("abc\u202edcba\u0085x\u2066y");
    expect(out).not.toMatch(/[\u202e\u0085\u2066]/);
    expect(out).toBe("abc\ufffddcba\ufffdx\ufffdy");
  });
});
