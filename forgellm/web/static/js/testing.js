// Testing tab: chat with streaming tokens; optionally a second model (e.g. base vs adapter)
// answers the same prompt side by side.

import { api, streamEvents } from "./api.js";
import { $, el, fillSelect, fmt, toast } from "./ui.js";

const panes = {
  a: { chat: () => $("#chat-a"), history: [], target: () => ({}) },
  b: { chat: () => $("#chat-b"), history: [], target: () => splitTarget($("#test-compare-with").value) },
};
let controller = null;

// "model||adapter" <-> {model, adapter}
const joinTarget = (model, adapter) => `${model}||${adapter || ""}`;
function splitTarget(value) {
  const [model, adapter] = value.split("||");
  return adapter ? { model, adapter } : { model };
}

export function init() {
  $("#test-load").addEventListener("click", load);
  $("#test-unload").addEventListener("click", unload);
  $("#test-compare").addEventListener("change", () => { $("#pane-b").hidden = !$("#test-compare").checked; paneTitles(); });
  $("#test-compare-with").addEventListener("change", paneTitles);
  $("#chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("#chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
  });
  $("#chat-stop").addEventListener("click", () => controller && controller.abort());
  $("#chat-clear").addEventListener("click", () => {
    for (const pane of Object.values(panes)) { pane.history = []; pane.chat().replaceChildren(); }
  });
  $("#chat-export").addEventListener("click", exportConversation);
}

export async function refreshModels() {
  const [{ models }, { checkpoints }] = await Promise.all([api("/api/models"), api("/api/checkpoints")]);
  const bases = models.filter((m) => !m.is_adapter && !m.run).map((m) => m.name);
  const adapters = [...models.filter((m) => m.is_adapter || m.run).map((m) => m.name), ...checkpoints.map((c) => c.id)];
  fillSelect($("#test-model"), bases.map((n) => [n, n]), $("#test-model").value || bases[0]);
  fillSelect($("#test-adapter"), [["", "(none)"], ...adapters.map((n) => [n, n])], $("#test-adapter").value);
  const base = $("#test-model").value;
  const targets = [...bases.map((n) => [joinTarget(n), n]), ...adapters.map((a) => [joinTarget(base, a), `${base} + ${a}`])];
  fillSelect($("#test-compare-with"), targets, $("#test-compare-with").value);
  paneTitles();
}

// Set when an answer was cut because the model server died: until it is back, say it restarts.
const RESTARTING = "the model server restarted; reloading…";
let restarting = false;

export function showServer(server) {
  const s = server.status;
  const name = s && `${s.model}${s.adapter ? ` + ${s.adapter}` : ""}`;
  $("#test-loaded").textContent = !server.up ? (restarting ? RESTARTING : "model server not reachable")
    : s && s.loaded ? `loaded: ${name} (${s.engine}, ${s.type || ""})`
    : s && s.model ? `${restarting ? "the model server restarted; " : ""}reloading ${name}…` : "no model loaded";
  if (server.up) restarting = false;
  paneTitles(s);
}

let lastStatus = null;
function paneTitles(status = lastStatus) {
  lastStatus = status;
  $("#pane-a-title").textContent = status && status.loaded ? `${status.model}${status.adapter ? ` + ${status.adapter}` : ""}` : "Loaded model";
  const b = $("#test-compare-with").selectedOptions[0];
  $("#pane-b-title").textContent = b ? b.textContent : "Compared model";
}

async function load() {
  const body = { model: $("#test-model").value };
  if ($("#test-adapter").value) body.adapter = $("#test-adapter").value;
  $("#test-loaded").textContent = `loading ${body.model}…`;
  try {
    const info = await api("/api/model/load", { method: "POST", body });
    toast(`Loaded ${info.model || body.model} in ${fmt(info.seconds, 2)} s`);
  } catch (err) {
    toast(err.message, true);
  }
}

async function unload() {
  try { await api("/api/model/unload", { method: "POST", body: {} }); toast("Model unloaded"); }
  catch (err) { toast(err.message, true); }
}

function sampling() {
  const out = {};
  for (const key of ["max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed"]) {
    const value = $(`#s-${key}`).value;
    if (value !== "") out[key] = Number(value);
  }
  return out;
}

function bubble(role, text) {
  return el("div", { class: `msg ${role}` }, el("span", { class: "text" }, text));
}

async function answer(pane, body) {
  const node = bubble("assistant", "");
  const text = node.querySelector(".text");
  pane.chat().append(node);
  let reply = "";
  let ended = false; // a done or error event arrived
  const mark = (message) => node.append(el("span", { class: "meta error" }, `✗ ${message}`));
  try {
    await streamEvents("/api/model/generate", body, (event) => {
      if (event.type === "token") {
        reply += event.text;
        text.textContent = reply;
        pane.chat().scrollTop = pane.chat().scrollHeight;
      } else if (event.type === "done") {
        ended = true;
        const usage = event.usage || {}, timings = event.timings || {};
        node.append(el("span", { class: "meta" },
          `${usage.completion_tokens ?? "?"} tokens · ${fmt(timings.tokens_per_second, 1)} tok/s · ${event.finish_reason || ""}`));
      } else if (event.type === "error" || event.error) {
        ended = true;
        if (event.error && event.error.type === "server_unavailable") {
          // The model server died mid-answer; `forgellm start` restarts it and it loads its model again.
          restarting = true;
          $("#test-loaded").textContent = RESTARTING;
          mark("answer cut off: the model server restarted; reloading");
        } else {
          mark(`error: ${(event.error && event.error.message) || event.message}`);
        }
      }
    }, controller.signal);
    if (!ended && !controller.signal.aborted) mark("answer cut off: the stream ended before the answer did");
  } catch (err) {
    if (err.name !== "AbortError") mark(`error: ${err.message}`);
  }
  pane.history.push({ role: "assistant", content: reply });
}

async function send() {
  const prompt = $("#chat-input").value.trim();
  if (!prompt || controller) return;
  $("#chat-input").value = "";
  const active = $("#test-compare").checked ? [panes.a, panes.b] : [panes.a];
  const system = $("#test-system").value.trim();
  controller = new AbortController();
  $("#chat-send").disabled = true;
  try {
    for (const pane of active) {
      pane.history.push({ role: "user", content: prompt });
      pane.chat().append(bubble("user", prompt));
    }
    // One after the other: the server answers requests in turn anyway.
    for (const pane of active) {
      const body = { messages: pane.history.slice(), stream: true, ...sampling(), ...pane.target() };
      if (system) body.system = system;
      await answer(pane, body);
      if (controller.signal.aborted) break;
    }
  } finally {
    controller = null;
    $("#chat-send").disabled = false;
  }
}

function exportConversation() {
  const data = {
    exported: new Date().toISOString(), system: $("#test-system").value, sampling: sampling(),
    panes: [{ model: $("#pane-a-title").textContent, messages: panes.a.history }]
      .concat($("#test-compare").checked ? [{ model: $("#pane-b-title").textContent, messages: panes.b.history }] : []),
  };
  const link = el("a", { href: URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" })),
    download: `forgellm-chat-${Date.now()}.json` });
  link.click();
  URL.revokeObjectURL(link.href);
}
