import { describe, expect, it } from "vitest";
import { divergingRgb, divergingStops, legendGradient, textColour } from "../agreement/scale.js";
import style from "../../attn_widgets/style.json";

describe("diverging scale (style.json diverging)", () => {
  const light = divergingStops("#ffffff");
  const dark = divergingStops("#111111");
  it("picks the stops by background", () => {
    expect(light).toEqual(style.diverging.light);
    expect(dark).toEqual(style.diverging.dark);
  });
  it("maps -1, 0, +1 to the stops and halves linearly", () => {
    expect(divergingRgb(-1, light)).toEqual(light.negative);
    expect(divergingRgb(0, light)).toEqual(light.zero);
    expect(divergingRgb(1, light)).toEqual(light.positive);
    expect(divergingRgb(5, light)).toEqual(light.positive); // clamped
    const half = divergingRgb(0.5, light);
    half.forEach((c, i) => expect(c).toBe(Math.round((light.zero[i] + light.positive[i]) / 2)));
    expect(divergingRgb(-0.5, light)).not.toEqual(divergingRgb(0.5, light));
  });
  it("shows NaN / null as missing", () => {
    expect(divergingRgb(null, dark)).toEqual(dark.missing);
    expect(divergingRgb(Number.NaN, dark)).toEqual(dark.missing);
  });
  it("text reads on the cell and the legend runs negative -> positive", () => {
    expect(textColour(light.zero)).toBe("#111");
    expect(textColour([5, 30, 90])).toBe("#fff");
    expect(legendGradient(light)).toBe(
      `linear-gradient(to right, rgb(${light.negative.join(", ")}), rgb(${light.zero.join(", ")}), rgb(${light.positive.join(", ")}))`,
    );
  });
});
