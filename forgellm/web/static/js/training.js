// Training tab: a form built from the config schema, model and dataset pickers, start and stop.

import { api } from "./api.js";
import { $, duration, el, fmt, toast } from "./ui.js";

const MAIN_FIELDS = ["model_name", "input_dir", "fine_tune_type", "engine", "max_iterations", "num_epochs", "learning_rate",
  "batch_size", "max_seq_length", "steps_per_eval", "save_every", "run_name"];
let fields = [];
let onStarted = () => {};

export async function init({ started }) {
  onStarted = started;
  const [{ fields: schema }, { models }, { entries }] = await Promise.all([
    api("/api/config/schema"), api("/api/models"), api("/api/datasets")]);
  fields = schema.filter((f) => f.name !== "training_type");
  const modelNames = models.filter((m) => !m.is_adapter).map((m) => m.name);
  const folders = ["dataset", ...entries.filter((e) => e.type === "folder").map((e) => `dataset/${e.path}`)];
  for (const field of fields) {
    const main = MAIN_FIELDS.includes(field.name);
    const choices = field.name === "model_name" ? ["default", ...modelNames.filter((n) => n !== "default")]
      : field.name === "input_dir" ? folders : null;
    (main ? $("#train-main") : $("#train-advanced")).append(fieldNode(field, choices));
  }
  $("#train-main").prepend(...MAIN_FIELDS.map((n) => $(`#field-${n}`)).filter(Boolean));
  $("#train-form").addEventListener("submit", submit);
  $("#train-stop").addEventListener("click", stop);
  // The stats line shows what the run would train on: it follows every data setting of the form.
  for (const field of fields.filter((f) => f.data || f.name === "model_name")) {
    $(`#f-${field.name}`).addEventListener("change", showStats);
  }
  document.querySelectorAll("input[name=training_type]").forEach((r) => r.addEventListener("change", () => {
    showApplicable();
    showStats();
  }));
  $("#f-preference_loss")?.addEventListener("change", showApplicable);
  showApplicable();
  // The estimate follows every field: any of them may change the length, the data or the speed.
  $("#train-form").addEventListener("input", scheduleEstimate);
  $("#train-form").addEventListener("change", scheduleEstimate);
  showStats();
  scheduleEstimate();
}

// The current value of a form key (training_type is the radio group above the fields).
function formValue(name) {
  if (name === "training_type") return document.querySelector("input[name=training_type]:checked").value;
  return $(`#f-${name}`)?.value;
}

// Fields that apply only to some settings (the schema's `applies`, e.g. beta to dpo and simpo) are
// shown only while those settings are chosen; hidden fields are not sent.
function applies(field) {
  return !field.applies || Object.entries(field.applies).every(([key, allowed]) => allowed.includes(formValue(key)));
}

function showApplicable() {
  for (const field of fields) $(`#field-${field.name}`).hidden = !applies(field);
}

function fieldNode(field, choices) {
  const id = `f-${field.name}`;
  let input;
  if (choices) {
    input = el("select", { id }, ...[...new Set([field.default, ...choices])].map((c) => el("option", { value: c }, c)));
  } else if (field.type === "enum") {
    input = el("select", { id }, ...field.enum.map((c) => el("option", { value: c, selected: c === field.default }, c)));
  } else if (field.type === "boolean") {
    input = el("input", { id, type: "checkbox", checked: !!field.default });
  } else if (field.type === "integer" || field.type === "number") {
    input = el("input", { id, type: "number", step: field.type === "integer" ? "1" : "any", value: field.default ?? "",
      placeholder: field.default === null ? "(automatic)" : undefined });
  } else if (field.type === "array") {
    input = el("input", { id, type: "text", value: (field.default || []).join(", ") });
  } else {
    input = el("input", { id, type: "text", value: field.default ?? "", placeholder: field.default === null ? "(automatic)" : undefined });
  }
  input.dataset.field = field.name;
  return el("div", { class: "field", id: `field-${field.name}` },
    el("label", { for: id }, field.name, input),
    el("div", { class: "help" }, `${field.description} Default: ${JSON.stringify(field.default)}.`),
    el("div", { class: "error", id: `err-${field.name}` }));
}

