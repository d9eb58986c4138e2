"""A self-contained HTML dashboard: data, styles and a small SVG chart renderer inline.

No external script, stylesheet or font, so the file opens offline and can be mailed around.
The charts are drawn by the inline script below (a few dozen lines of SVG), the summary and
recommendations are plain HTML written here.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

PANELS = [  # [title, series names, log scale]
    ["Loss", ["train_loss", "val_loss"], False],
    ["Learning rate", ["learning_rate"], False],
    ["Tokens per second", ["tokens_per_second"], False],
    ["Gradient norm", ["grad_norm"], True],
]

STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:24px 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:16px}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.panel h3{font-size:13px;margin:0 0 4px}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.warning{color:#a15c00} .info{color:#245} .legend span{margin-right:12px;font-size:12px}
svg text{font-size:10px;fill:#555}
"""

# Draws every panel as SVG from the embedded JSON: axes with 5 ticks, one polyline per series,
# dots on validation points, a star on the best checkpoint, a tooltip per point via <title>.
SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const PANELS = JSON.parse(document.getElementById('panels').textContent);
const COLORS = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#7f7f7f'];
const NS = 'http://www.w3.org/2000/svg', W = 460, H = 240, L = 58, R = 10, T = 10, B = 28;
function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(v) { const a = Math.abs(v); return (a !== 0 && (a < 1e-2 || a >= 1e5)) ? v.toExponential(1) : +v.toPrecision(4); }
function chart(panel) {
  const [title, names, log] = panel;
  const lines = [];
  DATA.runs.forEach((run, i) => names.forEach(n => {
    const s = run.series[n];
    if (s && s.x.length) lines.push({run, n, s, color: COLORS[i % COLORS.length], val: n === 'val_loss'});
  }));
  const div = document.createElement('div'); div.className = 'panel';
  div.innerHTML = '<h3></h3>'; div.firstChild.textContent = title;
  if (!lines.length) { div.appendChild(document.createTextNode('no data')); return div; }
  const tf = v => log ? Math.log10(Math.max(v, 1e-12)) : v;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  lines.forEach(l => { l.s.x.forEach(v => { x0 = Math.min(x0, v); x1 = Math.max(x1, v); });
                       l.s.y.forEach(v => { y0 = Math.min(y0, tf(v)); y1 = Math.max(y1, tf(v)); }); });
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const px = v => L + (v - x0) / (x1 - x0) * (W - L - R), py = v => T + (y1 - tf(v)) / (y1 - y0) * (H - T - B);
  const svg = el('svg', {viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img'}, div);
  el('title', {}, svg).textContent = title;
  for (let k = 0; k <= 4; k++) {
    const yv = y0 + (y1 - y0) * k / 4, y = T + (H - T - B) * (1 - k / 4);
    el('line', {x1: L, x2: W - R, y1: y, y2: y, stroke: '#eee'}, svg);
    el('text', {x: L - 4, y: y + 3, 'text-anchor': 'end'}, svg).textContent = fmt(log ? Math.pow(10, yv) : yv);
    const xv = x0 + (x1 - x0) * k / 4;
    el('text', {x: px(xv), y: H - 10, 'text-anchor': k === 4 ? 'end' : 'middle'}, svg).textContent = Math.round(xv);
  }
  el('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#999'}, svg);
  lines.forEach(l => {
    const pts = l.s.x.map((x, j) => px(x).toFixed(1) + ',' + py(l.s.y[j]).toFixed(1)).join(' ');
    el('polyline', {points: pts, fill: 'none', stroke: l.color, 'stroke-width': l.val ? 2 : 1.2,
                    'stroke-dasharray': l.val ? '5,3' : ''}, svg);
    if (l.val || l.s.x.length < 60) l.s.x.forEach((x, j) => {
      const c = el('circle', {cx: px(x), cy: py(l.s.y[j]), r: 2.5, fill: l.color}, svg);
      el('title', {}, c).textContent = `${l.run.name} ${l.n} step ${x}: ${fmt(l.s.y[j])}`;
    });
  });
  if (title === 'Loss') DATA.runs.forEach((run, i) => {
    const a = run.analysis, b = a.best;
    if (b && b.val_loss !== null) {
      const s = el('text', {x: px(b.step), y: py(b.val_loss) + 5, 'text-anchor': 'middle',
                            style: `font-size:18px;fill:${COLORS[i % COLORS.length]}`}, svg);
      s.textContent = '\\u2605'; el('title', {}, s).textContent = `best checkpoint ${b.name} (val loss ${fmt(b.val_loss)})`;
    }
    if (a.overfitting_onset !== null) el('line', {x1: px(a.overfitting_onset), x2: px(a.overfitting_onset), y1: T,
      y2: H - B, stroke: COLORS[i % COLORS.length], 'stroke-dasharray': '2,3'}, svg);
  });
  const legend = document.createElement('div'); legend.className = 'legend';
  lines.forEach(l => { const s = document.createElement('span'); s.style.color = l.color;
    s.textContent = (DATA.runs.length > 1 ? l.run.name + ' ' : '') + (l.val ? '- - ' : '\\u2014 ') + l.n.replace(/_/g, ' ');
    legend.appendChild(s); });
  div.appendChild(legend);
  return div;
}
const grid = document.getElementById('charts');
PANELS.forEach(p => grid.appendChild(chart(p)));
"""


def render_html(data: dict[str, Any], out: Path) -> Path:
    """Write the self-contained dashboard of ``data`` (from `dashboard_data`) to ``out``."""
    runs = data["runs"]
    title = runs[0]["name"] if len(runs) == 1 else f"{len(runs)} runs compared"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ForgeLLM dashboard: {html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>ForgeLLM dashboard: {html.escape(title)}</h1>
{_summary_table(runs)}
<div class="grid" id="charts"></div>
{''.join(_recommendations(run, len(runs) > 1) for run in runs)}
<script type="application/json" id="data">{_script_json(data)}</script>
<script type="application/json" id="panels">{_script_json(PANELS)}</script>
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
    header = "".join(f"<th>{h}</th>" for h in ("run", "status", "steps", "final loss", "best val loss",
                                                "best checkpoint", "stability", "tokens/s", "config"))
    rows = []
    for run in runs:
        a = run["analysis"]
        best = a.get("best")
        cells = [run["name"], run.get("status") or "-",
                 f"{a['steps_done']}" + (f"/{a['total_steps']}" if a.get("total_steps") else ""),
                 _num(a.get("final_loss")),
                 _num(a.get("best_val_loss")) + (f" (step {a['best_val_step']})" if a.get("best_val_step") else ""),
                 f"{best['name']} (score {best['score']:.4f})" if best else "-",
                 a["stability"] + (f" ({a['noise']:.1%})" if a.get("noise") is not None else ""),
                 _num(a["throughput"].get("mean"), ".0f"),
                 ", ".join(f"{k}={v}" for k, v in run["config"].items())]
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
