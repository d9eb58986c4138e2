// Datasets tab: browse dataset/, preview a file, compute its data stats, synthesize Q&A and paraphrases.

import { api } from "./api.js";
import { selectedModel } from "./training.js";
import { $, bytes, el, fillSelect, toast } from "./ui.js";

let selected = null;
let synthOut = null; // the output folder whose progress is shown
let synthTimer = null;

export function init() {
  $("#ds-stats-btn").addEventListener("click", stats);
  $("#ds-synth-btn").addEventListener("click", synthesize);
}

export async function refresh() {
  const [{ entries }, { models }] = await Promise.all([api("/api/datasets"), api("/api/models")]);
  // Token counts need a tokenizer: a base model's, by default the Training tab's choice.
  const bases = models.filter((m) => !m.is_adapter && !m.run).map((m) => m.name);
  const chosen = $("#ds-model").value || selectedModel();
  fillSelect($("#ds-model"), [...new Set([chosen, ...bases])].map((n) => [n, n]), chosen);
  $("#ds-synth-teachers").replaceChildren(...bases.map((n) => el("option", { value: n })));
  $("#ds-list").replaceChildren(...(entries.length ? entries.map((e) => {
    const depth = e.path.split("/").length - 1;
    const item = el("li", { class: e.type === "folder" ? "folder" : "", style: `padding-left:${0.5 + depth}rem` },
      el("span", {}, e.type === "folder" ? `${e.path.split("/").pop()}/` : e.path.split("/").pop()),
      el("span", { class: "muted" }, e.type === "file" ? bytes(e.size) : ""));
    item.addEventListener("click", () => (e.type === "file" ? preview(e.path, item) : choose(e.path, item)));
    return item;
  }) : [el("li", { class: "folder" }, "dataset/ is empty: put .txt, .md, .jsonl, .pdf… files in it")]));
}

function choose(path, item) {
  selected = path;
  document.querySelectorAll("#ds-list li.selected").forEach((n) => n.classList.remove("selected"));
  item.classList.add("selected");
  $("#ds-title").textContent = path;
  $("#ds-stats-btn").disabled = false;
  $("#ds-synth-btn").disabled = false;
  $("#ds-stats").replaceChildren();
  $("#ds-stats-msg").textContent = "";
}

async function preview(path, item) {
  choose(path, item);
  $("#ds-preview").textContent = "Loading…";
  try {
    const data = await api(`/api/datasets/preview?path=${encodeURIComponent(path)}`);
    $("#ds-preview").textContent = data.binary ? `${bytes(data.size)} binary file (${data.suffix}): use Data stats to see what it holds.`
      : data.text + (data.truncated ? `\n… (first ${bytes(data.text.length)} of ${bytes(data.size)})` : "");
  } catch (err) {
    $("#ds-preview").textContent = err.message;
  }
}

async function stats() {
  if (!selected) return;
  const model = $("#ds-model").value;
  $("#ds-stats-msg").textContent = `computing (tokens counted with ${model})…`;
  try {
    // The dataset on its own: no general text mixed in (the Training tab's line shows the mix a run would use).
    const { stats } = await api(`/api/datasets/stats?path=${encodeURIComponent(selected)}&model=${encodeURIComponent(model)}` +
      "&data_mixture_ratio=1");
    const rows = Object.entries(stats).filter(([, v]) => typeof v !== "object" || v === null);
    $("#ds-stats").replaceChildren(el("dl", { class: "kv" }, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
      ...(stats.skipped && stats.skipped.length ? [el("details", {}, el("summary", {}, `${stats.skipped.length} skipped`),
        el("pre", { class: "preview" }, stats.skipped.map((s) => `${s.file}:${s.line ?? ""} ${s.reason}`).join("\n")))] : []));
    $("#ds-stats-msg").textContent = "";
  } catch (err) {
    $("#ds-stats-msg").textContent = "";
    toast(err.message, true);
  }
}

// ---- synthesis: started as `forgellm data synthesize` in its own process; its summary.json is polled.

async function synthesize() {
  if (!selected) return;
  const body = {
    path: selected, teacher: $("#ds-synth-teacher").value.trim() || "default",
    questions_per_chunk: Number($("#ds-synth-questions").value), paraphrases: Number($("#ds-synth-paraphrases").value),
  };
  if ($("#ds-synth-out").value.trim()) body.out = $("#ds-synth-out").value.trim();
  try {
    const { out } = await api("/api/datasets/synthesize", { method: "POST", body });
    toast(`Synthesizing from ${selected} into dataset/${out}…`);
    watchSynthesis(out);
  } catch (err) {
    toast(err.message, true);
  }
}

function watchSynthesis(out) {
  synthOut = out;
  clearTimeout(synthTimer);
  const poll = async () => {
    if (synthOut !== out) return;
    let data;
    try {
      data = await api(`/api/datasets/synthesis?out=${encodeURIComponent(out)}`);
    } catch (err) {
      $("#ds-synth-msg").textContent = err.message;
      synthTimer = setTimeout(poll, 2000);
      return;
    }
    showSynthesis(data);
    if (data.task && data.task.state === "running") synthTimer = setTimeout(poll, 1500);
    else refresh(); // the output folder appears in the list, to preview or train on
  };
  poll();
}

function showSynthesis({ out, summary: s, task }) {
  const running = task && task.state === "running";
  if (!s) {
    // No summary yet: the teacher is loading, or the task failed before it started.
    const tail = task ? task.log_tail.trim().split("\n").pop() || "" : "";
    $("#ds-synth-msg").textContent = running ? "starting (loading the teacher)…" : `failed: ${tail}`;
    return;
  }
  $("#ds-synth-bar").style.width = `${s.chunks ? (100 * s.chunks_done) / s.chunks : 0}%`;
  const state = running ? "running" : (task && task.state === "failed" && s.state === "running" ? "failed" : s.state);
  $("#ds-synth-msg").textContent = `${state}: ${s.chunks_done} / ${s.chunks} chunks · ${s.qa_written} questions, `
    + `${s.paraphrases_written} paraphrases written · rejected as not in the chunk: ${s.qa_ungrounded} answers, `
    + `${s.paraphrases_ungrounded} paraphrases · ${s.qa_duplicates + s.paraphrases_duplicates} duplicates · `
    + `${s.not_json} replies not JSON · into dataset/${out}` + (s.error ? ` · ${s.error}` : "");
  $("#ds-synth-samples").replaceChildren(...s.samples.map((r) => el("div", { class: "sample" },
    el("strong", {}, r.messages[0].content), el("div", {}, r.messages[1].content),
    el("div", { class: "muted" }, `${r.source.file} · chunk ${r.source.chunk}`))));
}