function values() {
  const out = { training_type: document.querySelector("input[name=training_type]:checked").value };
  for (const field of fields) {
    if (!applies(field)) continue;
    const input = $(`#f-${field.name}`);
    if (field.type === "boolean") out[field.name] = input.checked;
    else if (field.type === "array") out[field.name] = input.value.split(",").map((s) => s.trim()).filter(Boolean);
    else if (input.value === "" && field.default === null) continue;
    else if (field.type === "integer" || field.type === "number") out[field.name] = input.value === "" ? "" : Number(input.value);
    else out[field.name] = input.value;
  }
  return out;
}

function clearErrors() {
  document.querySelectorAll("#train-form .field.invalid").forEach((n) => n.classList.remove("invalid"));
  document.querySelectorAll("#train-form .field .error").forEach((n) => { n.textContent = ""; });
  $("#train-message").textContent = "";
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const button = $("#train-start");
  button.disabled = true;
  try {
    const { job } = await api("/api/training/start", {
      method: "POST", body: { config: values(), allow_concurrent: $("#allow-concurrent").checked } });
    toast(`Training started (pid ${job.pid})`);
    onStarted(job);
  } catch (err) {
    const name = err.field && err.field.replace(/^config\./, "");
    const box = name && $(`#err-${name}`);
    if (box) {
      box.textContent = err.message;
      box.parentElement.classList.add("invalid");
      box.closest("details")?.setAttribute("open", "");
      $(`#f-${name}`).focus();
    }
    $("#train-message").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

async function stop() {
  try {
    const { stopped } = await api("/api/training/stop", { method: "POST", body: {} });
    toast(`Stopping ${stopped.map((j) => j.run || j.id).join(", ")}: it saves a checkpoint first`);
  } catch (err) {
    toast(err.message, true);
  }
}

// The query of the stats line: the dataset path, the mode, the model and the form's data settings.
// When the run would sample a replay set (general text the model writes, minutes of generation),
// the server counts the domain data alone and says so (replay_pending, replay_share).
function statsQuery(dir) {
  const form = values();
  const query = new URLSearchParams({ path: dir === "dataset" ? "." : dir.slice("dataset/".length),
    mode: form.training_type, model: selectedModel() });
  for (const field of fields) {
    if (field.data && field.name !== "input_dir" && form[field.name] !== undefined && form[field.name] !== "") {
      query.set(field.name, String(form[field.name]));
    }
  }
  return query.toString();
}

const VALIDATION = {
  documents: () => "held-out documents",
  packed_sequences: (v) => `the last ${v.sequences} packed sequences (too few documents to hold one out)`,
  validation_dir: (v) => `validation_dir ${v.path}`,
  none: (v) => `none (${v.reason})`,
};

async function showStats() {
  const dir = $("#f-input_dir").value;
  const box = $("#dataset-stats");
  if (!(dir === "dataset" || dir.startsWith("dataset/"))) { box.textContent = ""; return; }
  const query = statsQuery(dir);
  const current = () => $("#f-input_dir").value === dir && statsQuery(dir) === query;
  box.textContent = `Computing data stats of ${dir}…`;
  try {
    const { stats, replay_pending: replayPending, replay_share: replayShare } = await api(`/api/datasets/stats?${query}`);
    if (!current()) return;
    if (stats.prepared_path) {  // train.tokens.npy ...: a run trains on the splits as they are
      const unit = stats.mode === "preference" ? "pairs" : "sequences";
      box.textContent = `${dir}: prepared splits, trained on as they are (the data settings do not apply): ` +
        `${stats[unit].train} / ${stats[unit].val} train / validation ${unit} of ${stats.seq_length} tokens.`;
      return;
    }
    const validation = stats.validation || { source: "documents" };
    box.textContent = `${dir}: ${stats.files} files, ${stats.documents} documents, ${fmt(stats.train_tokens, 0)} train / ` +
      `${fmt(stats.val_tokens, 0)} validation tokens, ` +
      (stats.pairs ? `${stats.pairs.train} / ${stats.pairs.val} train / validation pairs`
        : `${stats.sequences.train} / ${stats.sequences.val} sequences of ${stats.seq_length} tokens`) +
      (stats.mixture ? ` (${mixtureText(stats.mixture)})` : "") +
      (stats.format ? `, format ${Object.values(stats.format).join(", ")}` : "") +
      `, ${stats.duplicates_removed + stats.near_duplicates_removed} duplicates removed, ${(stats.skipped || []).length} skipped; ` +
      `validation: ${(VALIDATION[validation.source] || VALIDATION.documents)(validation)}.` +
      (replayPending ? ` Domain data only: the replay set (${fmt(100 * replayShare, 0)}% ` +
        `general text sampled from ${selectedModel()}) is generated when the run starts.` : "");
  } catch (err) {
    if (!current()) return;
    if (err.status === 429) {  // the app runs a few stats processes at once: ask again when the answer says
      box.textContent = `Waiting to compute data stats of ${dir}…`;
      setTimeout(() => { if (current()) showStats(); }, err.retryAfterMs);
      return;
    }
    box.textContent = `Data stats unavailable: ${err.message}`;
  }
}

// Training length and duration before starting, from the server (POST /api/training/estimate):
// the length both ways as the trainer derives it from the data it would prepare (shuffled copies
// and the copies that fill min_iterations included), the tokens it trains on and, from the
// measured speed of earlier runs of the same model and engine, how long that takes.
const ESTIMATE_DELAY_MS = 400; // one request once the typing stops
let estimateTimer = null;

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(showEstimate, ESTIMATE_DELAY_MS);
}

async function showEstimate() {
  const box = $("#train-estimate");
  const config = values();
  const key = JSON.stringify(config);
  const current = () => JSON.stringify(values()) === key;
  box.textContent = "Estimating the run's length…";
  try {
    const estimate = await api("/api/training/estimate", { method: "POST", body: { config } });
    if (current()) box.textContent = estimateText(estimate);
  } catch (err) {
    if (!current()) return;
    if (err.status === 429) {  // the data stats it needs are computing: ask again when a process is free
      box.textContent = "Waiting for the data stats to estimate the run's length…";
      setTimeout(() => { if (current()) showEstimate(); }, err.retryAfterMs);
      return;
    }
    box.textContent = `No length estimate: ${err.message}`;
  }
}

function estimateText(e) {
  const copies = e.shuffled_copies ? `the documents and ${e.shuffled_copies} shuffled ${e.shuffled_copies > 1 ? "copies" : "copy"} ` +
    `of each${e.fills_floor ? ", as many as fill min_iterations" : ""}; ` : "";
  let text = `${e.max_iterations} steps = ${fmt(e.num_epochs, 3)} epochs of ${e.sequences} ${e.unit} ` +
    `(${copies}effective batch ${e.effective_batch}), about ${fmt(e.train_tokens, 0)} tokens trained.` +
    (e.replay_pending ? " Domain data only: the replay set is added when the run starts." : "");
  const { speed } = e;
  if (speed.tokens_per_second) {
    text += ` Estimated ${duration(e.seconds)} at ${fmt(speed.tokens_per_second, 0)} tok/s ` +
      `(measured in ${speed.runs.length} earlier run${speed.runs.length > 1 ? "s" : ""} of this model on ${speed.engine}), evaluations not counted.`;
  } else {
    text += ` No earlier run of this model on ${speed.engine} to estimate the duration from.`;
  }
  return text;
}

// The model chosen in the form: its tokenizer counts the tokens of the data stats.
export function selectedModel() {
  const input = $("#f-model_name");
  return (input && input.value) || "default";
}

export function showJobs(status) {
  const rows = status.jobs.map((job) => el("tr", {},
    el("td", {}, job.id), el("td", {}, job.run || "(starting)"), el("td", { title: job.log_tail || "" }, job.state),
    el("td", {}, String(job.pid)), el("td", {}, job.state === "failed" ? (job.log_tail || "").trim().split("\n").pop() : "")));
  $("#jobs-table tbody").replaceChildren(...rows);
}

// "120 of them documents, 30 general text": what the training split mixes in besides the domain data.
function mixtureText(m) {
  const parts = [];
  if (m.documents_sequences) parts.push(`${m.documents_sequences} documents`);
  if (m.general_sequences) parts.push(`${m.general_sequences} general text`);
  return `of them ${parts.join(", ")}`;
}
