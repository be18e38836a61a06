// Contract between the Python kernel side and the JS views: the fixtures are written by
// the real Python handlers and renderers (tests/contract/generate.py; format in
// tests/contract/README.md). Here the JS side reads them through the code the views use
// (protocol client and pushes, codec, the heatmap cache, matrix thumbnails, flow graphs)
// and computes the colours and label choices Python computed from attn_widgets/style.json.
import { describe, expect, it } from "vitest";
import messages from "../../tests/contract/fixtures/messages.json";
import cases from "../../tests/contract/fixtures/style_cases.json";
import spec from "../../attn_widgets/style.json";
import { fitRow } from "../lib/flowlayout.js";
import { asBytes, decode } from "../lib/codec.js";
import { divergingLut, divergingStops, lutIndex, makeLut, normIndex, textOn, themeLut, themeStops } from "../lib/colormap.js";
import { bucketEdges, bucketStyle } from "../lib/flowlayout.js";
import { labelStride, printable, truncate, visibleLabels } from "../lib/layout.js";
import { createClient, MSG, onPush } from "../lib/protocol.js";
import { revive } from "../lib/staticmodel.js";
import { SIZES } from "../lib/style.js";
import { rangeLabels, tileStep } from "../lib/zoom.js";
import { makeRecord, planMap, createMapCache, tileRecord } from "../heatmap/cache.js";
import { mapSize } from "../heatmap/draw.js";
import { codeTable, decodeChunk, decodeThumbsReply, displayMax, signedIndex } from "../matrix/thumbs.js";
import { decodeGraph } from "../flow/graph.js";
import { fakeModel } from "./fakes.js";

const byName = Object.fromEntries(messages.messages.map((m) => [m.name, { ...m, buffers: revive(m.buffers) }]));
const expectValues = (got, want) => {
  expect(Array.from(got.shape ?? [])).toEqual(want.shape);
  expect(Array.from(got.data ?? got)).toEqual(want.values);
};
/** "rgb(r, g, b)" of a style.json theme name or a "#rrggbb" key. */
const css = (bg) => {
  if (bg.startsWith("#")) return bg;
  const [r, g, b] = spec.themes[bg].background;
  return `rgb(${r}, ${g}, ${b})`;
};

