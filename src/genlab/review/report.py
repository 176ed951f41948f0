"""One self-contained HTML report of runs: a sortable table, training curves (plotly, its
JavaScript inlined once), sample grids over epochs, evaluations and their task grids, sweeps
(each swept setting against the optimised metric, the best configuration's command line), and
failed runs with the end of their log. Images are embedded, so the file opens from disk."""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from genlab.files.atomic import atomic_write
from genlab.review.runs import (
    Evaluation,
    Run,
    as_number,
    describe_time,
    differing_settings,
    started,
    sweeps,
    table_settings,
)

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
OK = ("finished", "unknown")
MAX_POINTS = 2000  # per curve; longer logs are thinned evenly
LEGEND_RUNS = 10  # charts with more runs have no legend


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def columns(runs: list[Run]) -> list[str]:
    """The table's columns: run facts, differing settings, then every metric."""
    rows = [run.row for run in runs]
    metrics = dict.fromkeys(k for row in rows for k in row)
    fixed = ["status", "model", "data"]
    facts = ["epochs", "steps", "wall_s", "parameters", "best/epoch"]
    ordered = [k for k in metrics if k.startswith("best/val/")]
    ordered += [k for k in metrics if k.startswith("last/val/")]
    ordered += [k for k in metrics if k.startswith("test/")]
    ordered += [k for k in metrics if k.startswith("eval/")]
    settings = [f"set:{k}" for k in table_settings(runs)]
    return fixed + settings + facts + ordered


def cell(run: Run, column: str):
    if column.startswith("set:"):
        return run.setting(column[4:])
    return run.row.get(column)


