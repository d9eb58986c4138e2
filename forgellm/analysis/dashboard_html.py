"""A self-contained HTML dashboard: Chart.js, the data and the styles all inline.

The plotting library is the same Chart.js build the web app serves (``forgellm/web/static/vendor``),
copied into the page, so the file opens offline and can be mailed around: it loads nothing from
the network. The summary and recommendations are plain HTML written here.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from forgellm.analysis.series import qa_series, series_label

CHART_JS = Path(__file__).resolve().parents[1] / "web" / "static" / "vendor" / "chart.umd.min.js"

PANELS = [  # [title, series names, log scale, drawn only when a run has the series (preference runs, eval_qa)]
    ["Loss", ["train_loss", "val_loss"], False, False],
    ["Learning rate", ["learning_rate"], False, False],
    ["Tokens per second", ["tokens_per_second"], False, False],
    ["Gradient norm", ["grad_norm"], True, False],
    ["Preference: held-out accuracy and margin", ["val_accuracy", "val_margin"], False, True],
    ["Preference: chosen log-probability per token", ["logps_chosen"], False, True],
    ["QA accuracy (eval_qa)", ["qa_accuracy"], False, True],
]

STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:24px 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px;margin-top:16px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;height:280px;position:relative}
.panel h3{font-size:13px;margin:0 0 4px} .panel .plot{position:relative;height:250px}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.warning{color:#a15c00} .info{color:#245}
"""

