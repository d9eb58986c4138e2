// Models tab: every model with its details; load or unload in the server; fuse, publish, delete.

import { api } from "./api.js";
import { $, bytes, el, toast } from "./ui.js";

let onChange = () => {};

export function init({ changed }) {
  onChange = changed;
  $("#models-unload").addEventListener("click", () => act("unload", async () => {
    await api("/api/model/unload", { method: "POST", body: {} });
    toast("Model unloaded");
  }));
}

// The model server's state, pushed over SocketIO: what is loaded, and whether Unload applies.
export function showServer(server) {
  const s = server.status;
  $("#models-loaded").textContent = !server.up ? `model server at ${server.url} is not reachable`
    : s && s.loaded ? `loaded in the model server: ${s.model}${s.adapter ? ` + ${s.adapter}` : ""} (${s.engine})`
      : "no model loaded in the model server";
  $("#models-unload").disabled = !(server.up && s && s.loaded);
}

function kindOf(m) {
  if (m.run) return `${m.source} run (${m.run.status})`;
  if (m.is_adapter) return `${m.source} adapter`;
  return `${m.source}${m.is_instruct ? " · instruct" : ""}`;
}

function details(m) {
  const parts = [m.model_type, m.dtype, m.context_length && `ctx ${m.context_length}`, m.size_bytes && bytes(m.size_bytes),
    m.base_model && `base ${m.base_model}`,
    m.run && `${m.run.step}${m.run.total_steps ? ` / ${m.run.total_steps}` : ""} steps`,
    m.run && m.run.model && `on ${m.run.model.split("/").pop()}`,
    m.run && m.run.best_checkpoint && `best ${m.run.best_checkpoint}`];
  return parts.filter(Boolean).join(" · ");
}

async function act(label, fn) {
  try { await fn(); } catch (err) { toast(`${label}: ${err.message}`, true); }
}

function actions(m) {
  const buttons = [];
  const load = (body) => act("load", async () => { await api("/api/model/load", { method: "POST", body }); toast(`Loaded ${m.name}`); });
  if (!m.is_adapter && !m.run) buttons.push(el("button", { class: "btn", onclick: () => load({ model: m.name }) }, "Load"));
  if (m.run) {
    buttons.push(el("button", { class: "btn", onclick: () => load({ model: m.run.model || "default", adapter: m.name }) }, "Load"));
    buttons.push(el("button", { class: "btn", onclick: () => act("fuse", async () => {
      await api("/api/models/fuse", { method: "POST", body: { run: m.name, checkpoint: "best" } });
      toast(`Fusing ${m.name} (best checkpoint)…`); refreshTasks();
    }) }, "Fuse"));
    buttons.push(el("button", { class: "btn", onclick: () => act("publish", async () => {
      const name = prompt(`Publish ${m.name} (best checkpoint) as models/published/…`, m.name.split("/").pop());
      if (!name) return;
      await api("/api/models/publish", { method: "POST", body: { run: m.name, checkpoint: "best", name } });
      toast(`Publishing ${name}…`); refreshTasks();
    }) }, "Publish"));
  }
  if (["cpt", "ift", "published"].includes(m.source)) {
    buttons.push(el("button", { class: "btn danger", onclick: () => act("delete", async () => {
      if (!confirm(`Delete ${m.name} and every file in it? This cannot be undone.`)) return;
      await api("/api/models", { method: "DELETE", body: { name: m.name, confirm: m.name } });
      toast(`Deleted ${m.name}`); onChange();
    }) }, "Delete"));
  }
  return el("td", { class: "row" }, ...buttons);
}

// A GGUF model LM Studio or Ollama holds: imported (dequantized) into models/base on request.
function importableRow(g) {
  const importIt = () => act("import", async () => {
    const name = prompt(`Import ${g.name} as models/base/…`, g.name.split(":").slice(1).join("-").split("/").pop().replace(/\.gguf$/, "").replace(/[^A-Za-z0-9._-]+/g, "-"));
    if (!name) return;
    await api("/api/models/import", { method: "POST", body: { source: g.name, name } });
    toast(`Importing ${g.name}…`); refreshTasks();
  });
  return el("tr", { class: "importable" },
    el("td", { title: g.path }, g.name), el("td", {}, `${g.app} · importable`), el("td", {}, "GGUF"),
    el("td", { class: "num" }, "–"), el("td", {}, bytes(g.size_bytes)),
    el("td", { class: "row" }, el("button", { class: "btn", onclick: importIt }, "Import")));
}

export async function refresh() {
  const { models, importable = [] } = await api("/api/models");
  $("#models-table tbody").replaceChildren(...models.map((m) => el("tr", {},
    el("td", { title: m.path }, m.name), el("td", {}, kindOf(m)), el("td", {}, m.architecture || (m.adapter_format ? `${m.adapter_format} adapter` : "–")),
    el("td", { class: "num" }, m.num_parameters ? `${(m.num_parameters / 1e6).toFixed(1)}M` : "–"),
    el("td", {}, details(m)), actions(m))), ...importable.map(importableRow));
  await refreshTasks();
}

async function refreshTasks() {
  const { tasks } = await api("/api/tasks");
  $("#tasks-table tbody").replaceChildren(...tasks.map((t) => el("tr", {},
    el("td", {}, t.command), el("td", {}, t.state), el("td", {}, el("pre", { class: "preview" }, t.log_tail.split("\n").slice(-6).join("\n"))))));
}
