"""``genlab-review`` / ``python -m genlab.review``: compare runs. Prints a summary table and
writes one self-contained report.html (no server; images and plotly.js embedded).

    genlab-review outputs/                                   # every run and evaluation
    genlab-review outputs/train/multiruns/<date>_<time>      # a sweep
    genlab-review RUN_DIR RUN_DIR ... -o review.html --metric eval/fid

PATH is a run directory, a multirun directory or any folder holding runs (outputs/). The metric
(`--metric`) is a column of the table: `best/val/<name>` (at the epoch where the monitored
metric was best), `last/val/<name>`, `test/<name>` (train.py's test), `eval/<name>` (the newest
evaluate.py run on the run's checkpoints: fid, bpd, kid_mean, task/...). It sorts the table and
is what a sweep's settings are plotted against. Exit status 1 with a one-paragraph message for
input the user can fix (no runs, a damaged run, an unknown metric).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from genlab.errors import ArgumentParser, GenlabError, exit_status
from genlab.review.report import OK, columns, fmt, write_report
from genlab.review.runs import Run, better, describe_time, load_runs, sweeps, table_settings


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="genlab-review", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Open the report in a browser (file://...); README: Reviewing runs.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="run directories, multirun directories or folders holding runs")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="the HTML file to write (default: report.html in the first PATH)")
    p.add_argument("--metric", default=None,
                   help="the column to sort by and to plot sweeps against (default: best/ of "
                        "the runs' monitored metric, e.g. best/val/bpd; else eval/fid)")
    p.add_argument("--mode", choices=("min", "max"), default=None,
                   help="whether smaller or larger --metric is better (default: the monitor's "
                        "mode, max for elbo / IS / precision / recall / PSNR / SSIM, else min)")
    p.add_argument("--max-grid-epochs", type=int, default=12,
                   help="epochs on the sample-grid slider, spread evenly (default 12)")
    p.add_argument("--no-html", action="store_true", help="only print the table")
    return p


def default_metric(runs: list[Run], cols: list[str]) -> str | None:
    for run in runs:
        monitor, _ = run.monitor
        if monitor and f"best/{monitor}" in cols:
            return f"best/{monitor}"
    return next((c for c in ("eval/fid", "eval/bpd") if c in cols), None)


def summary_table(runs: list[Run], metric: str | None, mode: str) -> Table:
    cols = columns(runs)
    settings = [f"set:{k}" for k in table_settings(runs)][:4]
    metrics = [metric] if metric else []
    metrics += [c for c in ("eval/fid", "eval/bpd", "test/bpd") if c in cols and c != metric]
    metrics += [f"last/{metric[5:]}"] if metric and metric.startswith("best/") else []
    metrics = [m for m in dict.fromkeys(metrics) if m in cols][:5]
    table = Table(title=f"{len(runs)} runs, sorted by {metric} ({mode})" if metric
                  else f"{len(runs)} runs", header_style="bold")
    for name in ["run", "status", "model", "data", *(s[4:] for s in settings), "epochs", "steps",
                 "wall", "params", *metrics]:
        table.add_column(name, justify="left" if name in ("run", "status") else "right",
                         style="bold" if name == metric else None, no_wrap=name in metrics,
                         min_width=max(len(r.label) for r in runs) if name == "run" else None)
    for run in runs:
        row = run.row
        status = row["status"] if row["status"] in OK else f"[red]{row['status']}[/red]"
        params = row.get("parameters")
        # escape: overrides such as logger=[tensorboard,csv] read as rich markup otherwise
        table.add_row(escape(run.label), status, escape(run.model), escape(run.data),
                      *(escape(run.setting(s[4:])) for s in settings), fmt(row.get("epochs")),
                      fmt(row.get("steps")), describe_time(row.get("wall_s")),
                      f"{params / 1e6:.2f}M" if isinstance(params, int) else "",
                      *(fmt(row.get(m)) for m in metrics))
    return table


def sort_runs(runs: list[Run], metric: str | None, mode: str) -> list[Run]:
    def key(run: Run):
        value = run.row.get(metric) if metric else None
        if not isinstance(value, (int, float)) or value != value:
            return (1, 0.0)
        return (0, value if mode == "min" else -value)
    return sorted(runs, key=key)


def run(args: argparse.Namespace, console: Console) -> Path | None:
    start = time.monotonic()
    runs, evaluations = load_runs(args.paths)
    cols = columns(runs)
    metric = args.metric or default_metric(runs, cols)
    if args.metric and args.metric not in cols:
        metrics = [c for c in cols if "/" in c and not c.startswith("set:")]
        raise GenlabError(f"--metric {args.metric} is not a column of these runs; choose one of "
                          f"{', '.join(metrics) or '(none: no run logged metrics)'}.")
    mode = args.mode or (better(metric, runs) if metric else "min")
    runs = sort_runs(runs, metric, mode)
    console.print(summary_table(runs, metric, mode))
    for sweep, members in sweeps(runs).items():
        best = next((r for r in sort_runs(members, metric, mode)
                     if isinstance(r.row.get(metric), float)), None)
        if best is not None:
            console.print(f"sweep {sweep.name}: best {best.label} ({metric} "
                          f"{fmt(best.row[metric])}): {escape(best.command())}", soft_wrap=True)
    problems = [r for r in runs if r.status not in OK]
    for r in problems:
        console.print(f"[red]{r.status}[/red] {escape(r.label)}: {escape(r.error())}",
                      soft_wrap=True)
    if args.no_html:
        return None
    output = args.output or (args.paths[0] if args.paths[0].is_dir() else
                             args.paths[0].parent) / "report.html"
    write_report(runs, evaluations, output, metric or "", mode, args.paths,
                 max(2, args.max_grid_epochs))
    console.print(f"report: {output.resolve()} ({output.stat().st_size / 1e6:.1f} MB, "
                  f"{time.monotonic() - start:.1f} s)", soft_wrap=True)
    return output


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    return exit_status(lambda: run(args, console))


if __name__ == "__main__":
    sys.exit(main())
