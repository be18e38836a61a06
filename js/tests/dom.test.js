// dom.js without a DOM: the helpers only touch a few methods of document / elements, so
// small stand-ins (vi.stubGlobal) check what matters: token text goes in as textContent,
// never as HTML; traits are saved once; the canvas is sized for the pixel ratio.
import { afterEach, describe, expect, it, vi } from "vitest";
import { cssVar, disposer, ensureStyles, h, listen, localPoint, setTraits, sizeCanvas, theme, tooltip } from "../lib/dom.js";
import { fakeModel } from "./fakes.js";

function fakeElement(tag) {
  return {
    tagName: tag.toUpperCase(),
    className: "",
    textContent: "",
    id: "",
    style: {},
    children: [],
    htmlWrites: 0,
    set innerHTML(_v) {
      this.htmlWrites++;
    },
    appendChild(c) {
      this.children.push(c);
      return c;
    },
  };
}

function fakeDocument() {
  const byId = new Map();
  const head = fakeElement("head");
  const created = [];
  const appendChild = head.appendChild.bind(head);
  head.appendChild = (c) => {
    if (c.id) byId.set(c.id, c);
    return appendChild(c);
  };
  return {
    head,
    created,
    createElement(tag) {
      const e = fakeElement(tag);
      created.push(e);
      return e;
    },
    getElementById: (id) => byId.get(id) ?? null,
  };
}


afterEach(() => {
  vi.unstubAllGlobals();
});

describe("setTraits", () => {
  it("sets changed traits and saves once", () => {
    const m = fakeModel({ layer: 0, head: 0, token: null });
    expect(setTraits(m, { layer: 2, head: "mean" })).toBe(true);
    expect(m.state).toEqual({ layer: 2, head: "mean", token: null });
    expect(m.saves).toBe(1);
  });

  it("does nothing (no save, no echo to the kernel) when nothing changes", () => {
    const m = fakeModel({ layer: 1, token: null });
    expect(setTraits(m, { layer: 1, token: null })).toBe(false);
    expect(m.saves).toBe(0);
  });

  it("token 0 and null are different values", () => {
    const m = fakeModel({ token: null });
    expect(setTraits(m, { token: 0 })).toBe(true);
    expect(setTraits(m, { token: null })).toBe(true);
    expect(m.saves).toBe(2);
  });
});

describe("h", () => {
  it("puts untrusted token text in textContent, never innerHTML", () => {
    const doc = fakeDocument();
    vi.stubGlobal("document", doc);
    const evil = '<img src=x onerror="alert(1)">';
    const e = h("span", "aw-tok", evil);
    expect(e.textContent).toBe(evil);
    expect(e.className).toBe("aw-tok");
    expect(e.htmlWrites).toBe(0);
  });

  it("stringifies text and leaves it unset when omitted", () => {
    vi.stubGlobal("document", fakeDocument());
    expect(h("span", "", 0).textContent).toBe("0");
    const e = h("div");
    expect(e.textContent).toBe("");
    expect(e.className).toBe("");
  });
});

describe("ensureStyles", () => {
  it("injects one stylesheet per document", () => {
    const doc = fakeDocument();
    vi.stubGlobal("document", doc);
    ensureStyles();
    ensureStyles();
    const styles = doc.head.children.filter((c) => c.tagName === "STYLE");
    expect(styles).toHaveLength(1);
    expect(styles[0].id).toBe("aw-styles");
    expect(styles[0].textContent).toContain(".aw-panel");
  });
});

describe("tooltip", () => {
  it("shows text as text, offset from the pointer, and hides", () => {
    vi.stubGlobal("document", fakeDocument());
    const panel = fakeElement("div");
    const tip = tooltip(panel);
    expect(panel.children).toContain(tip.el);
    tip.show("<b>cat</b> [2]", 10, 20);
    expect(tip.el.textContent).toBe("<b>cat</b> [2]");
    expect(tip.el.htmlWrites).toBe(0);
    expect(tip.el.style).toMatchObject({ display: "block", left: "22px", top: "32px" });
    tip.hide();
    expect(tip.el.style.display).toBe("none");
  });
});

describe("cssVar / theme", () => {
  it("reads --jp-* variables and falls back when they are unset", () => {
    const vars = { "--jp-layout-color0": "  #111111 ", "--jp-ui-font-color1": "" };
    vi.stubGlobal("getComputedStyle", () => ({ getPropertyValue: (n) => vars[n] ?? "" }));
    const el = {};
    expect(cssVar(el, "--jp-layout-color0", "#fff")).toBe("#111111");
    expect(cssVar(el, "--jp-ui-font-color1", "#1f1f1f")).toBe("#1f1f1f");
    const th = theme(el);
    expect(th.background).toBe("#111111");
    expect(th.foreground).toBe("#1f1f1f");
    expect(th.code).toBe("monospace");
  });
});

