"""The run record: what a training run was and how it ended, in <run>/run.json (RunLayout.record),
and its final numbers in the loggers' run summaries. The log (train.log) gets one line per
validation epoch and the error that ended the run.

run.json is rewritten (atomically) when fitting starts, after every validation epoch, after
testing and when the run ends or fails, so a run killed from outside still shows how far it got:

    status        running | finished | failed | interrupted
    started, updated, wall_s       ISO times and seconds from the start of fitting to the update
    parameters    trainable parameters of the model
    epochs, steps Lightning's current_epoch (completed epochs, once finished) and global_step
    monitor, mode the checkpoint callback's metric (or the model's) and min / max
    best          every val/ metric at the epoch where `monitor` was best (with epoch, step)
    last          every val/ metric of the last validation epoch (with epoch, step)
    test          the test/ metrics of train.py's test run (test=true)
    wandb         {id, project, entity, offline} of the W&B run: evaluate.py logs into that run
    error         "<type>: <message>" of the exception that ended the run

At the end of fitting, `best/<metric>`, `last/<metric>`, `best/epoch`, `parameters`, `wall_s`
go into the W&B run summary (so the runs table compares runs) and into TensorBoard's HParams
view as the metrics of the run's hyperparameters. The best / last values travel in checkpoints,
so a resumed run keeps its best epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from genlab.files.atomic import atomic_write
from genlab.run.layout import RunLayout

log = logging.getLogger(__name__)
HPARAMS = ("model", "data", "trainer", "seed", "optimized_metric")  # config parts in HParams


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _numbers(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and v.numel() == 1}


def final_metrics(record: dict) -> dict[str, float]:
    """The flat summary of a record: best/<metric>, best/epoch, last/<metric>, parameters,
    wall_s."""
    summary = {}
    for which in ("best", "last"):
        for key, value in (record.get(which) or {}).items():
            summary[f"{which}/{key}"] = value
    summary.update({k: record[k] for k in ("parameters", "wall_s", "epochs", "steps")
                    if record.get(k) is not None})
    return summary


class RunRecord(L.Callback):
    def __init__(self, run_dir: str | Path):
        self.layout = RunLayout(Path(run_dir))
        self.record: dict = {}
        self.best: dict | None = None
        self.last: dict | None = None
        self._start = 0.0

    def state_dict(self) -> dict:
        return {"best": self.best, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.last = state.get("best"), state.get("last")

    def _monitor(self, trainer: L.Trainer, model) -> tuple[str | None, str]:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.monitor:
            return checkpoint.monitor, checkpoint.mode
        return getattr(model, "monitor", None), getattr(model, "monitor_mode", "min")

    @rank_zero_only
    def _write(self, trainer: L.Trainer, **changes) -> None:
        self.record.update(changes, updated=_now(), wall_s=round(time.monotonic() - self._start, 1),
                           epochs=trainer.current_epoch, steps=trainer.global_step,
                           best=self.best, last=self.last)
        with atomic_write(self.layout.record, "w") as f:
            f.write(json.dumps(self.record, indent=2, allow_nan=True) + "\n")

    def on_fit_start(self, trainer: L.Trainer, model) -> None:
        self._start = time.monotonic()
        monitor, mode = self._monitor(trainer, model)
        wandb = None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                wandb = {"id": run.id, "project": run.project, "entity": run.entity or None,
                         "offline": bool(run.offline)}
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.record = {"status": "running", "started": _now(), "parameters": parameters,
                       "monitor": monitor, "mode": mode, "wandb": wandb}
        log.info("fitting %s (%d trainable parameters); run record: %s",
                 type(model).__name__, parameters, self.layout.record)
        self._write(trainer)

    def on_validation_end(self, trainer: L.Trainer, model) -> None:
        if trainer.sanity_checking:
            return
        metrics = _numbers(trainer.callback_metrics, "val/")
        if not metrics:
            return
        where = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        self.last = {**where, **metrics}
        log.info("epoch %d, step %d: %s", *where.values(),  # the log's tail tells how it went
                 ", ".join(f"{k} {v:.5g}" for k, v in metrics.items()))
        monitor, mode = self.record.get("monitor"), self.record.get("mode", "min")
        value = metrics.get(monitor)
        if value is not None and math.isfinite(value):
            best = None if self.best is None else self.best.get(monitor)
            if best is None or (value < best if mode == "min" else value > best):
                self.best = {**where, **metrics}
        self._write(trainer)

    def on_fit_end(self, trainer: L.Trainer, model) -> None:
        status = "interrupted" if trainer.interrupted else "finished"
        log.info("%s after %d epochs, %d steps", status, trainer.current_epoch, trainer.global_step)
        self._write(trainer, status=status)
        self._summarize(trainer)

    def on_test_end(self, trainer: L.Trainer, model) -> None:
        if self.record:  # train.py's test after fitting (not a test-only trainer)
            self._write(trainer, test=_numbers(trainer.callback_metrics, "test/"))

    def on_exception(self, trainer: L.Trainer, model, exception: BaseException) -> None:
        if not self.record:
            return
        interrupted = isinstance(exception, (KeyboardInterrupt, SystemExit))  # signals
        error = f"{type(exception).__name__}: {exception}"
        if not interrupted:
            log.error("the run failed: %s", error)  # into train.log, for genlab-review
        self._write(trainer, status="interrupted" if interrupted else "failed", error=error)

    @rank_zero_only
    def _summarize(self, trainer: L.Trainer) -> None:
        """best/ and last/ metrics into the W&B summary and TensorBoard's HParams view."""
        summary = final_metrics(self.record)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(summary)
            elif isinstance(logger, TensorBoardLogger):  # HParams: what a run varies
                numbers = {k: v for k, v in summary.items() if math.isfinite(v)}
                params = {k: v for k, v in logger.hparams.items() if k in HPARAMS}
                logger.log_hyperparams(params, metrics=numbers)