def _figure_html(fig: go.Figure, div_id: str, height: int = 320) -> str:
    fig.update_layout(height=height, margin=dict(l=50, r=10, t=40, b=40), template="plotly_white",
                      legend_font_size=10)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def curve_charts(runs: list[Run]) -> list[str]:
    """One chart per logged metric (test/ metrics, logged once, are in the table), runs
    overlaid in their table colours, each chart with its legend below it (up to LEGEND_RUNS
    runs; beyond, the table's colours and hovering name them). A metric whose positive values
    span more than a factor 1000 between runs (e.g. val/loss of a VAE and a DDPM) gets a
    logarithmic axis."""
    curves = [run.curves() for run in runs]
    names = dict.fromkeys(k for c in curves for k in c if not k.startswith("test/"))
    order = sorted(names, key=lambda k: (not k.startswith("val/"), not k.startswith("train/"), k))
    charts = []
    for n, name in enumerate(order):
        fig = go.Figure()
        values_seen = []
        for i, (run, curve) in enumerate(zip(runs, curves)):
            if name not in curve:
                continue
            steps, values = curve[name]
            stride = max(1, len(steps) // MAX_POINTS)
            values_seen += [v for v in values if math.isfinite(v)]
            fig.add_trace(go.Scatter(x=steps[::stride], y=values[::stride], name=run.label,
                                     mode="lines+markers" if len(steps) < 30 else "lines",
                                     line=dict(color=color(i))))
        low, high = min(values_seen, default=0.0), max(values_seen, default=0.0)
        log = low > 0 and high / low > 1e3
        if low == high:  # a constant (a fixed learning rate): plotly would span it by +-1
            fig.update_yaxes(range=[low - abs(low) / 2 - 1e-12, high + abs(high) / 2 + 1e-12])
        fig.update_layout(title=dict(text=name, font=dict(size=14)), xaxis_title="step",
                          yaxis_type="log" if log else None,
                          showlegend=len(runs) <= LEGEND_RUNS,
                          legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
        charts.append(_figure_html(fig, f"curve-{n}", height=380))
    return charts


def sweep_section(sweep: Path, members: list[Run], all_runs: list[Run], metric: str,
                  mode: str, index: int) -> str:
    """Each swept setting against the metric, parallel coordinates for two or more, and the
    best job's command line."""
    keys = differing_settings(members)
    scored = [(run, run.row.get(metric)) for run in members]
    scored = [(run, v) for run, v in scored if isinstance(v, float) and math.isfinite(v)]
    parts = [f"<h3>{html.escape(sweep.name)} ({len(members)} jobs; {html.escape(str(sweep))})</h3>",
             f"<p>swept: {html.escape(', '.join(keys) or 'nothing differs between the jobs')}; "
             f"metric: <code>{html.escape(metric)}</code> ({mode})</p>"]
    if not scored:
        parts.append(f"<p>No job has <code>{html.escape(metric)}</code>; choose a metric with "
                     "<code>--metric</code>.</p>")
        return "\n".join(parts)
    best_run, best_value = (min if mode == "min" else max)(scored, key=lambda rv: rv[1])
    parts.append(f"<p>best: <b>{html.escape(best_run.label)}</b>, {html.escape(metric)} = "
                 f"{fmt(best_value)}. To train it again:</p>"
                 f"<pre class='cmd'>{html.escape(best_run.command())}</pre>")
    if keys:
        fig = make_subplots(rows=1, cols=len(keys), shared_yaxes=True,
                            horizontal_spacing=0.04 if len(keys) > 1 else 0.0)
        for c, key in enumerate(keys, start=1):
            xs = [run.setting(key) for run, _ in scored]
            numbers = [as_number(x) for x in xs]
            numeric = all(x is not None for x in numbers)
            fig.add_trace(go.Scatter(
                x=numbers if numeric else xs, y=[v for _, v in scored], mode="markers+text",
                text=[run.label.rsplit("/", 1)[-1] for run, _ in scored],
                textposition="top center", showlegend=False,
                marker=dict(size=11, color=[color(all_runs.index(run)) for run, _ in scored])),
                row=1, col=c)
            log = numeric and min(numbers) > 0 and max(numbers) / min(numbers) >= 20
            fig.update_xaxes(title_text=key, type="log" if log else None, row=1, col=c)
        fig.update_yaxes(title_text=metric, row=1, col=1)
        parts.append(_figure_html(fig, f"sweep-{index}", height=340))
    if len(keys) >= 2:
        dimensions = []
        for key in keys:
            xs = [run.setting(key) for run, _ in scored]
            numbers = [as_number(x) for x in xs]
            if all(x is not None for x in numbers):
                dimensions.append(dict(label=key, values=numbers))
            else:
                levels = sorted(set(xs))
                dimensions.append(dict(label=key, values=[levels.index(x) for x in xs],
                                       tickvals=list(range(len(levels))), ticktext=levels))
        values = [v for _, v in scored]
        dimensions.append(dict(label=metric, values=values))
        fig = go.Figure(go.Parcoords(dimensions=dimensions, line=dict(
            color=values, colorscale="Viridis", reversescale=mode == "min", showscale=True)))
        parts.append(_figure_html(fig, f"sweep-{index}-parallel", height=360))
    return "\n".join(parts)


def grid_strips(runs: list[Run], max_epochs: int) -> tuple[str, dict]:
    """Per grid kind (samples, reconstructions): the runs side by side, an epoch slider over
    up to `max_epochs` epochs (evenly spread, the last included). A run without a grid at that
    epoch shows its latest earlier one (its caption says which)."""
    blocks, data = [], {}
    for key in ("samples", "reconstructions"):
        per_run = [run.layout.epoch_grids(key) for run in runs]
        epochs = sorted({e for grids in per_run for e in grids})
        if not epochs:
            continue
        if len(epochs) > max_epochs:
            step = (len(epochs) - 1) / (max_epochs - 1)
            epochs = sorted({epochs[round(i * step)] for i in range(max_epochs)})
        uris: dict[str, str] = {}
        shown = []
        for grids in per_run:
            row = []
            for epoch in epochs:
                earlier = [e for e in grids if e <= epoch]
                if not earlier:
                    row.append(None)
                    continue
                e = max(earlier)
                uris.setdefault(f"{grids[e]}", data_uri(grids[e]))
                row.append([e, str(grids[e])])
            shown.append(row)
        data[key] = {"epochs": epochs, "runs": shown, "uris": uris}
        figures = "".join(
            f"<figure class='grid'><img data-key='{key}' data-run='{i}' alt=''>"
            f"<figcaption style='border-color:{color(runs.index(run))}'>"
            f"{html.escape(run.label)}<br><span class='epoch' data-key='{key}' "
            f"data-run='{i}'></span></figcaption></figure>"
            for i, run in enumerate(runs) if per_run[i])  # (epoch 0 alone: any() is False)
        blocks.append(
            f"<h3>{key}</h3><div class='slider'>epoch <input type='range' min='0' "
            f"max='{len(epochs) - 1}' value='{len(epochs) - 1}' data-key='{key}' "
            f"oninput='showGrids(\"{key}\", this.value)'> <b class='epoch-label' "
            f"data-key='{key}'></b></div><div class='strip'>{figures}</div>")
    return "\n".join(blocks), data


def evaluation_section(runs: list[Run], evaluations: list[Evaluation]) -> str:
    if not evaluations:
        return "<p>No evaluate.py runs among these paths.</p>"
    owner = {id(e): run for run in runs for e in run.evaluations}
    keys = dict.fromkeys(k for e in evaluations for k in e.numbers())
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["evaluate run", "training run",
                                                           "checkpoint", *keys])
    rows, grids = [], []
    for e in evaluations:
        run = owner.get(id(e))
        trained = run.label if run else "(not among these runs)"
        numbers = e.numbers()
        status = "" if e.metrics else " (no metrics.json: failed)"
        rows.append("<tr>" + "".join(
            f"<td data-value='{html.escape(fmt(v))}'>{html.escape(fmt(v))}</td>"
            for v in [e.layout.root.name + status, trained, e.checkpoint.name,
                      *(numbers.get(k) for k in keys)]) + "</tr>")
        images = "".join(
            f"<figure class='grid'><img src='{data_uri(path)}' alt='{html.escape(name)}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
            for name, path in e.grids().items())
        if images:
            grids.append(f"<h3>{html.escape(e.layout.root.name)}: {html.escape(trained)}, "
                         f"{html.escape(e.checkpoint.name)}</h3><div class='strip'>{images}</div>")
    return (f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>" + "".join(grids))


def problems_section(runs: list[Run], evaluations: list[Evaluation]) -> str:
    items = []
    for run in runs:
        if run.status in OK:
            continue
        items.append(f"<div class='problem'><h3>{html.escape(run.label)}: {run.status}</h3>"
                     f"<p>{html.escape(run.error())}</p><p class='path'>"
                     f"{html.escape(str(run.layout.root))}</p>"
                     f"<pre>{html.escape(run.log_tail())}</pre></div>")
    for e in evaluations:
        if not e.metrics:
            logs = e.layout.logs()
            tail = "\n".join(logs[0].read_text(errors="replace").splitlines()[-20:]) if logs else ""
            items.append(f"<div class='problem'><h3>{html.escape(e.layout.root.name)}: evaluate "
                         f"run without metrics.json</h3><p class='path'>"
                         f"{html.escape(str(e.layout.root))}</p><pre>{html.escape(tail)}</pre>"
                         "</div>")
    return "".join(items) or "<p>None: every run finished.</p>"


def runs_table(runs: list[Run], cols: list[str], metric: str, mode: str) -> str:
    heads = ["run", "started", *cols]
    head = "".join(f"<th title='click to sort'>{html.escape(c.removeprefix('set:'))}</th>"
                   for c in heads)
    rows = []
    for i, run in enumerate(runs):
        cells = [f"<td data-value='{html.escape(run.label)}' style='border-left:6px solid "
                 f"{color(i)}'>{html.escape(run.label)}</td>", f"<td>{started(run)}</td>"]
        for c in cols:
            value = cell(run, c)
            shown = describe_time(value) if c == "wall_s" else (
                f"{value:,}" if c == "parameters" and isinstance(value, int) else fmt(value))
            sort = value if isinstance(value, (int, float)) else fmt(value)
            klass = " class='bad'" if c == "status" and value not in OK else ""
            klass = " class='key'" if c == metric else klass
            cells.append(f"<td data-value='{html.escape(str(sort))}'{klass}>"
                         f"{html.escape(shown)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    sort_col = heads.index(metric) if metric in heads else -1
    return (f"<div class='scroll'><table class='sortable' id='runs' data-sort='{sort_col}' "
            f"data-order='{'asc' if mode == 'min' else 'desc'}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:20px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px} h3{font-size:15px;margin:16px 0 6px}
.scroll{overflow-x:auto;max-width:100%} table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;position:sticky;top:0} td:first-child,th:first-child{
text-align:left} td.bad{color:#b00;font-weight:bold} td.key{background:#fff7d6;font-weight:bold}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:8px}
.strip{display:flex;flex-wrap:wrap;gap:10px} figure.grid{margin:0;text-align:center}
figure.grid img{width:200px;image-rendering:pixelated;border:1px solid #ccc}
figcaption{font-size:12px;border-top:4px solid transparent} .epoch{color:#666}
pre{background:#f6f6f6;padding:8px;font-size:11px;overflow-x:auto;max-height:320px}
pre.cmd{background:#eef6ee;font-size:13px} .problem h3{color:#b00} .path{color:#666;font-size:12px}
.meta{color:#555;font-size:13px}
"""

SCRIPT = """
function showGrids(key, i){
  const d = GRIDS[key], epoch = d.epochs[i];
  document.querySelectorAll(`.epoch-label[data-key="${key}"]`).forEach(e => e.textContent = epoch);
  document.querySelectorAll(`img[data-key="${key}"]`).forEach(img => {
    const shown = d.runs[img.dataset.run][i];
    img.src = shown ? d.uris[shown[1]] : '';
    img.style.visibility = shown ? 'visible' : 'hidden';
    const run = img.dataset.run;
    const label = document.querySelector(`.epoch[data-key="${key}"][data-run="${run}"]`);
    label.textContent = shown ? `epoch ${shown[0]}` : `no grid by epoch ${epoch}`;
  });
}
function sortTable(table, col, asc){
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const get = r => r.cells[col].dataset.value ?? r.cells[col].textContent;
  rows.sort((a, b) => {
    const x = get(a), y = get(b), nx = parseFloat(x), ny = parseFloat(y);
    const c = (x === '' || y === '') ? (x === '') - (y === '') :
      (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : x.localeCompare(y);
    return (x === '' || y === '') ? c : (asc ? c : -c);
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.sort = col; table.dataset.order = asc ? 'asc' : 'desc';
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('table.sortable').forEach(table => {
    Array.from(table.tHead.rows[0].cells).forEach((th, col) => th.addEventListener('click', () =>
      sortTable(table, col, !(table.dataset.sort == col && table.dataset.order === 'asc'))));
    const col = +table.dataset.sort;
    if (col >= 0) sortTable(table, col, table.dataset.order === 'asc');
  });
  Object.keys(GRIDS).forEach(key => showGrids(key, GRIDS[key].epochs.length - 1));
});
"""


def write_report(runs: list[Run], evaluations: list[Evaluation], path: Path, metric: str,
                 mode: str, sources: list[Path], max_grid_epochs: int = 12) -> Path:
    cols = columns(runs)
    grids_html, grids = grid_strips(runs, max_grid_epochs)
    groups = sweeps(runs)
    sweep_html = "\n".join(sweep_section(sweep, members, runs, metric, mode, i)
                           for i, (sweep, members) in enumerate(groups.items()))
    charts = "".join(f"<div>{chart}</div>" for chart in curve_charts(runs))
    failed = sum(run.status not in OK for run in runs)
    body = f"""
<h1>genlab runs: {len(runs)} training runs, {len(evaluations)} evaluations,
{len(groups)} sweeps</h1>
<p class='meta'>{html.escape(', '.join(map(str, sources)))} &middot; written
{datetime.now().strftime('%Y-%m-%d %H:%M')} by genlab-review &middot; sorted by
<code>{html.escape(metric)}</code> ({mode}; click a column to sort by it) &middot;
{failed} failed or unfinished</p>
<h2>Runs</h2>{runs_table(runs, cols, metric, mode)}
<h2>Sweeps</h2>{sweep_html or '<p>No multirun with two or more jobs among these runs.</p>'}
<h2>Training curves</h2>{f"<div class='charts'>{charts}</div>" if charts else
                         '<p>No CSV logs (train with logger=csv, part of the default).</p>'}
<h2>Sample grids over epochs</h2>{grids_html or '<p>No grids.</p>'}
<h2>Evaluations</h2>{evaluation_section(runs, evaluations)}
<h2>Failed, diverged or unfinished runs</h2>{problems_section(runs, evaluations)}
"""
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>genlab runs</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script>"
            f"<script>const GRIDS = {json.dumps(grids)};{SCRIPT}</script></head>"
            f"<body>{body}</body></html>")
    with atomic_write(path, "w") as f:
        f.write(page)
    return path
