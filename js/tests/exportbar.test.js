// exportbar.js pure parts: export scale, file names, buffers, data URLs, PNG header,
// canvas -> Blob (with fake canvases), side-by-side layout and the <a download> helper.
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  EXPORT_MAX_SIDE,
  canvasToBlob,
  dataUrlToBytes,
  download,
  exportName,
  exportScale,
  safePart,
  sideBySide,
} from "../lib/exportbar.js";
import { pixelRatio, withPixelRatio } from "../lib/dom.js";

// A 3 x 2 PNG header: signature, IHDR length 13, "IHDR", width 3, height 2, ...
const PNG_HEAD = [137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 3, 0, 0, 0, 2, 8, 6, 0, 0, 0];

afterEach(() => {
  vi.useRealTimers();
});

describe("exportScale", () => {
  it("is at least 2x, or the screen's ratio if higher", () => {
    expect(exportScale(400, 300, 1)).toBe(2);
    expect(exportScale(400, 300, 3)).toBe(3);
    expect(exportScale(400, 300, undefined)).toBe(2);
  });
  it("caps the longest side", () => {
    const s = exportScale(6000, 100, 1);
    expect(6000 * s).toBeCloseTo(EXPORT_MAX_SIDE);
    expect(exportScale(100, 9000, 2, { maxSide: 4500 })).toBeCloseTo(0.5);
  });
});

describe("withPixelRatio", () => {
  it("overrides the canvas ratio inside the call only, even if it throws", () => {
    const before = pixelRatio();
    expect(withPixelRatio(2.5, () => pixelRatio())).toBe(2.5);
    expect(() =>
      withPixelRatio(4, () => {
        throw new Error("x");
      }),
    ).toThrow("x");
    expect(pixelRatio()).toBe(before);
  });
});

describe("file names", () => {
  it("name the panel and its selection", () => {
    expect(exportName("heatmap", { model: "MiniLM", layer: 2, head: 7, token: 3 }, "png")).toBe(
      "MiniLM-heatmap-L2-H7-t3.png",
    );
    expect(exportName("matrix", { layer: 0, head: "mean" }, "svg")).toBe("attention-matrix-L0-Hmean.svg");
    expect(exportName("flow", { method: "rollout", token: null })).toBe("attention-flow-rollout.png");
  });
  it("never carry path separators or odd characters", () => {
    expect(safePart("../../etc/passwd")).toBe("etc_passwd");
    expect(safePart("sentence-transformers/all-MiniLM-L6-v2")).toBe("sentence-transformers_all-MiniLM-L6-v2");
    expect(safePart("")).toBe("attention");
    expect(safePart(null)).toBe("attention");
    expect(exportName("x", { model: "a b<c>" }, "png")).toBe("a_b_c-x.png");
  });
});

describe("buffers", () => {
  it("dataUrlToBytes decodes base64 and plain data URLs", () => {
    const url = `data:image/png;base64,${Buffer.from(PNG_HEAD).toString("base64")}`;
    const { type, bytes } = dataUrlToBytes(url);
    expect(type).toBe("image/png");
    expect(Array.from(bytes)).toEqual(PNG_HEAD);
    expect(new TextDecoder().decode(dataUrlToBytes("data:,a%20b").bytes)).toBe("a b");
    expect(() => dataUrlToBytes("blob:xyz")).toThrow(/data: URL/);
  });
});

describe("canvasToBlob", () => {
  it("uses toBlob when it works", async () => {
    const blob = new Blob([Uint8Array.from(PNG_HEAD)], { type: "image/png" });
    const canvas = { toBlob: (cb, type) => cb(type === "image/png" ? blob : null), toDataURL: () => "" };
    expect(await canvasToBlob(canvas)).toBe(blob);
  });
  it("falls back to toDataURL when toBlob is missing or yields null", async () => {
    const url = `data:image/png;base64,${Buffer.from(PNG_HEAD).toString("base64")}`;
    for (const canvas of [{ toDataURL: () => url }, { toBlob: (cb) => cb(null), toDataURL: () => url }]) {
      const blob = await canvasToBlob(canvas);
      expect(blob.type).toBe("image/png");
      expect(Array.from(new Uint8Array(await blob.arrayBuffer()))).toEqual(PNG_HEAD); // the very bytes of the data URL
    }
  });
  it("rejects when neither works", async () => {
    await expect(canvasToBlob({ toBlob: (cb) => cb(null), toDataURL: () => "data:" })).rejects.toThrow();
  });
});

describe("sideBySide", () => {
  it("places images left to right with a gap, under a caption band", () => {
    const lay = sideBySide(
      [
        { width: 100, height: 50 },
        { width: 80, height: 70 },
      ],
      10,
      20,
    );
    expect(lay).toEqual({ width: 190, height: 90, at: [{ x: 0, y: 20 }, { x: 110, y: 20 }] });
    expect(sideBySide([{ width: 5, height: 4 }])).toEqual({ width: 5, height: 4, at: [{ x: 0, y: 0 }] });
  });
});

describe("download", () => {
  function fakeDoc() {
    const body = {
      kids: [],
      appendChild(e) {
        this.kids.push(e);
        e.parent = this;
        return e;
      },
    };
    const clicks = [];
    return {
      body,
      clicks,
      createElement(tag) {
        return {
          tag,
          style: {},
          click() {
            clicks.push({ href: this.href, download: this.download, attached: body.kids.includes(this) });
          },
          remove() {
            body.kids = body.kids.filter((k) => k !== this);
          },
        };
      },
    };
  }

  it("clicks a hidden <a download> on a blob URL, removes it, revokes the URL later", () => {
    vi.useFakeTimers();
    const doc = fakeDoc();
    const urls = { made: [], revoked: [], createObjectURL(b) { this.made.push(b); return "blob:fake/1"; }, revokeObjectURL(u) { this.revoked.push(u); } };
    const blob = new Blob(["<svg/>"], { type: "image/svg+xml" });
    const href = download(blob, "x.svg", { doc, urls, revokeAfterMs: 1000 });
    expect(href).toBe("blob:fake/1");
    expect(urls.made).toEqual([blob]);
    expect(doc.clicks).toEqual([{ href: "blob:fake/1", download: "x.svg", attached: true }]);
    expect(doc.body.kids).toEqual([]);
    expect(urls.revoked).toEqual([]); // not at once: the browser reads the blob after the click
    vi.advanceTimersByTime(1000);
    expect(urls.revoked).toEqual(["blob:fake/1"]);
  });
});
