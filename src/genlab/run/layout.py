"""What a run directory holds: the one place that names its files. train.py writes them (through
the configs, which must agree: tests check), evaluate.py and the review tools read them.

    <run>/checkpoints/last.ckpt        the newest checkpoint (every epoch, for resuming)
    <run>/checkpoints/best-*.ckpt      the best by the model's monitored metric
    <run>/samples/samples.png          sample grid from fixed noise (and samples_epochNNNN.png)
    <run>/samples/reconstructions.png  for models that reconstruct
    <run>/samples/long_run.png         for models sampled by chains (EBMs): long-run chains
    <run>/metrics.json                 evaluate.py's numbers (in the evaluate run's directory)
    <run>/csv/version_0/metrics.csv    logged metrics with logger=csv
    <run>/wandb/                       the W&B run (offline-run-* when offline)
    <run>/.hydra/config.yaml           the composed config; overrides.yaml, the command line
    <run>/<job>.log                    the log (train.log, evaluate.log)
Train and evaluate runs live apart: outputs/train/runs/<date>_<time>/ and
outputs/evaluate/runs/<date>_<time>/ (multiruns: outputs/<job>/multiruns/<date>_<time>/<n>/).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

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

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def csv(self) -> Path:
        return self.root / "csv"

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"

    @property
    def config(self) -> Path:
        return self.root / ".hydra" / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.root / ".hydra" / "overrides.yaml"
