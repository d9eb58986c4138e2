// Entry point: tabs, theme, the live link and the header badges. Each tab loads its data the
// first time it is shown and refreshes on the events that concern it.

import { createLive } from "./live.js";
import * as compare from "./compare.js";
import * as datasets from "./datasets.js";
import * as models from "./models.js";
import * as monitoring from "./monitoring.js";
import * as testing from "./testing.js";
import * as training from "./training.js";
import { $, toast } from "./ui.js";

const TABS = ["training", "monitoring", "compare", "testing", "models", "datasets"];
const loaders = {
  training: () => {},
  monitoring: () => monitoring.refreshRuns(),
  compare: () => compare.refreshRuns(),
  testing: () => testing.refreshModels(),
  models: () => models.refresh(),
  datasets: () => datasets.refresh(),
};
let awaitingJob = null;
let lastActive = "";

function show(tab) {
  if (!TABS.includes(tab)) tab = "training";
  for (const name of TABS) {
    $(`#tab-${name}`).hidden = name !== tab;
    document.querySelector(`nav.tabs [data-tab=${name}]`).setAttribute("aria-selected", String(name === tab));
  }
  if (location.hash !== `#${tab}`) history.replaceState(null, "", `#${tab}`);
  Promise.resolve(loaders[tab]()).catch((err) => toast(err.message, true));
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("theme", theme);
  monitoring.rethemeCharts();
  compare.rethemeCharts();
}

function showTrainingStatus(status) {
  training.showJobs(status);
  const badge = $("#run-badge");
  badge.textContent = status.active.length ? `training: ${status.active.join(", ")}` : "no run active";
  badge.className = "badge" + (status.active.length ? " ok" : "");
  const key = status.active.join(",");
  if (key !== lastActive) { lastActive = key; monitoring.refreshRuns(); }
  if (awaitingJob) {
    const job = status.jobs.find((j) => j.id === awaitingJob);
    if (job && job.run) { awaitingJob = null; monitoring.refreshRuns(job.run); }
    else if (job && job.state === "failed") { awaitingJob = null; toast(`Training failed: ${(job.log_tail || "").trim().split("\n").pop()}`, true); }
  }
}

let seenRestarts = null;

function showServer(server) {
  const badge = $("#server-badge");
  const s = server.status;
  const restarted = server.restarts ? ` · restarted ${server.restarts}×` : "";
  badge.textContent = (!server.up ? "server: down" : s && s.loaded ? `server: ${s.model}${s.busy ? " (busy)" : ""}` : "server: up, no model") + restarted;
  badge.className = "badge " + (server.up ? "ok" : "bad");
  badge.title = server.url + (server.restarted_at ? ` (last restart ${new Date(server.restarted_at * 1000).toLocaleTimeString()})` : "");
  if (seenRestarts !== null && server.restarts > seenRestarts) {
    const s = server.status;
    toast(s && s.model ? `The model server restarted; reloading ${s.model}`
      : "The model server restarted with no model: load one in the Testing or Models tab", !(s && s.model));
  }
  seenRestarts = server.restarts;
  testing.showServer(server);
  models.showServer(server);
}

function start() {
  if (!window.Chart || !window.io) {
    document.querySelector("main").prepend(Object.assign(document.createElement("p"), {
      className: "panel error-text", textContent: "The front-end libraries are missing: run `make web-assets` (scripts/build-web-assets.sh)." }));
    return;
  }
  const live = createLive();
  live.on("training_status", showTrainingStatus);
  live.on("server_status", showServer);
  live.on("metrics_error", (e) => toast(e.message, true));
  monitoring.init(live);
  compare.init();
  testing.init();
  datasets.init();
  models.init({ changed: () => { models.refresh(); monitoring.refreshRuns(); } });
  training.init({
    started: (job) => { awaitingJob = job.id; show("monitoring"); },
  }).catch((err) => toast(err.message, true));
  document.querySelectorAll("nav.tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
  $("#theme-toggle").addEventListener("click", () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark"));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  show(location.hash.slice(1) || "training");
}

start();
