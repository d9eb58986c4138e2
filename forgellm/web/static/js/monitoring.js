// Monitoring tab: live charts of one run, fed by the SocketIO stream of its metrics.jsonl.

import { api } from "./api.js";
import { lineChart, qaLines, retheme, setSeries } from "./charts.js";
import { $, duration, el, fillSelect, fmt } from "./ui.js";

const NOTABLE = new Set(["start", "resume", "checkpoint", "overfitting", "early_stop", "done", "error"]);
let live, charts, unfollow = null, state = null, drawPending = false, current = null, analysisTimer = null;
// Events after which the best checkpoint and the recommendations may have changed.
// Preference metrics charted from train events, and their validation counterparts (val_*).
const PREFERENCE_SERIES = ["reward_chosen", "reward_rejected", "margin", "accuracy", "logps_chosen", "logps_rejected",
  "val_accuracy", "val_margin", "val_logps_chosen", "val_logps_rejected"];
const ANALYSED = new Set(["eval", "checkpoint", "overfitting", "early_stop", "done"]);

function emptyState() {
  return { train: [], val: [], ppl: [], lr: [], tps: [], mem: [], total: null, epochs: null, stepsPerEpoch: null,
    lastTrain: null, lastQa: null, status: "", step: 0, events: [],
    // preference runs: their train and eval events carry these (PREFERENCE_SERIES)
    pref: Object.fromEntries(PREFERENCE_SERIES.map((k) => [k, []])) };
}

export function init(liveLink) {
  live = liveLink;
  charts = {
    loss: lineChart($("#chart-loss")), qa: lineChart($("#chart-qa")), ppl: lineChart($("#chart-ppl")), lr: lineChart($("#chart-lr")),
    tps: lineChart($("#chart-tps")), mem: lineChart($("#chart-mem")),
    rewards: lineChart($("#chart-rewards")), accuracy: lineChart($("#chart-accuracy")), logps: lineChart($("#chart-logps")),
  };
  $("#mon-run").addEventListener("change", (e) => open(e.target.value));
}

export function rethemeCharts() { if (charts) retheme(Object.values(charts)); }

export async function refreshRuns(preferred) {
  const { runs } = await api("/api/runs");
  const select = $("#mon-run");
  const pick = preferred || current || (runs[0] && runs[0].id) || "";
  fillSelect(select, runs.map((r) => [r.id, `${r.id} (${r.status})`]), pick);
  if (pick && pick !== current) open(pick);
  if (!runs.length) $("#mon-progress-text").textContent = "No runs yet: start one in the Training tab.";
}

export function open(runId) {
  if (unfollow) unfollow();
  current = runId;
  state = emptyState();
  $("#mon-events").replaceChildren();
  $("#mon-analysis").replaceChildren("Appears after the first evaluation.");
  setSeries(charts.qa, []);
  draw();
  unfollow = live.follow(runId, apply);
}

function apply(events) {
  for (const e of events) {
    const step = e.step;
    if (e.event === "train") {
      if (e.loss != null) state.train.push({ x: step, y: e.loss });
      if (e.learning_rate != null) state.lr.push({ x: step, y: e.learning_rate });
      if (e.tokens_per_second != null) state.tps.push({ x: step, y: e.tokens_per_second });
      if (e.peak_memory_gb != null) state.mem.push({ x: step, y: e.peak_memory_gb });
      state.lastTrain = e;
    } else if (e.event === "eval") {
      if (e.val_loss != null) state.val.push({ x: step, y: e.val_loss });
      if (e.val_ppl != null) state.ppl.push({ x: step, y: e.val_ppl });
      if (e.qa_accuracy != null) state.lastQa = e; // charted from the server's series (showAnalysis)
    }
    if (e.event === "train" || e.event === "eval") {
      for (const key of PREFERENCE_SERIES) if (e[key] != null) state.pref[key].push({ x: step, y: e[key] });
    }
    if (e.event === "start" || e.event === "resume") {
      state.total = e.total_steps; state.status = "running"; // a resume may change max_iterations
      state.epochs = e.num_epochs ?? null; state.stepsPerEpoch = e.steps_per_epoch ?? null;
    } else if (e.event === "done") {
      state.status = e.status === "completed" ? "done" : e.status;
    } else if (e.event === "error") {
      state.status = "failed";
    }
    if (typeof step === "number") state.step = Math.max(state.step, step);
    if (NOTABLE.has(e.event)) state.events.push(e);
  }
  if (events.some((e) => ANALYSED.has(e.event))) {
    // One request per burst (a catch-up replays a whole run at once).
    clearTimeout(analysisTimer);
    analysisTimer = setTimeout(() => showAnalysis(current), 500);
  }
  if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
}

