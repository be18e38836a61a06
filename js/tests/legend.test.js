// legend.js: the colour bar's ticks / gradient / text (pure), and the element it builds,
// with a small document stand-in (node environment, no DOM).
import { describe, expect, it } from "vitest";
import { divergingIndex, divergingLut, normIndex, normT, normValue, themeLut } from "../lib/colormap.js";
import { createLegend, formatValue, gradientCss, legendModel, updateLegend } from "../lib/legend.js";

function fakeDoc() {
  const make = (tag) => {
    const e = {
      tagName: tag.toUpperCase(),
      className: "",
      textContent: "",
      title: "",
      style: {},
      children: [],
      htmlWrites: 0,
      set innerHTML(_v) {
        this.htmlWrites++;
      },
      get firstChild() {
        return this.children[0] ?? null;
      },
      appendChild(c) {
        this.children.push(c);
        return c;
      },
      removeChild(c) {
        this.children.splice(this.children.indexOf(c), 1);
        return c;
      },
    };
    return e;
  };
  return { createElement: make };
}

const allText = (e) => [e.textContent, ...e.children.map(allText)].join(" ");
const walk = (e, out = []) => {
  out.push(e);
  e.children.forEach((c) => walk(c, out));
  return out;
};

describe("normT / normValue", () => {
  it.each(["linear", "sqrt", "log"])("%s: 0 -> 0, max -> 1, monotone, inverse of each other", (norm) => {
    expect(normT(0, 0.3, norm)).toBe(0);
    expect(normT(0.3, 0.3, norm)).toBeCloseTo(1, 12);
    expect(normT(0.6, 0.3, norm)).toBe(1);
    let prev = -1;
    for (let i = 0; i <= 50; i++) {
      const v = (i / 50) * 0.3;
      const t = normT(v, 0.3, norm);
      expect(t).toBeGreaterThan(prev);
      prev = t;
      expect(normValue(t, 0.3, norm)).toBeCloseTo(v, 10);
    }
  });

  it("sqrt and log lift small weights above linear", () => {
    const v = 0.01;
    expect(normT(v, 1, "sqrt")).toBeCloseTo(0.1, 12);
    expect(normT(v, 1, "log")).toBeGreaterThan(normT(v, 1, "sqrt"));
    expect(normT(v, 1, "linear")).toBeCloseTo(0.01, 12);
  });

  it("non-positive max or value -> index 0 (nothing to show)", () => {
    expect(normIndex(0.5, 0, "sqrt")).toBe(0);
    expect(normIndex(-1, 1, "log")).toBe(0);
    expect(normIndex(Number.NaN, 1)).toBe(0);
  });
});

describe("divergingIndex", () => {
  it("centres 0 on the background and saturates at +-max", () => {
    expect(divergingIndex(0, 0.2)).toBe(128);
    expect(divergingIndex(0.2, 0.2)).toBe(255);
    expect(divergingIndex(-0.2, 0.2)).toBe(0);
    expect(divergingIndex(-5, 0.2)).toBe(0);
    expect(divergingIndex(0, 0)).toBe(128);
    const lut = divergingLut("#ffffff");
    const c = [lut[128 * 4], lut[128 * 4 + 1], lut[128 * 4 + 2]];
    c.forEach((x) => expect(x).toBeGreaterThan(240)); // near the white background
    expect(lut[0]).toBeGreaterThan(lut[2]); // negative end is red
    expect(lut[255 * 4 + 2]).toBeGreaterThan(lut[255 * 4]); // positive end is blue
  });
});

describe("formatValue", () => {
  it.each([
    [0, "0"],
    [0.224, "0.22"],
    [0.0123, "0.012"],
    [1.5, "1.5"],
    [0.00015, "1.5e\u22124"],
    [-0.05, "\u22120.05"],
    [250, "250"],
  ])("%s -> %s", (v, s) => expect(formatValue(v)).toBe(s));
});

describe("legendModel", () => {
  it("names range, normalisation and scale; ticks follow the normalisation", () => {
    const m = legendModel({ max: 0.4, norm: "sqrt", scale: "layer", ticks: 3 });
    expect(m.title).toBe("attention weight, sqrt scale, shared per layer");
    expect(m.ticks.map((x) => x.text)).toEqual(["0", "0.1", "0.4"]); // sqrt: the middle is max / 4
    expect(m.ticks.map((x) => x.t)).toEqual([0, 0.5, 1]);
    expect(m.lo).toBe("");
    const lin = legendModel({ max: 0.4, norm: "linear", scale: "head" });
    expect(lin.ticks.map((x) => x.text)).toEqual(["0", "0.2", "0.4"]);
    expect(lin.title).toContain("each head to its own max");
  });

  it("the gradient runs evenly through the LUT (bar drawn in normalised space)", () => {
    for (const norm of ["linear", "sqrt", "log"]) {
      const m = legendModel({ max: 0.3, norm });
      expect(m.stops[0]).toEqual([0, 0]);
      expect(m.stops.at(-1)).toEqual([1, 255]);
      m.stops.forEach(([t, i]) => expect(Math.abs(i - t * 255)).toBeLessThanOrEqual(1));
    }
  });

  it("diverging: symmetric ticks, centre 0, names of who is larger", () => {
    const m = legendModel({ max: 0.05, diverging: true, names: ["fine-tuned", "base"], what: "attention" });
    expect(m.ticks.map((x) => x.text)).toEqual(["\u22120.05", "0", "+0.05"]);
    expect(m.lo).toBe("\u2190 base larger");
    expect(m.hi).toBe("fine-tuned larger \u2192");
    expect(m.title).toContain("centred at 0");
    expect(m.stops[8]).toEqual([0.5, 128]);
  });

  it("rejects an unknown norm", () => {
    expect(() => legendModel({ max: 1, norm: "cube" })).toThrow(/norm must be one of linear, sqrt, log, got cube/);
  });
});

describe("createLegend / updateLegend", () => {
  it("builds an .aw-legend with text via textContent only, and updates in place", () => {
    const doc = fakeDoc();
    const lut = themeLut("#ffffff");
    const e = createLegend(lut, { max: 0.2, norm: "linear", scale: "global" }, doc);
    expect(e.className).toBe("aw-legend");
    expect(allText(e)).toContain("0.2");
    expect(allText(e)).toContain("shared across all layers");
    expect(e.title).toContain("linear scale");
    const bar = walk(e).find((x) => x.className === "aw-legend-bar");
    expect(bar.style.background).toBe(gradientCss(lut, legendModel({ max: 0.2 }).stops));
    expect(bar.style.background.startsWith("linear-gradient(to right, rgb(255, 255, 255) 0.0%")).toBe(true);
    const nTicks = () => walk(e).filter((x) => x.className === "aw-legend-tick").length;
    expect(nTicks()).toBe(3);
    updateLegend(e, divergingLut("#ffffff"), { max: 0.1, diverging: true, names: ["<b>a</b>", "b"], ticks: 5 });
    expect(nTicks()).toBe(5);
    expect(allText(e)).toContain("<b>a</b> larger");
    expect(walk(e).every((x) => x.htmlWrites === 0)).toBe(true);
  });
});
