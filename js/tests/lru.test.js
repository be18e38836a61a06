import { describe, expect, it } from "vitest";
import { Lru } from "../lib/lru.js";

describe("Lru", () => {
  it("evicts the least recently set entry first", () => {
    const c = new Lru(3);
    c.set("a", 1);
    c.set("b", 2);
    c.set("c", 3);
    c.set("d", 4);
    expect(c.size).toBe(3);
    expect(c.has("a")).toBe(false);
    expect([...c.map.keys()]).toEqual(["b", "c", "d"]);
  });

  it("get refreshes recency, so the untouched entry goes first", () => {
    const c = new Lru(3);
    c.set("a", 1);
    c.set("b", 2);
    c.set("c", 3);
    expect(c.get("a")).toBe(1);
    c.set("d", 4);
    expect(c.has("a")).toBe(true);
    expect(c.has("b")).toBe(false);
    c.set("e", 5);
    expect([...c.map.keys()]).toEqual(["a", "d", "e"]);
  });

  it("re-setting a key updates it, refreshes it and does not grow the map", () => {
    const c = new Lru(2);
    c.set("a", 1);
    c.set("b", 2);
    c.set("a", 10);
    expect(c.size).toBe(2);
    c.set("c", 3);
    expect(c.get("a")).toBe(10);
    expect(c.has("b")).toBe(false);
  });

  it("misses are undefined and do not insert; falsy values are cached", () => {
    const c = new Lru(2);
    expect(c.get("x")).toBeUndefined();
    expect(c.size).toBe(0);
    c.set("zero", 0);
    expect(c.get("zero")).toBe(0);
    expect(c.has("zero")).toBe(true);
  });

  it("defaults to 64 entries", () => {
    const c = new Lru();
    for (let i = 0; i < 100; i++) c.set(i, i);
    expect(c.size).toBe(64);
    expect(c.has(35)).toBe(false);
    expect(c.has(36)).toBe(true);
  });
});