function describe(e) {
  const time = e.time ? new Date(e.time * 1000).toLocaleTimeString() : "";
  const detail = {
    start: () => `started: ${e.training_type || ""} ${e.fine_tune_type || ""} on ${e.model || "?"}, ${e.total_steps} steps` +
      (e.num_epochs != null ? `, ${e.num_epochs} epochs` : "") + ` (${e.engine || ""})`,
    resume: () => `resumed at step ${e.step} of ${e.total_steps}` + (e.num_epochs != null ? ` (${e.num_epochs} epochs)` : "") +
      (e.changed && Object.keys(e.changed).length
        ? ` (changed: ${Object.entries(e.changed).map(([k, [a, b]]) => `${k} ${a} → ${b}`).join(", ")})` : ""),
    checkpoint: () => `checkpoint ${e.path} (val loss ${fmt(e.val_loss)})`,
    overfitting: () => `overfitting: ${e.reason} (val ${fmt(e.val_loss)}, best ${fmt(e.best_val_loss)})`,
    early_stop: () => `early stop: ${e.reason} (best step ${e.best_step})`,
    done: () => `finished (${e.status}); best ${e.best_checkpoint || "–"} val loss ${fmt(e.best_val_loss)}`,
    error: () => `error: ${e.message}`,
  }[e.event]();
  return el("li", { class: e.event }, `${time} · step ${e.step ?? "–"} · ${detail}`);
}

function draw() {
  drawPending = false;
  setSeries(charts.loss, [{ label: "train", points: state.train }, { label: "validation", points: state.val }]);
  setSeries(charts.ppl, [{ label: "validation perplexity", points: state.ppl }]);
  setSeries(charts.lr, [{ label: "learning rate", points: state.lr }]);
  setSeries(charts.tps, [{ label: "tok/s", points: state.tps }]);
  setSeries(charts.mem, [{ label: "peak GB", points: state.mem }]);
  const pref = state.pref;
  document.querySelectorAll(".pref-panel").forEach((n) => { n.hidden = !pref.accuracy.length && !pref.val_accuracy.length; });
  setSeries(charts.rewards, [{ label: "chosen", points: pref.reward_chosen }, { label: "rejected", points: pref.reward_rejected },
    { label: "margin", points: pref.margin }, { label: "validation margin", points: pref.val_margin }]);
  setSeries(charts.accuracy, [{ label: "train", points: pref.accuracy }, { label: "validation", points: pref.val_accuracy }]);
  setSeries(charts.logps, [{ label: "chosen", points: pref.logps_chosen }, { label: "rejected", points: pref.logps_rejected },
    { label: "validation chosen", points: pref.val_logps_chosen }, { label: "validation rejected", points: pref.val_logps_rejected }]);
  const list = $("#mon-events");
  for (const e of state.events.splice(0)) list.append(describe(e));
  list.scrollTop = list.scrollHeight;
  const total = state.total, step = state.step, t = state.lastTrain;
  $("#mon-progress").style.width = total ? `${Math.min(100, (100 * step) / total)}%` : "0";
  const eta = t && total && t.elapsed && t.step ? (t.elapsed / t.step) * Math.max(total - t.step, 0) : null;
  const badge = $("#mon-status");
  badge.textContent = state.status || "–";
  badge.className = "badge " + ({ running: "ok", failed: "bad", stopped: "warn" }[state.status] || "");
  $("#mon-progress-text").textContent = current
    ? `step ${step}${total ? ` / ${total}` : ""}${epochText(step)} · loss ${fmt(t && t.loss)} · ${fmt(t && t.tokens_per_second, 1)} tok/s` +
      (state.lastQa ? ` · QA ${fmt(100 * state.lastQa.qa_accuracy, 1)}% (${qaCounts(state.lastQa)})` : "") +
      (state.status === "running" ? ` · ETA ${duration(eta)}` : "")
    : "";
}

// "30/42 chat-facts, 5/21 document-facts" when the QA set came from several files, else "35/63".
function qaCounts(e) {
  const files = Object.entries(e.qa_files || {});
  if (!files.length) return `${e.qa_correct}/${e.qa_total}`;
  return files.map(([name, f]) => `${f.correct}/${f.total} ${name}`).join(", ");
}

// " (3.0 of 10 epochs)" once the start event said how long an epoch is.
function epochText(step) {
  if (!state.stepsPerEpoch || state.epochs == null) return "";
  return ` (${(step / state.stepsPerEpoch).toFixed(1)} of ${+state.epochs.toFixed(3)} epochs)`;
}

// The server's analysis of the run (as in `forgellm dashboard`): best checkpoint, overfitting, advice;
// and its QA curves, overall and per QA file, from the series every dashboard draws.
async function showAnalysis(runId) {
  let data;
  try {
    data = await api(`/api/dashboard/data?run=${encodeURIComponent(runId)}`);
  } catch (err) {
    return; // no metrics yet: the placeholder stays
  }
  const a = data.runs[0].analysis;
  if (runId !== current || !a) return;
  setSeries(charts.qa, qaLines(data.runs[0].series));
  const best = (a.best_checkpoint ? `best checkpoint ${a.best_checkpoint}` : "no best checkpoint yet")
    + (a.recommended ? `; recommended ${a.recommended.name} (val loss ${fmt(a.recommended.val_loss)}, score ${fmt(a.recommended.score)})` : "");
  const facts = [
    best,
    `best validation loss ${fmt(a.best_val_loss)}${a.best_val_step != null ? ` at step ${a.best_val_step}` : ""}`,
    a.overfitting_onset != null ? `overfitting from step ${a.overfitting_onset}` : "no overfitting",
    `loss ${a.stability}`,
  ];
  const advice = a.recommendations.map((r) => el("li", { class: r.severity === "warning" ? "overfitting" : "" }, r.message));
  $("#mon-analysis").replaceChildren(el("p", {}, facts.join(" · ")), el("ul", { class: "events" }, ...advice));
}