describe("sizeCanvas", () => {
  function fakeCanvas() {
    const ctx = { transform: null, setTransform: (...a) => (ctx.transform = a) };
    return { width: 0, height: 0, style: {}, ctx, getContext: () => ctx };
  }

  it("without a window: 1 device px per CSS px", () => {
    const c = fakeCanvas();
    const ctx = sizeCanvas(c, 300.4, 200);
    expect([c.width, c.height]).toEqual([300, 200]);
    expect(c.style).toEqual({ width: "300.4px", height: "200px" });
    expect(ctx.transform).toEqual([1, 0, 0, 1, 0, 0]);
  });

  it("scales the backing store by devicePixelRatio and draws in CSS px", () => {
    vi.stubGlobal("window", { devicePixelRatio: 2 });
    const c = fakeCanvas();
    const ctx = sizeCanvas(c, 150, 80);
    expect([c.width, c.height]).toEqual([300, 160]);
    expect(c.style).toEqual({ width: "150px", height: "80px" });
    expect(ctx.transform).toEqual([2, 0, 0, 2, 0, 0]);
  });

  it("never sizes a canvas to 0", () => {
    const c = fakeCanvas();
    sizeCanvas(c, 0, 0.2);
    expect([c.width, c.height]).toEqual([1, 1]);
  });
});

describe("localPoint", () => {
  it("is the pointer position relative to the element's box", () => {
    const el = { getBoundingClientRect: () => ({ left: 100, top: 40 }) };
    expect(localPoint(el, { clientX: 130, clientY: 45.5 })).toEqual({ x: 30, y: 5.5 });
  });
});

describe("onWidthChange", () => {
  it("redraws only when the width really changes, and stops when asked", async () => {
    const { onWidthChange } = await import("../lib/dom.js");
    let fire = null;
    let disconnected = false;
    globalThis.ResizeObserver = class {
      constructor(cb) {
        fire = cb;
      }
      observe() {}
      disconnect() {
        disconnected = true;
      }
    };
    try {
      const panel = { clientWidth: 300 };
      let draws = 0;
      const stop = onWidthChange(panel, () => draws++);
      fire();
      expect(draws).toBe(0);
      panel.clientWidth = 420;
      fire();
      fire();
      expect(draws).toBe(1);
      stop();
      expect(disconnected).toBe(true);
    } finally {
      delete globalThis.ResizeObserver;
    }
  });

  it("is a no-op without ResizeObserver", async () => {
    const { onWidthChange } = await import("../lib/dom.js");
    const stop = onWidthChange({ clientWidth: 1 }, () => {
      throw new Error("should not draw");
    });
    expect(typeof stop).toBe("function");
    stop();
  });
});

describe("listen / disposer", () => {
  /** A DOM-like target that records add/remove calls. */
  function fakeTarget() {
    const on = new Map();
    return {
      on,
      addEventListener(ev, fn) {
        on.set(ev, [...(on.get(ev) || []), fn]);
      },
      removeEventListener(ev, fn) {
        on.set(ev, (on.get(ev) || []).filter((f) => f !== fn));
      },
      fire(ev, arg) {
        for (const fn of on.get(ev) || []) fn(arg);
      },
    };
  }

  it("attaches a table of DOM listeners and detaches all of them with one call", () => {
    const t = fakeTarget();
    const got = [];
    const stop = listen(t, { click: (e) => got.push(["click", e]), keydown: (e) => got.push(["key", e]), mouseup: null });
    t.fire("click", 1);
    t.fire("keydown", 2);
    expect(got).toEqual([["click", 1], ["key", 2]]);
    expect(t.on.has("mouseup")).toBe(false); // null entries are skipped
    stop();
    stop(); // twice is harmless
    t.fire("click", 3);
    expect(got.length).toBe(2);
    expect(t.on.get("click")).toEqual([]);
    expect(t.on.get("keydown")).toEqual([]);
  });

  it("uses on / off for a model", () => {
    const model = fakeModel({});
    const fn = () => {};
    const stop = listen(model, { "msg:custom": fn, "change:layer": fn });
    expect(model.listeners("msg:custom")).toBe(1);
    expect(model.listeners("change:layer")).toBe(1);
    stop();
    expect(model.listeners("msg:custom")).toBe(0);
    expect(model.listeners("change:layer")).toBe(0);
  });

  it("disposer runs what it collected, last first, once", () => {
    const order = [];
    const d = disposer();
    d.add(() => order.push(1), null, () => order.push(2));
    d.add(() => order.push(3));
    d.dispose();
    d.dispose();
    expect(order).toEqual([3, 2, 1]);
  });
});