# One Chart.js line chart per panel from the embedded JSON: a line per run and series (validation
# dashed, with points), a star on each run's recommended checkpoint, a dashed vertical line at the
# overfitting onset. Animation off: the page is drawn once, at load.
SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const PANELS = JSON.parse(document.getElementById('panels').textContent);
const LABELS = JSON.parse(document.getElementById('labels').textContent);
const FILE_POINTS = ['rect', 'triangle', 'rectRot', 'crossRot'];  // a run's QA files: its colour, dotted
const COLORS = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#7f7f7f'];
const many = DATA.runs.length > 1;
function points(s) { return s.x.map((x, j) => ({x: x, y: s.y[j]})); }
function datasets(names, loss) {
  const out = [];
  DATA.runs.forEach((run, i) => {
    const color = COLORS[i % COLORS.length];
    names.forEach((n, k) => {
      const s = run.series[n];
      if (!s || !s.x.length) return;
      const val = n === 'val_loss' || n === 'qa_accuracy';  // measured at evaluations: points
      const file = n.startsWith('qa_accuracy:');
      out.push({label: (many ? run.name + ' ' : '') + LABELS[n], data: points(s), borderColor: color,
                backgroundColor: color, borderDash: file ? [2, 2] : val ? [5, 3] : undefined,
                borderWidth: val || file ? 2 : 1.2, pointRadius: val || file || s.x.length < 60 ? 2.5 : 0,
                pointStyle: file ? FILE_POINTS[k % FILE_POINTS.length] : 'circle'});
    });
    if (!loss) return;
    const a = run.analysis, b = a.recommended;
    if (b && b.val_loss !== null)
      out.push({label: (many ? run.name + ' ' : '') + 'recommended ' + b.name, data: [{x: b.step, y: b.val_loss}],
                type: 'scatter', pointStyle: 'star', pointRadius: 10, borderWidth: 2, borderColor: color,
                backgroundColor: color});
    const lossSeries = run.series.train_loss || run.series.val_loss;
    if (a.overfitting_onset !== null && lossSeries) {
      const ys = lossSeries.y.concat(run.series.val_loss ? run.series.val_loss.y : []);
      out.push({label: (many ? run.name + ' ' : '') + 'overfitting onset', borderColor: color, borderDash: [2, 3],
                pointRadius: 0, borderWidth: 1, data: [{x: a.overfitting_onset, y: Math.min(...ys)},
                                                       {x: a.overfitting_onset, y: Math.max(...ys)}]});
    }
  });
  return out;
}
const grid = document.getElementById('charts');
window.CHARTS = PANELS.filter(([, names, , optional]) => !optional || datasets(names, false).length)
  .map(([title, names, log]) => {
  const panel = document.createElement('div'); panel.className = 'panel';
  const h = document.createElement('h3'); h.textContent = title; panel.appendChild(h);
  const box = document.createElement('div'); box.className = 'plot'; panel.appendChild(box);
  grid.appendChild(panel);
  const sets = datasets(names, title === 'Loss');
  if (!sets.length) { box.textContent = 'no data'; return null; }
  const canvas = document.createElement('canvas'); canvas.setAttribute('aria-label', title); box.appendChild(canvas);
  return new Chart(canvas, {type: 'line', data: {datasets: sets}, options: {
    animation: false, parsing: false, normalized: true, responsive: true, maintainAspectRatio: false,
    interaction: {mode: 'nearest', intersect: false},
    scales: {x: {type: 'linear', title: {display: true, text: 'step'}}, y: {type: log ? 'logarithmic' : 'linear'}},
    plugins: {legend: {labels: {boxWidth: 12, font: {size: 11}}}}}});
});
"""


@lru_cache(maxsize=1)
def chart_js() -> str:
    """The Chart.js build the web app ships, to inline."""
    try:
        return CHART_JS.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(
            f"Chart.js is missing from this ForgeLLM install ({CHART_JS}: {exc.strerror}); "
            f"reinstall ForgeLLM or use --format png"
        ) from None


def render_html(data: dict[str, Any], out: Path) -> Path:
    """Write the self-contained dashboard of ``data`` (from `dashboard_data`) to ``out``."""
    runs = data["runs"]
    title = runs[0]["name"] if len(runs) == 1 else f"{len(runs)} runs compared"
    # The QA panel draws the overall accuracy and one line per QA file.
    panels = [[t, qa_series(runs) if names == ["qa_accuracy"] else names, log, opt] for t, names, log, opt in PANELS]
    names = {n for run in runs for n in run["series"]}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ForgeLLM dashboard: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>ForgeLLM dashboard: {html.escape(title)}</h1>
{_summary_table(runs)}
<div class="grid" id="charts"></div>
{''.join(_recommendations(run, len(runs) > 1) for run in runs)}
<script type="application/json" id="data">{_script_json(data)}</script>
<script type="application/json" id="panels">{_script_json(panels)}</script>
<script type="application/json" id="labels">{_script_json({n: series_label(n) for n in names})}</script>
<script>{chart_js()}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def _script_json(value: Any) -> str:
    # "<" inside a <script> element could end it early ("</script>") or start a comment state.
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def _summary_table(runs: list[dict[str, Any]]) -> str:
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "run",
            "status",
            "steps",
            "final loss",
            "best val loss",
            "best checkpoint",
            "recommended",
            "stability",
            "tokens/s",
            "config",
        )
    )
    rows = []
    for run in runs:
        a = run["analysis"]
        recommended = a.get("recommended")
        cells = [
            run["name"],
            run.get("status") or "-",
            f"{a['steps_done']}" + (f"/{a['total_steps']}" if a.get("total_steps") else ""),
            _num(a.get("final_loss")),
            _num(a.get("best_val_loss")) + (f" (step {a['best_val_step']})" if a.get("best_val_step") else ""),
            a.get("best_checkpoint") or "-",
            f"{recommended['name']} (score {recommended['score']:.4f})" if recommended else "-",
            a["stability"] + (f" ({a['noise']:.1%})" if a.get("noise") is not None else ""),
            _num(a["throughput"].get("mean"), ".0f"),
            ", ".join(f"{k}={v}" for k, v in run["config"].items()),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _recommendations(run: dict[str, Any], named: bool) -> str:
    recs = run["analysis"]["recommendations"]
    title = "Recommendations" + (f" for {html.escape(run['name'])}" if named else "")
    if not recs:
        return f"<h2>{title}</h2><p>Nothing to flag: the curves look healthy.</p>"
    items = "".join(f'<li class="{html.escape(r["severity"])}">{html.escape(r["message"])}</li>' for r in recs)
    return f"<h2>{title}</h2><ul>{items}</ul>"


def _num(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)
