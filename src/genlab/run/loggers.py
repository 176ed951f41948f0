"""The loggers of a run (W&B, CSV, TensorBoard), closing the W&B run whatever happens, and the
library messages that only alarm a user (`quiet_library_noise`). evaluate.py logs into the W&B
run of the training run it evaluates (resumed by id, offline too)."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.errors import GenlabError
from genlab.run.layout import RunLayout


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's W&B logger without its `anonymous` argument: Lightning passes it to
    `wandb.init` even when unset, and W&B then warns on every run that the deprecated setting
    "has no effect"."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_library_noise() -> None:
    """Silence library messages that say nothing about the run (each with the reason), leaving
    every other warning alone. The "module(s) in eval mode" warning is handled where the model
    is known (`genlab.run.train`): it is silenced only when the eval-mode modules are EMA
    copies."""
    # Lightning 2.6 uses torch's LeafSpec, which torch >= 2.9 deprecates: a FutureWarning on
    # every run about Lightning's own code, with nothing for a user to change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning's advertisement for its litlogger package, printed at every Trainer start.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())


def _hydra_choice(group: str) -> str | None:
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def training_wandb_run(ckpt_path: str | Path) -> dict | None:
    """The W&B run ({id, project, entity, offline}) of the training run that wrote a checkpoint,
    from its run record, when the checkpoint still lies in that run's checkpoints/."""
    layout = RunLayout.of_checkpoint(ckpt_path)
    try:
        return json.loads(layout.record.read_text()).get("wandb") if layout else None
    except (OSError, ValueError):
        return None


def continued_wandb_run(ckpt_path: str | Path | None, run_dir: str | Path) -> dict | None:
    """The W&B run to continue: that of the run in `run_dir` when training resumes from one of
    its own checkpoints (resume=, a requeued job), so that one run directory is one W&B run."""
    layout = RunLayout.of_checkpoint(ckpt_path) if ckpt_path else None
    if layout is None or layout.root != Path(run_dir).resolve():
        return None
    return training_wandb_run(ckpt_path)


def build_loggers(cfg: DictConfig, resume_wandb: dict | None = None,
                  continue_wandb: dict | None = None) -> list[Logger]:
    """Instantiate cfg.logger, filling the W&B run name, group and tags when left null. With
    `resume_wandb` (a training run's {id, project, entity}), the W&B logger resumes that run
    (resume="allow") instead of starting one, and the config goes under `evaluate` in it. With
    `continue_wandb` (the same, for a training run continued in its directory), it resumes
    that run as training: the same id, so its curves go on in one run."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if name == "wandb" and logger_cfg.get("log_model") and logger_cfg.get("offline"):
            raise GenlabError("logger.wandb.log_model=true uploads checkpoints as W&B artifacts, "
                              "which needs an online run, but this run is offline (you are not "
                              "logged in, or WANDB_MODE=offline). Log in (`wandb login`) and pass "
                              "logger.wandb.offline=false, or leave log_model=false.")
        if name == "wandb" and resume_wandb:
            with open_dict(logger_cfg):
                for key in ("name", "group", "tags", "job_type"):  # keep the training run's
                    logger_cfg.pop(key, None)
                logger_cfg.id, logger_cfg.resume = resume_wandb["id"], "allow"
                logger_cfg.project = resume_wandb.get("project") or logger_cfg.project
                logger_cfg.entity = resume_wandb.get("entity") or logger_cfg.entity
        elif name == "wandb":
            with open_dict(logger_cfg):
                hydra = HydraConfig.get() if HydraConfig.initialized() else None
                if logger_cfg.get("name") is None:
                    logger_cfg.name = (hydra and hydra.job.override_dirname) or cfg.task_name
                if logger_cfg.get("group") is None and hydra and hydra.mode == RunMode.MULTIRUN:
                    logger_cfg.group = Path(hydra.sweep.dir).name
                if logger_cfg.get("tags") is None:
                    logger_cfg.tags = [t for t in (_hydra_choice("model"),
                                                   cfg.get("data", {}).get("name")) if t]
                if continue_wandb:
                    logger_cfg.id, logger_cfg.resume = continue_wandb["id"], "allow"
        loggers.append(instantiate(logger_cfg))
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        resumed = resume_wandb and isinstance(logger, pl_loggers.WandbLogger)
        logger.log_hyperparams({"evaluate": params} if resumed else params)
    return loggers


def log_evaluation(logger: pl_loggers.WandbLogger, metrics: dict, images: dict[str, Path],
                   table: list[dict] | None) -> None:
    """evaluate.py's results in a W&B run: the numbers as evaluate/<key> in the summary (the
    runs table then compares runs by them), each grid as an evaluate/<name> image, and the
    table of evaluation images with their per-image scores."""
    import wandb

    run = logger.experiment
    run.summary.update({f"evaluate/{key}": value for key, value in metrics.items()})
    media = {f"evaluate/{name}": wandb.Image(str(path), caption=name)
             for name, path in images.items() if path.is_file()}
    if table:
        columns = list(table[0])
        media["evaluate/images"] = wandb.Table(columns=columns, data=[
            [wandb.Image(row[c]) if c == "image" else row[c] for c in columns] for row in table])
    if media:
        run.log(media)


def close_wandb(failed: bool) -> None:
    """Finish the W&B run, if one is open, marked failed or not."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
