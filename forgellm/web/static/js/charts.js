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

// series: [{label, points: [{x, y}], color, dashed}] -> redraw with at most MAX_DRAWN points each.
export function setSeries(chart, series) {
  chart.data.datasets = series.map((s, i) => ({
    label: s.label, data: downsample(s.points, MAX_DRAWN), borderColor: s.color || PALETTE[i % PALETTE.length],
    backgroundColor: s.color || PALETTE[i % PALETTE.length], borderDash: s.dashed ? [5, 4] : undefined,
    pointRadius: s.points.length < 40 ? 2 : 0,
  }));
  chart.update("none");
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
