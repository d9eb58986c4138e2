// Chart.js line charts in the page's theme, fed with full series and drawn downsampled.

import { downsample } from "./downsample.js";

export const PALETTE = ["#5b8ff0", "#f08a5b", "#4cc38a", "#c678dd", "#e0a84a", "#56b6c2", "#ef6b6b", "#98c379"];
const MAX_DRAWN = 800;

function themeColors() {
  const style = getComputedStyle(document.documentElement);
  return { text: style.getPropertyValue("--muted").trim(), grid: style.getPropertyValue("--border").trim() };
}

export function lineChart(canvas, { logY = false } = {}) {
  const colors = themeColors();
  return new window.Chart(canvas, {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      elements: { point: { radius: 0 }, line: { borderWidth: 1.5 } },
      scales: {
        x: { type: "linear", title: { display: true, text: "step", color: colors.text }, ticks: { color: colors.text }, grid: { color: colors.grid } },
        y: { type: logY ? "logarithmic" : "linear", ticks: { color: colors.text }, grid: { color: colors.grid } },
      },
      plugins: { legend: { labels: { color: colors.text, boxWidth: 12 } } },
    },
  });
}

// series: [{label, points: [{x, y}], color, dashed or dash: [on, off]}] -> redraw with at most MAX_DRAWN points each.
export function setSeries(chart, series) {
  chart.data.datasets = series.map((s, i) => ({
    label: s.label, data: downsample(s.points, MAX_DRAWN), borderColor: s.color || PALETTE[i % PALETTE.length],
    backgroundColor: s.color || PALETTE[i % PALETTE.length], borderDash: s.dash || (s.dashed ? [5, 4] : undefined),
    pointRadius: s.points.length < 40 ? 2 : 0,
  }));
  chart.update("none");
}

const QA_FILE = "qa_accuracy:"; // + a QA file's name: the server's per-file series (forgellm.analysis.series)
const FILE_DASHES = [[2, 2], [6, 2, 2, 2], [8, 3], [1, 3]];

// The QA lines of one run's chart data (`/api/dashboard/data`): the overall accuracy, then one per QA
// file (dashed, in name order). Without `color` each line takes its own; with it (Compare) all share
// the run's colour and the files differ by dash.
export function qaLines(series, { prefix = "", color } = {}) {
  const xy = (s) => s.x.map((x, i) => ({ x, y: s.y[i] }));
  const files = Object.keys(series).filter((n) => n.startsWith(QA_FILE)).sort();
  return [
    ...(series.qa_accuracy ? [{ label: `${prefix}QA accuracy`, points: xy(series.qa_accuracy), color }] : []),
    ...files.map((n, k) => ({ label: prefix + n.slice(QA_FILE.length), points: xy(series[n]), color,
      dash: FILE_DASHES[k % FILE_DASHES.length] })),
  ];
}

export function retheme(charts) {
  const colors = themeColors();
  for (const chart of charts) {
    for (const axis of Object.values(chart.options.scales)) {
      axis.ticks.color = colors.text; axis.grid.color = colors.grid;
      if (axis.title) axis.title.color = colors.text;
    }
    chart.options.plugins.legend.labels.color = colors.text;
    chart.update("none");
  }
}
