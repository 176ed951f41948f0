"""What a run directory holds: the one place that names its files. train.py writes them (through
the configs, which must agree: tests check), evaluate.py and the review tool (genlab-review)
read them.

    <run>/checkpoints/last.ckpt        the newest checkpoint (every epoch, for resuming)
    <run>/checkpoints/step.ckpt        every N training steps (callbacks.step_checkpoint)
    <run>/checkpoints/interrupted.ckpt where a signal stopped training (genlab.callbacks.
                                       interruption)
    <run>/checkpoints/best-*.ckpt      the best by the model's monitored metric
    <run>/samples/samples.png          sample grid from fixed noise (and samples_epochNNNN.png)
    <run>/samples/reconstructions.png  for models that reconstruct (and _epochNNNN.png)
    <run>/run.json                     the run record (genlab.callbacks.RunRecord): status,
                                       wall time, steps, epochs, parameters, W&B run id, best
                                       and last validation metrics, test metrics, the error
    <run>/samples/long_run.png         for models sampled by chains (EBMs): long-run chains
    <run>/metrics.json                 evaluate.py's numbers (in the evaluate run's directory)
    <run>/samples.png, <task>.png      evaluate.py's sample grid and task grids (same place)
    <run>/csv/version_*/metrics.csv    logged metrics (logger=csv, part of the default)
    <run>/tensorboard/                 TensorBoard event files (logger=tensorboard)
    <run>/wandb/                       the W&B run (offline-run-* when offline)
    <run>/.hydra/config.yaml           the composed config; overrides.yaml, the command line;
                                       hydra.yaml, Hydra's own settings (sweep, job name)
    <run>/<job>.log                    the log (train.log, evaluate.log)
Train and evaluate runs live apart: outputs/train/runs/<date>_<time>/ and
outputs/evaluate/runs/<date>_<time>/ (multiruns: outputs/<job>/multiruns/<date>_<time>/<n>/,
with the sweep's multirun.yaml in <date>_<time>/).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_EPOCH_GRID = re.compile(r"(?P<key>.+)_epoch(?P<epoch>\d+)\.png")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def of_checkpoint(cls, path: str | Path) -> RunLayout | None:
        """The run a checkpoint was written by, if it still lies in its run's checkpoints/."""
        path = Path(path).resolve()
        if path.parent.name != "checkpoints":
            return None
        layout = cls(path.parent.parent)
        return layout if layout.checkpoints == path.parent else None

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    def best_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints.glob("best-*.ckpt"))

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @staticmethod
    def epoch_grid_name(key: str, epoch: int) -> str:
        """The file name of a grid (`samples`, `reconstructions`) saved after `epoch`."""
        return f"{key}_epoch{epoch:04d}.png"

    def epoch_grids(self, key: str) -> dict[int, Path]:
        """The grids of `key` saved during training, by epoch."""
        grids = {}
        for path in self.samples.glob(f"{key}_epoch*.png"):
            if (match := _EPOCH_GRID.fullmatch(path.name)) and match["key"] == key:
                grids[int(match["epoch"])] = path
        return dict(sorted(grids.items()))

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def eval_samples(self) -> Path:
        return self.root / "samples.png"

    def task_grid(self, task: str) -> Path:
        return self.root / f"{task}.png"

    @property
    def csv(self) -> Path:
        return self.root / "csv"

    def csv_metrics(self) -> list[Path]:
        """The CSV logs, oldest first (a run resumed in its own folder adds a version)."""
        def version(path: Path) -> int:
            number = path.parent.name.removeprefix("version_")
            return int(number) if number.isdigit() else -1
        return sorted(self.csv.glob("version_*/metrics.csv"), key=version)

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"

    @property
    def config(self) -> Path:
        return self.root / ".hydra" / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.root / ".hydra" / "overrides.yaml"

    @property
    def hydra(self) -> Path:
        return self.root / ".hydra" / "hydra.yaml"

    def logs(self) -> list[Path]:
        return sorted(self.root.glob("*.log"))
