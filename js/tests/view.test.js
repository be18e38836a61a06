import { describe, expect, it } from "vitest";
import { clearHover, firstDraw, onTraits } from "../lib/view.js";

describe("view helpers", () => {
  it("onTraits makes a change:<name> table", () => {
    const fn = () => {};
    expect(onTraits(["layer", "head"], fn)).toEqual({ "change:layer": fn, "change:head": fn });
  });

  it("clearHover forgets the hover, hides the tooltip and redraws", () => {
    const calls = [];
    const v = { hover: { row: 1 }, visionHover: { row: 2 }, tip: { hide: () => calls.push("hide") }, draw: () => calls.push("draw") };
    clearHover(v, "visionHover")();
    expect([v.hover, v.visionHover, calls]).toEqual([{ row: 1 }, null, ["hide", "draw"]]);
    clearHover(v)();
    expect(v.hover).toBeNull();
  });

  it("firstDraw says a failure on the error line instead of throwing", () => {
    const said = [];
    const v = { errors: { set: (source, text) => said.push([source, text]) } };
    firstDraw(v, "matrix", () => {
      throw new Error("bad buffer");
    });
    firstDraw(v, "flow", () => {});
    expect(said).toEqual([["view", "could not draw the matrix: bad buffer"]]);
  });
});
