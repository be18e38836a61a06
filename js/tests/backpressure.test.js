// Backpressure in the heatmap view (js/heatmap/cache.js): pushed maps are acknowledged, and
// a burst of selection changes keeps at most one whole-map request in flight.
import { describe, expect, it } from "vitest";
import { createMapCache, ensureMap, listenForPushes } from "../heatmap/cache.js";
import { createClient, MSG } from "../lib/protocol.js";
import { fullView } from "../lib/zoom.js";
import { fakeModel } from "./fakes.js";

const N = 4;
const map16 = () => new Uint16Array(N * N).fill(0x3c00); // float16 1.0

function viewState(model) {
  const v = {
    model,
    client: createClient(model),
    maps: createMapCache(),
    inflight: new Map(),
    mapBusy: null,
    mapAgain: false,
    current: null,
    wanted: "",
    drawn: [],
    status: { textContent: "" },
    errors: { set() {}, clear() {} },
    nTokens: () => N,
    nKeys: () => N,
    currentView: () => fullView(N, N),
  };
  v.draw = () => v.drawn.push(v.current.key);
  return v;
}

const requests = (model) => model.sent.map((s) => s.content).filter((c) => c.type === MSG.GET_MAP);
const reply = (model, req) =>
  model.emit({ type: MSG.MAP, id: req.id, layer: req.layer, head: req.head, dtype: "float16", shape: [N, N] }, [map16()]);
const tick = () => new Promise((r) => setTimeout(r, 0));

describe("heatmap backpressure", () => {
  it("a burst of selection changes sends one request, then only the newest", async () => {
    const model = fakeModel({ layer: 0, head: 0, tokens: ["a", "b", "c", "d"] });
    const v = viewState(model);
    for (let h = 1; h <= 9; h++) {
      model.set("head", h);
      ensureMap(v);
    }
    expect(requests(model).map((r) => r.head)).toEqual([1]);
    reply(model, requests(model)[0]);
    await tick();
    await tick();
    expect(requests(model).map((r) => r.head)).toEqual([1, 9]); // 2..8 never asked for
    reply(model, requests(model)[1]);
    await tick();
    await tick();
    expect(v.current.key).toBe("0:9");
    expect(v.drawn.at(-1)).toBe("0:9");
    expect(requests(model).length).toBe(2);
  });

  it("pushed maps are acknowledged with their seq; a push of the wanted map is drawn", async () => {
    const model = fakeModel({ layer: 0, head: 0, tokens: ["a", "b", "c", "d"] });
    const v = viewState(model);
    listenForPushes(v);
    expect(model.sent.map((s) => s.content)).toEqual([{ type: MSG.MAP_ACK, seq: null }]);
    model.set("head", 3);
    ensureMap(v); // the state update came first: one request goes out
    model.emit({ type: MSG.MAP, id: null, push: true, seq: 7, layer: 0, head: 3, dtype: "float16", shape: [N, N] }, [map16()]);
    expect(model.sent.at(-1).content).toEqual({ type: MSG.MAP_ACK, seq: 7 });
    expect(v.current && v.current.key).toBe("0:3"); // drawn from the push, not waiting for the reply
  });
});
