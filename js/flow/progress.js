// The flow panel's background job on screen: the status line and bar (a LazyTrace's route
// "rollout route of token 12: layer 5/32", or the exact max-flow's strip), and the route
// drawn before it, dimmed until the new one arrives; and what the method control says of a
// method that is not offered. Kept apart from draw.js (the graphs): it only touches the
// controls' status, the bar and the graphs box's opacity.
import { FLOW_STATUS, jobText } from "../lib/protocol.js";

/** What the status line says now ("" when nothing runs). */
export function progressText(status, job, progress) {
  if (status !== FLOW_STATUS.COMPUTING) return "";
  if (job && job.kind) return jobText(job);
  return `computing max-flow\u2026 ${Math.round(100 * (progress || 0))}%`;
}

/** Show the job's progress on the panel; data-pending is the token whose route is coming. */
export function showProgress(v) {
  const { model, panel } = v;
  const status = model.get("status");
  const job = model.get("job") || {};
  const text = progressText(status, job, model.get("progress"));
  const waiting = Boolean(text) && job.kind === "route";
  v.prog.style.display = text ? "" : "none";
  v.prog.value = job.total ? job.done / job.total : model.get("progress") || 0;
  v.status.textContent = text; // text only: token strings never become markup
  v.status.title = text;
  v.graphsBox.style.opacity = waiting ? "0.4" : "";
  v.graphsBox.title = waiting ? `the previous route, until token ${job.token}'s arrives` : "";
  panel.dataset.pending = waiting ? String(job.token) : "";
  panel.dataset.progress = text;
}

/** The method control's option for entry `m` of the `methods` trait: {text, disabled, title}.
 * A method that is not offered stays listed, disabled, saying why (e.g. the max-flow size limit). */
export function methodOption(m) {
  if (m.available) return { text: m.label, disabled: false, title: "" };
  const why = m.reason || `needs ${m.needs}`;
  return { text: `${m.label} \u2014 unavailable: ${why}`, disabled: true, title: why };
}
