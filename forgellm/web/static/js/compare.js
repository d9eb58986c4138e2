// Compare tab: several runs overlaid, with their final and best metrics.

import { api } from "./api.js";
import { PALETTE, lineChart, qaLines, retheme, setSeries } from "./charts.js";
import { $, el, fillSelect, fmt, toast } from "./ui.js";

let charts;

export function init() {
  charts = { val: lineChart($("#cmp-val")), train: lineChart($("#cmp-train")), qa: lineChart($("#cmp-qa")),
    accuracy: lineChart($("#cmp-accuracy")), margin: lineChart($("#cmp-margin")) };
  $("#cmp-go").addEventListener("click", compare);
}

export function rethemeCharts() { if (charts) retheme(Object.values(charts)); }

export async function refreshRuns() {
  const { runs } = await api("/api/runs");
  const chosen = new Set([...$("#cmp-runs").selectedOptions].map((o) => o.value));
  fillSelect($("#cmp-runs"), runs.map((r) => [r.id, `${r.id} (${r.status})`]));
  for (const option of $("#cmp-runs").options) option.selected = chosen.has(option.value);
}

const points = (s) => (s ? s.x.map((x, i) => ({ x, y: s.y[i] })) : []);
const last = (s) => (s && s.y.length ? s.y[s.y.length - 1] : null);

async function compare() {
  const ids = [...$("#cmp-runs").selectedOptions].map((o) => o.value);
  if (!ids.length) { toast("Pick one or more runs to compare", true); return; }
  try {
    const data = await api(`/api/dashboard/data?${ids.map((id) => `run=${encodeURIComponent(id)}`).join("&")}`);
    const color = (i) => PALETTE[i % PALETTE.length];
    setSeries(charts.val, data.runs.map((r, i) => ({ label: r.id, points: points(r.series.val_loss), color: color(i) })));
    setSeries(charts.train, data.runs.map((r, i) => ({ label: r.id, points: points(r.series.train_loss), color: color(i) })));
    setSeries(charts.qa, data.runs.flatMap((r, i) => qaLines(r.series, { prefix: `${r.id} `, color: color(i) })));
    // preference runs: their held-out accuracy and margin
    document.querySelectorAll(".cmp-pref").forEach((n) => { n.hidden = !data.runs.some((r) => r.series.val_accuracy); });
    setSeries(charts.accuracy, data.runs.map((r, i) => ({ label: r.id, points: points(r.series.val_accuracy), color: color(i) })));
    setSeries(charts.margin, data.runs.map((r, i) => ({ label: r.id, points: points(r.series.val_margin), color: color(i) })));
    $("#cmp-table tbody").replaceChildren(...data.runs.map((r, i) => {
      const a = r.analysis || {};
      return el("tr", {},
        el("td", { style: `border-left: 4px solid ${color(i)}` }, r.id), el("td", {}, r.status || "–"),
        el("td", { class: "num" }, `${a.steps_done ?? "–"}${r.total_steps ? ` / ${r.total_steps}` : ""}`),
        el("td", { class: "num" }, fmt(a.final_loss ?? last(r.series.train_loss))),
        el("td", { class: "num" }, fmt(last(r.series.val_loss))),
        el("td", { class: "num" }, `${fmt(a.best_val_loss)}${a.best_val_step != null ? ` @ ${a.best_val_step}` : ""}`),
        el("td", { class: "num" }, r.series.qa_accuracy ? `${fmt(100 * last(r.series.qa_accuracy), 1)}%` : "–"),
        el("td", {}, a.best_checkpoint || "–"),
        el("td", {}, a.recommended ? a.recommended.name : "–"));
    }));
  } catch (err) {
    toast(err.message, true);
  }
}
