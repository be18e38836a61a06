// The flow panel's job status (js/flow/progress.js, jobText in js/lib/protocol.js): the
// status line and bar of a LazyTrace's route, the dimmed previous route, and the method
// control's text for methods that are not offered; read from the contract fixtures.
import { describe, expect, it } from "vitest";
import messages from "../../tests/contract/fixtures/messages.json";
import { methodOption, progressText, showProgress } from "../flow/progress.js";
import { FLOW_STATUS, jobText } from "../lib/protocol.js";
import { fakeModel } from "./fakes.js";

const job = messages.traits["flow.job"].value;
const lazyMethods = messages.traits["flow.methods (LazyTrace)"].value;

function view(state) {
  const el = () => ({ style: {}, dataset: {}, textContent: "", title: "", value: 0 });
  return { model: fakeModel(state), panel: el(), prog: el(), status: el(), graphsBox: el() };
}

describe("flow job progress", () => {
  it("jobText is Python's status line, with or without its text field", () => {
    expect(jobText(job)).toBe(job.text);
    const { text, ...bare } = job;
    expect(jobText(bare)).toBe(text);
    expect(jobText({})).toBe("");
  });

  it("progressText: the job's line while computing, max-flow's percentage without a job, else nothing", () => {
    expect(progressText(FLOW_STATUS.COMPUTING, job, 0.5)).toBe("rollout route of token 3: layer 1/2");
    expect(progressText(FLOW_STATUS.COMPUTING, {}, 0.42)).toBe("computing max-flow\u2026 42%");
    expect(progressText(FLOW_STATUS.READY, job, 1)).toBe("");
  });

  it("showProgress dims the previous route and names the pending token; clears when done", () => {
    const v = view({ status: FLOW_STATUS.COMPUTING, job, progress: 0.5 });
    showProgress(v);
    expect(v.status.textContent).toBe(job.text);
    expect(v.prog.style.display).toBe("");
    expect(v.prog.value).toBe(0.5);
    expect(v.graphsBox.style.opacity).toBe("0.4");
    expect(v.panel.dataset.pending).toBe("3");
    v.model.set("status", FLOW_STATUS.READY);
    v.model.set("job", {});
    showProgress(v);
    expect([v.status.textContent, v.prog.style.display, v.graphsBox.style.opacity, v.panel.dataset.pending]).toEqual(["", "none", "", ""]);
  });

  it("methods that are not offered stay listed, disabled, with the reason", () => {
    const flow = lazyMethods.find((m) => m.name === "flow");
    const opt = methodOption(flow);
    expect(opt.disabled).toBe(true);
    expect(opt.text).toContain("unavailable: exact max-flow: needs every map in memory and up to");
    expect(opt.title).toBe(flow.reason);
    expect(methodOption(lazyMethods.find((m) => m.name === "rollout"))).toEqual({ text: "rollout", disabled: false, title: "" });
    expect(methodOption({ label: "x", available: false, needs: "gradients", reason: "" }).text).toBe("x \u2014 unavailable: needs gradients");
  });
});
