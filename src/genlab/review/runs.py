"""Reading run directories for review, through `RunLayout`: training runs with their record,
CSV log, grids and evaluations, evaluate runs, and the sweeps they belong to."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from genlab.config import register_resolvers
from genlab.errors import GenlabError
from genlab.run.layout import RunLayout

_UNSET = object()
# metrics where a larger value is better; every other metric is better smaller
HIGHER_IS_BETTER = ("elbo", "is_mean", "precision", "recall", "psnr", "ssim", "accuracy", "d_real")


@dataclass
class Evaluation:
    """An evaluate.py run: its numbers (metrics.json) and grids."""

    layout: RunLayout
    metrics: dict
    tasks: list[str]

    @property
    def checkpoint(self) -> Path:
        return Path(self.metrics.get("ckpt_path", ""))

    def numbers(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def grids(self) -> dict[str, Path]:
        """The images of the evaluation: samples, FID samples, one per task, that exist."""
        grids = {"samples": self.layout.eval_samples,
                 "fid samples": self.layout.root / "fid_samples.png",
                 **{task: self.layout.task_grid(task) for task in self.tasks}}
        return {name: path for name, path in grids.items() if path.is_file()}


@dataclass
class Run:
    """A training run: its config, command line, record, logged metrics and evaluations."""

    layout: RunLayout
    config: DictConfig  # as Hydra saved it: interpolations resolve on access (select)
    overrides: list[str]
    choices: dict[str, str]
    record: dict
    history: list[dict[str, float]]
    evaluations: list[Evaluation] = field(default_factory=list)
    label: str = ""

    def select(self, key: str, default=None):
        """A config value (interpolations resolved), `default` where unset or unresolvable."""
        return OmegaConf.select(self.config, key, default=default,
                                throw_on_resolution_failure=False)

    @property
    def model(self) -> str:
        return self.choices.get("model") or str(self.select("model._target_"))

    @property
    def data(self) -> str:
        return str(self.select("data.name") or self.choices.get("data") or "?")

    @property
    def sweep(self) -> Path | None:
        """The multirun folder this run is a job of."""
        parent = self.layout.root.parent
        return parent if (parent / "multirun.yaml").is_file() else None

    @property
    def monitor(self) -> tuple[str | None, str]:
        monitor = self.record.get("monitor") or self.select("callbacks.model_checkpoint.monitor")
        mode = self.record.get("mode") or self.select("callbacks.model_checkpoint.mode")
        return monitor, mode or "min"

    def settings(self) -> dict[str, str]:
        """The command-line overrides as key -> value (`~key`: removed; hydra.* and paths.*
        left out), values in one spelling (Hydra writes a sweep job's `false` as `False`)."""
        settings = {}
        for override in self.overrides:
            key, _, value = override.lstrip("+").partition("=")
            if key.startswith("~"):
                key, value = key[1:], "(removed)"
            if not key.startswith(("hydra.", "paths.")):
                settings[key] = canonical(value)
        return settings

    def setting(self, key: str) -> str:
        """The value of `key` for this run: its override, else the config group's choice or
        the config value."""
        if key in (settings := self.settings()):
            return settings[key]
        if key in self.choices:
            return canonical(str(self.choices[key]))
        value = self.select(key, default=_UNSET)
        if value is _UNSET:
            return "(unset)"
        if isinstance(value, DictConfig) and len(value) and all(
                isinstance(v, DictConfig) and "_target_" in v for v in value.values()):
            # a group composed from a list (logger: [wandb, csv]): Hydra records no choice for
            # it; its options, spelled as the override logger=[tensorboard,csv] is
            return f"[{','.join(map(str, value))}]"
        if OmegaConf.is_config(value):
            try:
                return json.dumps(OmegaConf.to_container(value, resolve=True))
            except Exception:  # ${hydra:...} and the like resolve only inside a Hydra run
                return json.dumps(OmegaConf.to_container(value, resolve=False))
        return canonical(json.dumps(value) if value is None or isinstance(value, bool)
                         else str(value))

    def command(self) -> str:
        """The command line that trains this run again."""
        overrides = [o.removesuffix("=null") if o.startswith("~") else o
                     for o in self.overrides if not o.startswith("hydra.")]
        return " ".join(["python train.py", *map(shlex.quote, overrides)])

    def curves(self) -> dict[str, tuple[list[float], list[float]]]:
        """Each logged metric as (steps, values)."""
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for row in self.history:
            for key, value in row.items():
                if key not in ("step", "epoch") and "step" in row:
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(row["step"])
                    values.append(value)
        return curves

    def best_and_last(self) -> tuple[dict, dict]:
        """Every val/ metric at the best epoch of the monitored metric, and at the last epoch:
        from the run record, else from the CSV log."""
        if self.record.get("last") is not None:
            return self.record.get("best") or {}, self.record["last"]
        rows = [r for r in self.history if any(k.startswith("val/") for k in r)]
        if not rows:
            return {}, {}
        def where(row: dict) -> dict:
            return {"epoch": int(row.get("epoch", -1)), "step": int(row.get("step", -1)),
                    **{k: v for k, v in row.items() if k.startswith("val/")}}
        monitor, mode = self.monitor
        scored = [r for r in rows if math.isfinite(r.get(monitor, math.nan))]
        best = {}
        if scored:
            pick = min if mode == "min" else max
            best = where(pick(scored, key=lambda r: r[monitor]))
        return best, where(rows[-1])

    @property
    def status(self) -> str:
        """finished, failed, diverged, interrupted, running (or killed), or unknown for runs
        written before run records existed."""
        status = self.record.get("status")
        if status is None:
            return "unknown" if self.layout.last_checkpoint.is_file() else "failed"
        error = self.record.get("error", "")
        _, last = self.best_and_last()
        numbers = [v for v in last.values() if isinstance(v, float)]
        if re.search(r"\b(nan|inf|diverged)\b", error, re.IGNORECASE) or any(
                not math.isfinite(v) for v in numbers):
            return "diverged"
        return status

    def error(self) -> str:
        if error := self.record.get("error"):
            return error
        if not self.record:
            return "no run record (run.json): the run stopped before training started"
        if self.record.get("status") == "running":
            return (f"last recorded at {self.record.get('updated')}: still running, or killed "
                    "before it could record how it ended")
        return ""

    def log_tail(self, lines: int = 20) -> str:
        logs = self.layout.logs()
        if not logs:
            return "(no log file)"
        return "\n".join(logs[0].read_text(errors="replace").splitlines()[-lines:])

    @cached_property
    def row(self) -> dict[str, float | str | None]:
        """The run's numbers for the comparison table (read once evaluations are attached)."""
        best, last = self.best_and_last()
        monitor, _ = self.monitor
        steps = self.record.get("steps", max((r["step"] for r in self.history if "step" in r),
                                             default=None))
        epochs = self.record.get("epochs")
        if epochs is None and (known := [r["epoch"] for r in self.history if "epoch" in r]):
            epochs = int(max(known)) + 1
        row = {"status": self.status, "model": self.model, "data": self.data,
               "epochs": epochs, "steps": steps, "wall_s": self.record.get("wall_s"),
               "parameters": self.record.get("parameters"), "monitor": monitor,
               "best/epoch": best.get("epoch")}
        row.update({f"best/{k}": v for k, v in best.items() if k.startswith("val/")})
        row.update({f"last/{k}": v for k, v in last.items() if k.startswith("val/")})
        row.update(self.record.get("test") or {})
        if self.evaluations:
            latest = self.evaluations[-1]
            row["eval/ckpt"] = latest.checkpoint.name
            row.update({f"eval/{k}": v for k, v in latest.numbers().items()})
        return row


def better(metric: str, runs: list[Run]) -> str:
    """"min" or "max" for a table column: the monitor's mode for best/<monitor>, else by name."""
    for run in runs:
        monitor, mode = run.monitor
        if monitor and metric in (f"best/{monitor}", f"last/{monitor}"):
            return mode
    name = metric.rsplit("/", 1)[-1]
    return "max" if name in HIGHER_IS_BETTER or metric.endswith(HIGHER_IS_BETTER) else "min"


def _unreadable(path: Path, err: Exception) -> GenlabError:
    return GenlabError(f"{path} cannot be read ({type(err).__name__}: {err}). genlab-review "
                       f"reads the files train.py and evaluate.py write; this run directory "
                       f"({path.parent if path.parent.name != '.hydra' else path.parent.parent}) "
                       "is damaged or was not written by them. Move it out of the way or pass "
                       "the other runs' paths.")


def _read_yaml(path: Path, default=None):
    if not path.is_file():
        return default
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise _unreadable(path, err) from None


def _read_config(path: Path) -> DictConfig:
    data = _read_yaml(path, {})
    if not isinstance(data, dict):
        raise _unreadable(path, ValueError("not a mapping"))
    return OmegaConf.create(data)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _unreadable(path, err) from None
    if not isinstance(data, dict):
        raise _unreadable(path, ValueError("not a JSON object"))
    return data


def read_history(layout: RunLayout) -> list[dict[str, float]]:
    """The rows of the run's CSV logs as numbers (blank cells left out)."""
    rows = []
    for path in layout.csv_metrics():
        try:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    rows.append({k: float(v) for k, v in row.items() if k and v not in ("", None)})
        except (OSError, ValueError, csv.Error) as err:
            raise _unreadable(path, err) from None
    return rows


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Every run directory (one with .hydra/config.yaml) at or under the given paths."""
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists():
            raise GenlabError(f"{path} does not exist. Pass a run directory (outputs/train/runs/"
                              "<date>_<time>), a multirun directory (outputs/train/multiruns/"
                              "<date>_<time>) or a folder holding runs, such as outputs/.")
        configs = [path / ".hydra" / "config.yaml"] if path.is_dir() else []
        configs += sorted(path.rglob(".hydra/config.yaml")) if path.is_dir() else []
        for config in configs:
            if config.is_file() and "wandb" not in config.parts:
                found[config.parent.parent.resolve()] = None
    return sorted(found)


def _label(root: Path, roots: list[Path]) -> str:
    """A short name: the run folder, with the sweep folder before it for multirun jobs, and
    the folders above that where two runs would share the name."""
    def name(path: Path, parents: int) -> str:
        return "/".join(path.parts[-1 - parents:])
    parents = 1 if (root.parent / "multirun.yaml").is_file() else 0
    while parents < len(root.parts) - 1 and sum(
            name(r, parents) == name(root, parents) for r in roots) > 1:
        parents += 1
    return name(root, parents)


def load_runs(paths: list[Path]) -> tuple[list[Run], list[Evaluation]]:
    """The training runs and evaluate runs under `paths`; each evaluation is attached to the
    training run whose checkpoint it evaluated, when that run is among them."""
    roots = find_run_dirs(paths)
    if not roots:
        raise GenlabError(f"No runs under {', '.join(map(str, paths))}: a run directory holds "
                          ".hydra/config.yaml (train.py and evaluate.py write it). Pass a run "
                          "directory, a multirun directory or outputs/.")
    register_resolvers()  # the configs' own (paths); Hydra's ${now:} is only in hydra.yaml
    runs, evaluations = [], []
    for root in roots:
        layout = RunLayout(root)
        config = _read_config(layout.config)
        hydra = (_read_yaml(layout.hydra, {}) or {}).get("hydra", {})
        if config.get("task_name") == "evaluate":
            evaluations.append(Evaluation(layout, _read_json(layout.metrics),
                                          list(config.get("tasks") or [])))
            continue
        runs.append(Run(layout, config, list(_read_yaml(layout.overrides, []) or []),
                        dict(hydra.get("runtime", {}).get("choices") or {}),
                        _read_json(layout.record), read_history(layout)))
    for run in runs:
        run.label = _label(run.layout.root, [r.layout.root for r in runs])
    by_root = {run.layout.root: run for run in runs}
    for evaluation in sorted(evaluations, key=lambda e: e.layout.root.name):
        trained = RunLayout.of_checkpoint(evaluation.checkpoint) if evaluation.metrics else None
        if trained is not None and trained.root in by_root:
            by_root[trained.root].evaluations.append(evaluation)
    return runs, evaluations


def differing_settings(runs: list[Run], shown: tuple[str, ...] = ()) -> list[str]:
    """The override keys whose values differ between the runs (less those in `shown`)."""
    keys = dict.fromkeys(k for run in runs for k in run.settings() if k not in shown)
    return [k for k in keys if len({run.setting(k) for run in runs}) > 1]


def table_settings(runs: list[Run]) -> list[str]:
    """The settings that differ between the runs, those swept in a multirun first; model and
    data have columns of their own."""
    swept = {k for members in sweeps(runs).values() for k in differing_settings(members)}
    keys = differing_settings(runs, ("model", "data"))
    return sorted(keys, key=lambda k: k not in swept)


def sweeps(runs: list[Run]) -> dict[Path, list[Run]]:
    """The runs of each multirun folder that holds at least two of them."""
    groups: dict[Path, list[Run]] = {}
    for run in runs:
        if run.sweep is not None:
            groups.setdefault(run.sweep, []).append(run)
    return {k: v for k, v in groups.items() if len(v) > 1}


def canonical(value: str) -> str:
    """One spelling per value: true/false, null, 2 for 2.0, 0.001 for 1e-3."""
    if value.lower() in ("true", "false", "null", "none"):
        return {"none": "null"}.get(value.lower(), value.lower())
    try:
        return str(int(value))
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def as_number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def describe_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def started(run: Run) -> str:
    try:
        return datetime.fromisoformat(run.record["started"]).strftime("%Y-%m-%d %H:%M")
    except (KeyError, ValueError, TypeError):
        return ""
