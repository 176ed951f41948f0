"""What train.py and evaluate.py do, given their composed configs."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from genlab.config import register_resolvers
from genlab.errors import GenlabError
from genlab.images import make_grid, save_png

log = logging.getLogger(__name__)
CONFIG_KEY = "genlab_config"  # where checkpoints keep the resolved run config
register_resolvers()


def report_user_errors(task: Callable) -> Callable:
    """Print a GenlabError, or a required config value left unset, as one paragraph and exit 1,
    without a traceback."""
    @functools.wraps(task)
    def wrapper(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except GenlabError as err:
            message = str(err)
        except MissingMandatoryValue as err:
            message = (f"{err.full_key} must be set: it is ??? in the config. Pass it on the "
                       f"command line, e.g. {err.full_key}=...")
        print(f"\ngenlab: {message}", file=sys.stderr)
        sys.exit(1)
    return wrapper


class StoreConfig(L.Callback):
    """Keep the resolved run config in every checkpoint, so evaluate.py can rebuild the run."""

    def __init__(self, cfg: DictConfig):
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def _hydra_choice(group: str) -> str | None:
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """Instantiate cfg.logger, filling the W&B run name, group and tags when left null."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if name == "wandb":
            with open_dict(logger_cfg):
                hydra = HydraConfig.get() if HydraConfig.initialized() else None
                if logger_cfg.get("name") is None:
                    logger_cfg.name = (hydra and hydra.job.override_dirname) or cfg.task_name
                if logger_cfg.get("group") is None and hydra and hydra.mode == RunMode.MULTIRUN:
                    logger_cfg.group = Path(hydra.sweep.dir).name
                if logger_cfg.get("tags") is None:
                    logger_cfg.tags = [t for t in (_hydra_choice("model"),
                                                   cfg.get("data", {}).get("name")) if t]
        loggers.append(instantiate(logger_cfg))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def build(node: DictConfig, **kwargs):
    """hydra.utils.instantiate, letting a GenlabError raised by the target through unwrapped."""
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, GenlabError):
            raise err.__cause__ from None
        raise


def _close_wandb(failed: bool) -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def _fill_num_classes(cfg: DictConfig, datamodule) -> None:
    if cfg.data.get("num_classes") is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes


def train(cfg: DictConfig) -> float | None:
    """Fit the model, test the best checkpoint, and return the monitored metric (for sweeps)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    _fill_num_classes(cfg, datamodule)
    if cfg.model.get("conditional") and not datamodule.labelled:
        raise GenlabError(f"model.conditional=true, but data={cfg.data.name} is unlabelled: a "
                          "class-conditional model needs a label for every image. Use labelled "
                          "data (class sub-folders for data=image_folder) or "
                          "model.conditional=false.")
    model = build(cfg.model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile_networks()

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(StoreConfig(cfg))
    failed = True
    try:
        loggers = build_loggers(cfg)
        if not loggers:  # logger=none: there is nowhere to log learning rates to
            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        checkpoint = trainer.checkpoint_callback
        score = checkpoint.best_model_score if checkpoint is not None else None
        if score is None:
            score = trainer.callback_metrics.get(model.monitor)
        if cfg.get("test") and not trainer.interrupted:
            best = checkpoint.best_model_path if checkpoint is not None else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        failed = trainer.interrupted
        return None if score is None else float(score)
    finally:
        _close_wandb(failed)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GenlabError(f"ckpt_path={path} does not exist. Give the path of a checkpoint "
                          "written by train.py, e.g. outputs/runs/<run>/checkpoints/last.ckpt.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise GenlabError(f"{path} cannot be read as a checkpoint ({type(err).__name__}: {err}). "
                          "It is corrupt or truncated; use another one, such as last.ckpt or "
                          "best-*.ckpt from the same run.") from None
    if not isinstance(checkpoint, dict) or CONFIG_KEY not in checkpoint:
        raise GenlabError(f"{path} is not a genlab checkpoint (it holds no run config); "
                          "evaluate.py needs a checkpoint written by train.py.")
    return checkpoint


def evaluate(cfg: DictConfig) -> dict[str, float | str]:
    """Rebuild model and data from the checkpoint's config, run the test metrics on
    `cfg.split`, measure sample quality (cfg.fid: FID, KID, IS, precision/recall against the
    reference split), write metrics.json to the run directory and log to the loggers."""
    if cfg.split not in ("test", "val"):
        raise GenlabError(f"split={cfg.split} is not valid; choose test or val.")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    stored = OmegaConf.create(checkpoint[CONFIG_KEY])
    stored.data.root, stored.data.cache_dir = cfg.paths.data_dir, cfg.paths.cache_dir
    data_cfg = OmegaConf.merge(stored.data, cfg.get("data") or {})
    model_cfg = OmegaConf.merge(stored.model, cfg.get("model") or {})
    with open_dict(cfg):
        cfg.data, cfg.model = data_cfg, model_cfg
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(data_cfg)
    model = build(model_cfg)
    fid_cfg = cfg.get("fid") or {}
    extractor = _inception(fid_cfg) if fid_cfg.get("enabled") else None  # fail before testing

    failed = True
    try:
        loggers = build_loggers(cfg)
        trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[],
                              enable_checkpointing=False)
        stage = "test_step" if cfg.split == "test" else "validation_step"
        if is_overridden(stage, model):
            run = trainer.test if cfg.split == "test" else trainer.validate
            results = run(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)[0]
        else:  # a family without test metrics: only the sample metrics below
            model.load_state_dict(checkpoint["state_dict"])
            results = {}
        metrics: dict[str, float | str] = {k: float(v) for k, v in results.items()}
        if model.has_likelihood and f"{cfg.split}/bpd" in metrics:
            metrics["bpd"] = metrics[f"{cfg.split}/bpd"]
        metrics.update(ckpt_path=str(Path(cfg.ckpt_path).resolve()), split=cfg.split)
        output_dir = Path(cfg.paths.output_dir)
        _save_demos(cfg, model.eval(), datamodule, output_dir)
        if extractor is not None:
            metrics.update(_sample_quality(cfg, fid_cfg, model, datamodule, extractor,
                                           output_dir))
        _write_json(metrics, output_dir / "metrics.json")
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(metrics)
        log.info("metrics: %s", metrics)
        failed = False
        return metrics
    finally:
        _close_wandb(failed)


def _inception(fid_cfg: DictConfig):
    """The FID Inception extractor of cfg.fid; missing weights are an error that also says how
    to turn the sample metrics off."""
    from genlab.metrics.inception import FeatureExtractor, InceptionWeightsError
    from genlab.metrics.reference import default_device

    if fid_cfg.num_samples < 10:
        raise GenlabError(f"fid.num_samples={fid_cfg.num_samples}: the Inception Score splits "
                          "the samples into 10 parts, so at least 10 are needed (50000 is the "
                          "standard protocol).")
    try:
        return FeatureExtractor(fid_cfg.get("weights"),
                                device=fid_cfg.get("device") or default_device(),
                                batch_size=fid_cfg.inception_batch_size, bf16=fid_cfg.bf16)
    except InceptionWeightsError as err:
        raise GenlabError(f"{err} To evaluate without FID/KID/IS, pass fid.enabled=false."
                          ) from None


def _sample_quality(cfg: DictConfig, fid_cfg: DictConfig, model, datamodule, extractor,
                    output_dir: Path) -> dict[str, float | int | str]:
    """FID, KID, IS, precision/recall (and fid_classifier) of fid.num_samples samples against
    the reference split; the samples go to samples.npz (uint8) and fid_samples.png."""
    from genlab.data.datasets import load_dataset
    from genlab.metrics.classifier import cached_classifier
    from genlab.metrics.evaluation import classifier_stats, evaluate_samples
    from genlab.metrics.images import TensorSource
    from genlab.metrics.reference import reference_stats

    for key in ("sampler", "sampling_steps"):
        if fid_cfg.get(key) is not None:
            if not isinstance(getattr(model, key, None), (str, int)):
                raise GenlabError(f"fid.{key}={fid_cfg[key]} is set, but this model has no "
                                  f"{key} setting (only diffusion models do); remove it.")
            setattr(model, key, fid_cfg[key])
    dm = datamodule
    arrays = load_dataset(dm.name, dm.root, dm.cache_dir, image_size=dm.image_size,
                          channels=dm.channels, download=dm.download, verify=dm.verify,
                          **dm.options)
    split = fid_cfg.reference_split
    if split not in arrays.splits:
        raise GenlabError(f"fid.reference_split={split}: {dm.name} has only the splits "
                          f"{', '.join(arrays.splits)}.")
    images, labels = arrays.splits[split]
    reference = reference_stats(TensorSource(images, f"{dm.name}:{split}", dm.name, split),
                                n=fid_cfg.get("reference_num"), extractor=extractor,
                                cache_dir=cfg.paths.cache_dir, keep_logits=False)
    classifier = classifier_reference = None
    use_classifier = fid_cfg.get("classifier", "auto")
    if use_classifier == "auto":
        use_classifier = images.shape[1] == 1 and bool(arrays.classes)
    if use_classifier:
        train_images, train_labels = arrays.splits["train"]
        classifier = cached_classifier(dm.name, train_images, train_labels, cfg.paths.cache_dir,
                                       test=arrays.splits.get("test"))
        classifier_reference = classifier_stats(classifier, images)

    model.to(extractor.device).eval()
    log.info("Sample quality: %d samples against %s:%s (%d images)", fid_cfg.num_samples,
             dm.name, split, reference.n)
    result = evaluate_samples(
        model, reference, extractor, num_samples=fid_cfg.num_samples,
        batch_size=fid_cfg.batch_size, seed=cfg.seed, classifier=classifier,
        classifier_reference=classifier_reference, kid_subsets=fid_cfg.kid_subsets,
        kid_subset_size=fid_cfg.kid_subset_size,
        npz_path=output_dir / "samples.npz" if fid_cfg.save_npz else None,
        grid_path=output_dir / "fid_samples.png")
    result.update(n_samples=result.pop("n_a"), n_reference=result.pop("n_b"),
                  reference=f"{dm.name}:{split}")
    if isinstance(getattr(model, "sampler", None), str):
        result.update(sampler=model.sampler, sampling_steps=model.sampling_steps)
    return result


@torch.no_grad()
def _save_demos(cfg: DictConfig, model, datamodule, output_dir: Path) -> None:
    """samples.png and one <task>.png per requested task (cfg.tasks), from fixed noise."""
    def generator() -> torch.Generator:
        return torch.Generator(device=model.device).manual_seed(cfg.seed)

    if n := cfg.get("sample_grid"):
        images = model.sample(n, labels=model.grid_labels(n), generator=generator())
        save_png(make_grid(images), output_dir / "samples.png")
    tasks = list(cfg.get("tasks") or [])
    if unknown := set(tasks) - set(model.tasks()):
        raise GenlabError(f"tasks={sorted(unknown)} are not offered by this model; it offers: "
                          f"{', '.join(model.tasks()) or 'none'}.")
    if not tasks:
        return
    images, labels = datamodule.splits[cfg.split]
    x = datamodule.to_model_input(images[:16].to(model.device), train=False)
    labels = labels[:16].to(model.device) if model.conditional else None
    for task in tasks:
        shown = getattr(model, f"demo_{task}")(x, labels, generator())
        save_png(make_grid(shown, nrow=8), output_dir / f"{task}.png")


def _write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