describe("contract: messages", () => {
  it("the fixtures hold every message of the protocol table", () => {
    const types = new Set(messages.messages.map((m) => m.content.type).filter(Boolean)); // notices have no reply
    for (const t of [MSG.MAP, MSG.TILE, MSG.THUMBS, MSG.THUMBS_CHUNK, MSG.SVG, MSG.ERROR]) expect(types.has(t)).toBe(true);
    const requests = new Set(messages.messages.map((m) => m.request && m.request.type).filter(Boolean));
    for (const t of [MSG.GET_MAP, MSG.GET_TILE, MSG.GET_THUMBS, MSG.GET_SVG, MSG.MAP_ACK]) expect(requests.has(t)).toBe(true);
    for (const t of types) expect(Object.values(MSG)).toContain(t);
  });

  it("the heatmap sends get_map / get_tile with exactly the fields Python reads", () => {
    for (const name of ["get_map", "get_map (aggregate)", "get_tile"]) {
      const { request } = byName[name];
      const { type, id: _id, ...fields } = request;
      const full = type === MSG.GET_MAP;
      const n = 6;
      const view = full ? { r0: 0, r1: n, c0: 0, c1: n } : { r0: fields.r0, r1: fields.r1, c0: fields.c0, c1: fields.c1 };
      const plan = planMap(createMapCache(), null, { layer: fields.layer, head: fields.head, view, nq: n, nk: n });
      expect(plan.type).toBe(type);
      expect(plan.payload).toEqual(fields);
    }
  });

  it("replies resolve the request with the same id; the JS codec reads their buffers", async () => {
    const model = fakeModel();
    const client = createClient(model);
    for (const name of ["get_map", "get_map (aggregate)", "get_tile", "get_thumbs", "get_svg"]) {
      const m = byName[name];
      const { type, id: _id, ...payload } = m.request;
      const pending = client.request(type, payload);
      const sent = model.sent.at(-1).content;
      expect({ ...sent, id: m.request.id }).toEqual(m.request); // same fields, our own id
      model.emit({ ...m.content, id: sent.id }, m.buffers);
      const { msg, buffers } = await pending;
      expect(msg.type).toBe(m.content.type);
      expect(buffers.length).toBe(m.buffers.length);
    }
    client.dispose();
  });

  it("map and tile replies decode (float16, byteOffset-safe) into the heatmap's records", () => {
    for (const name of ["get_map", "get_map (aggregate)"]) {
      const m = byName[name];
      const rec = makeRecord("k", "k", m.content, m.buffers[0]);
      expect([rec.rows, rec.cols, rec.step]).toEqual([...m.content.shape, 1]);
      expectValues({ data: rec.data, shape: m.content.shape }, m.decoded.buffers[0]);
    }
    const t = byName.get_tile;
    const rec = tileRecord(t.content, t.buffers[0]);
    expect(rec.key).toBe(`${t.request.layer}:${t.request.head}|${t.request.r0}:${t.request.r1}:${t.request.c0}:${t.request.c1}`);
    expect([rec.r0, rec.c0, rec.step, rec.tile]).toEqual([t.content.r0, t.content.c0, t.content.step, true]);
    expectValues({ data: rec.data, shape: t.content.shape }, t.decoded.buffers[0]);
    // The same bytes as a window into a larger buffer decode the same.
    const bytes = asBytes(t.buffers[0]);
    const big = new Uint8Array(bytes.length + 3);
    big.set(bytes, 3);
    expect(Array.from(decode(t.content, new DataView(big.buffer, 3, bytes.length)).data)).toEqual(t.decoded.buffers[0].values);
  });

  it("error replies reject with Python's message", async () => {
    const model = fakeModel();
    const client = createClient(model);
    for (const name of ["error (bad layer)", "error (unknown request)"]) {
      const m = byName[name];
      const { type, id: _id, ...payload } = m.request;
      const pending = client.request(type, payload);
      model.emit({ ...m.content, id: model.sent.at(-1).content.id }, m.buffers);
      await expect(pending).rejects.toThrow(m.content.message);
    }
    client.dispose();
  });

  it("pushes reach onPush (id null or absent) and never resolve a request", async () => {
    const model = fakeModel();
    const client = createClient(model);
    const pending = client.request(MSG.GET_MAP, { layer: 0, head: 0 });
    const got = [];
    onPush(model, MSG.MAP, (msg) => got.push(msg.type));
    onPush(model, MSG.THUMBS_CHUNK, (msg) => got.push(msg.type), { nBuffers: 2 });
    for (const name of ["map push", "thumbs_chunk"]) model.emit(byName[name].content, byName[name].buffers);
    expect(got).toEqual(["map", "thumbs_chunk"]);
    expect(client.pending).toBe(1);
    client.dispose();
    await expect(pending).rejects.toThrow("view closed");
    const push = byName["map push"];
    expect(push.content.push).toBe(true);
    expectValues({ data: makeRecord("k", "k", push.content, push.buffers[0]).data, shape: push.content.shape }, push.decoded.buffers[0]);
  });

  it("thumbnail replies and chunks decode into the matrix's arrays", () => {
    const r = byName.get_thumbs;
    const reply = decodeThumbsReply(r.content, r.buffers);
    const [maps, scales, pending] = r.decoded.buffers;
    expect(Array.from(reply.maps)).toEqual(maps.values);
    expect(Array.from(reply.scales)).toEqual(scales.values);
    expect(Array.from(reply.pending)).toEqual(pending.values);
    expect([maps.shape, scales.shape, pending.shape]).toEqual([r.content.shape, r.content.shape.slice(0, 2), r.content.shape.slice(0, 2)]);
    expect(reply.note).toBe(r.content.note);
    const c = byName.thumbs_chunk;
    const chunk = decodeChunk(c.content, c.buffers);
    expect([chunk.layer0, chunk.layer1]).toEqual([c.content.layer0, c.content.layer1]);
    expect(Array.from(chunk.maps)).toEqual(c.decoded.buffers[0].values);
    expect(Array.from(chunk.scales)).toEqual(c.decoded.buffers[1].values);
  });

  it("the SVG reply's buffer is content.bytes long (here a placeholder)", () => {
    const s = byName.get_svg;
    expect(s.content.bytes).toBeGreaterThan(0);
    expect(asBytes(s.buffers[0]).length).toBeGreaterThan(0);
  });

  it("packed traits decode to Python's values", () => {
    const t = messages.traits;
    const init = revive(t["heatmap.initial_map"].value);
    expectValues(decode(init), t["heatmap.initial_map"].decoded);
    for (const name of ["matrix.thumbs.maps", "matrix.thumbs.scales"]) expectValues(decode(revive(t[name].value)), t[name].decoded);
    const g = t["flow.graphs[0]"];
    const graph = decodeGraph(revive(g.value));
    for (const k of ["query", "key", "weight"]) expect(Array.from(graph[k])).toEqual(g.decoded[k].values);
    const counts = g.decoded.counts.values;
    expect(Array.from(graph.off)).toEqual([0, ...counts.map((_, i) => counts.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
    expect(graph.off.at(-1)).toBe(g.value.count);
  });
});

describe("contract: style", () => {
  it("colour LUTs equal Python's for every theme and background", () => {
    for (const [bg, c] of Object.entries(cases.luts)) {
      expect(themeStops(css(bg))).toEqual(c.stops);
      const lut = makeLut(c.stops);
      const rgb = Array.from(lut).filter((_, i) => i % 4 !== 3);
      expect(rgb).toEqual(c.lut_rgb);
      expect(Array.from(themeLut(css(bg)))).toEqual(Array.from(lut));
    }
  });

  it("LUT indices and text colours", () => {
    for (const c of cases.lut_index) expect([c.value, c.max, lutIndex(c.value, c.max)]).toEqual([c.value, c.max, c.index]);
    for (const c of cases.text_on) expect([c.background, c.index, textOn(themeLut(css(c.background)), c.index)]).toEqual([c.background, c.index, c.text]);
  });

  it("colour scales: normalisations, signed indices, code tables, bar tops, diverging LUT", () => {
    for (const c of cases.norm_index) expect([c.value, c.max, c.norm, normIndex(c.value, c.max, c.norm)]).toEqual([c.value, c.max, c.norm, c.index]);
    for (const c of cases.signed_index) expect([c.value, c.max, c.norm, signedIndex(c.value, c.max, c.norm)]).toEqual([c.value, c.max, c.norm, c.index]);
    for (const c of cases.code_table) expect(Array.from(codeTable(c.head_max, c.max, c.norm, c.signed))).toEqual(c.table);
    for (const c of cases.display_max) {
      const flat = c.scales.flat();
      const top = Array.from(displayMax(flat, c.scales.length, c.scales[0].length, c.scale, c.n_keys, c.signed));
      top.forEach((x, i) => expect(x).toBeCloseTo(c.top.flat()[i], 12));
    }
    for (const [bg, c] of Object.entries(cases.diverging)) {
      expect(divergingStops(css(bg))).toEqual(c.stops);
      expect(Array.from(divergingLut(css(bg))).filter((_, i) => i % 4 !== 3)).toEqual(c.lut_rgb);
    }
  });

  it("label strides, visible labels and label ranges", () => {
    for (const c of cases.label_stride) {
      expect([c.cell_px, c.font_px, labelStride(c.cell_px, c.font_px)]).toEqual([c.cell_px, c.font_px, c.stride ?? Infinity]);
    }
    for (const c of cases.visible_labels) {
      const stride = labelStride(c.cell_px, c.font_px);
      expect(stride).toBe(c.stride ?? Infinity);
      expect(visibleLabels(c.n, stride, c.always)).toEqual(c.visible);
    }
    for (const c of cases.range_labels) expect(rangeLabels(c.a, c.b, c.cell_px, c.font_px, c.always)).toEqual(c.labels);
  });

  it("edge buckets and bucket styles", () => {
    const c = cases.bucket_edges;
    const w = c.weights.map((x, i) => (x === null ? (i === 11 ? NaN : Infinity) : x));
    expect(Array.from(bucketEdges(Float32Array.from(w), c.peak))).toEqual(c.buckets);
    for (const s of cases.bucket_style) {
      const st = bucketStyle(s.bucket);
      expect(st.width).toBeCloseTo(s.width, 12);
      expect(st.alpha).toBeCloseTo(s.alpha, 12);
    }
  });

  it("printable labels and truncation", () => {
    for (const c of cases.text) {
      expect(printable(c.input)).toBe(c.printable);
      expect(truncate(printable(c.input), 12)).toBe(c.truncate_12);
      expect(truncate(printable(c.input), 14)).toBe(c.truncate_14);
    }
  });

  it("sizes: heatmap side, flow row height, tile step", () => {
    for (const c of cases.sizes.heatmap_size) expect([c.n, mapSize(0, Infinity, c.n, c.n)]).toEqual([c.n, c.size]);
    const f = SIZES.flow;
    for (const c of cases.sizes.fit_row) expect([c.n, fitRow(c.n, f.max_height, { min: f.row_min, max: f.row_max })]).toEqual([c.n, c.row_h]);
    for (const c of cases.sizes.tile_step) expect([c.rows, c.cols, c.side, tileStep(c.rows, c.cols, c.side)]).toEqual([c.rows, c.cols, c.side, c.step]);
  });
});
