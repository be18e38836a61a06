// ensureStyles in hosts that draw each view in a shadow root (marimo): the stylesheet goes
// into that root, once per root; a view in the plain document still gets one sheet in <head>.
import { afterEach, describe, expect, it, vi } from "vitest";
import { ensureStyles } from "../lib/dom.js";

function container() {
  const byId = new Map();
  const children = [];
  return {
    children,
    getElementById: (id) => byId.get(id) || null,
    appendChild(c) {
      if (c.id) byId.set(c.id, c);
      children.push(c);
      return c;
    },
  };
}

function fakeDocument() {
  const doc = container();
  doc.head = container();
  doc.getElementById = (id) => doc.head.getElementById(id);
  doc.createElement = (tag) => ({ tagName: tag.toUpperCase(), id: "", textContent: "" });
  return doc;
}

afterEach(() => vi.unstubAllGlobals());

describe("ensureStyles", () => {
  it("puts the sheet in the view's shadow root, once per root", () => {
    const doc = fakeDocument();
    vi.stubGlobal("document", doc);
    const rootA = { ...container(), host: {} };
    const rootB = { ...container(), host: {} };
    const inA = { getRootNode: () => rootA };
    ensureStyles(inA);
    ensureStyles(inA);
    ensureStyles({ getRootNode: () => rootB });
    expect(rootA.children.map((c) => c.id)).toEqual(["aw-styles"]);
    expect(rootB.children.map((c) => c.id)).toEqual(["aw-styles"]);
    expect(rootA.children[0].textContent).toContain(".aw-tip");
    expect(doc.head.children).toEqual([]);
  });

  it("uses <head> for views in the document (and without an element)", () => {
    const doc = fakeDocument();
    vi.stubGlobal("document", doc);
    ensureStyles({ getRootNode: () => doc });
    ensureStyles();
    expect(doc.head.children.map((c) => c.id)).toEqual(["aw-styles"]);
  });
});
