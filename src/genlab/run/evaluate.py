"""evaluate.py: rebuild a run from its checkpoint; test metrics, sample quality and tasks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.callbacks.progress import ProgressBar
from genlab.config import register_resolvers
from genlab.data.transforms import to_uint8
from genlab.errors import GenlabError, yaml_repr
from genlab.files.atomic import atomic_write
from genlab.files.grid import make_grid, save_png
from genlab.maths.bpd import bits_per_dim
from genlab.metrics.ood import ood_metrics
from genlab.run.build import build_data_and_model
from genlab.run.layout import RunLayout
from genlab.run.loggers import (
    build_loggers,
    close_wandb,
    log_evaluation,
    quiet_library_noise,
    training_wandb_run,
)
from genlab.run.validate import validate_evaluate
from genlab.tasks import TaskInputs, run_task

log = logging.getLogger(__name__)
register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float | str]:
    """Rebuild model and data from the checkpoint's config, run the test metrics on
    `cfg.split`, measure sample quality (cfg.fid: FID, KID, IS, precision/recall against the
    reference split), run cfg.tasks, score cfg.ood.datasets against the test split
    (`genlab.metrics.ood`), write metrics.json to the run directory and log to the
    loggers."""
    checkpoint, merged = validate_evaluate(cfg)
    quiet_library_noise()
    with open_dict(cfg):
        cfg.data, cfg.model = merged.data, merged.model
    if full := {k: v for k, v in type_of(cfg.model).full_evaluation.items()
                if cfg.model.get(k) == v}:
        log.info("Full-precision test metrics: %s (each can be overridden with "
                 "+model.<key>=...)", ", ".join(f"model.{k}={yaml_repr(v)}"
                                                for k, v in full.items()))
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    probe_cfg = cfg.get("probe") or {}
    if probe_cfg.get("enabled"):  # scikit-learn is imported only when needed
        from genlab.metrics.representation import check_probe
        check_probe(model, datamodule)
    ood_cfg = cfg.get("ood") or {}
    fid_cfg = cfg.get("fid") or {}
    extractor = _inception(fid_cfg) if fid_cfg.get("enabled") else None  # fail before testing

    failed = True
    try:
        training_run = training_wandb_run(cfg.ckpt_path)  # W&B: log into the training run
        loggers = build_loggers(cfg, resume_wandb=training_run)
        # the resumed training run gets evaluate/<key> summaries (log_evaluation), not the
        # test loop's test/<key> at the evaluate run's step 0
        test_loggers = [x for x in loggers if not (training_run and isinstance(x, WandbLogger))]
        bar = [ProgressBar()] if cfg.trainer.get("enable_progress_bar") is not False else []
        trainer = instantiate(cfg.trainer, logger=test_loggers or False, callbacks=bar,
                              enable_checkpointing=False)
        # The weights come from the checkpoint validate_evaluate read safely (weights_only);
        # Lightning is not handed the path, so it reads nothing itself.
        model.load_state_dict(checkpoint["state_dict"])
        stage = "test_step" if cfg.split == "test" else "validation_step"
        results = {}
        if is_overridden(stage, model):  # a family without test metrics: only samples below
            run = trainer.test if cfg.split == "test" else trainer.validate
            results = run(model, datamodule=datamodule)[0]
        metrics: dict[str, float | str] = {k: float(v) for k, v in results.items()}
        if model.has_likelihood and f"{cfg.split}/bpd" in metrics:
            metrics["bpd"] = metrics[f"{cfg.split}/bpd"]
        metrics.update(ckpt_path=str(Path(cfg.ckpt_path).resolve()), split=cfg.split)
        layout = RunLayout(Path(cfg.paths.output_dir))
        metrics.update(_samples_and_tasks(cfg, model.eval(), datamodule, layout.root))
        if probe_cfg.get("enabled"):
            from genlab.metrics.representation import probe
            probe_metrics, pictures = probe(model, datamodule, cfg.split, probe_cfg, layout.root)
            metrics.update(probe_metrics)
            for logger in (lg for lg in loggers if isinstance(lg, WandbLogger)):
                logger.log_image("probe", [str(p) for p in pictures.values()],
                                 caption=list(pictures))
        if ood_cfg.get("datasets"):
            metrics.update(ood_metrics(model, datamodule, **OmegaConf.to_container(ood_cfg),
                                       seed=cfg.seed, root=cfg.paths.data_dir,
                                       cache_dir=cfg.paths.cache_dir))
        if extractor is not None:
            metrics.update(_sample_quality(cfg, fid_cfg, model, datamodule, extractor, layout))
        with atomic_write(layout.metrics, "w") as f:
            f.write(json.dumps(metrics, indent=2) + "\n")
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                grids = {name: layout.task_grid(name) for name in cfg.get("tasks") or []}
                log_evaluation(logger, metrics, {"samples": layout.eval_samples,
                                                 "fid_samples": layout.root / "fid_samples.png",
                                                 **grids},
                               _scored_images(cfg, model, datamodule))
        log.info("metrics: %s", metrics)
        failed = False
        return metrics
    finally:
        close_wandb(failed)


def type_of(model_cfg: DictConfig) -> type:
    """The model class a model config names."""
    from hydra.utils import get_class

    return get_class(model_cfg._target_)


def _inception(fid_cfg: DictConfig):
    """The FID Inception extractor of cfg.fid; missing weights are an error that also says how
    to turn the sample metrics off."""
    from genlab.metrics.inception import FeatureExtractor, InceptionWeightsError
    from genlab.metrics.reference import default_device

    try:
        return FeatureExtractor(fid_cfg.get("weights"),
                                device=fid_cfg.get("device") or default_device(),
                                batch_size=fid_cfg.inception_batch_size, bf16=fid_cfg.bf16)
    except InceptionWeightsError as err:
        raise GenlabError(f"{err} To evaluate without FID/KID/IS, pass fid.enabled=false."
                          ) from None


def _sample_quality(cfg: DictConfig, fid_cfg: DictConfig, model, datamodule, extractor,
                    layout: RunLayout) -> dict[str, float | int | str]:
    """cfg.fid's sample-quality protocol (genlab.metrics.protocol); the samples go to
    samples.npz (uint8) and fid_samples.png."""
    from genlab.metrics.protocol import sample_quality

    for key in ("sampler", "sampling_steps"):
        if fid_cfg.get(key) is not None:
            if not isinstance(getattr(model, key, None), (str, int)):
                raise GenlabError(f"fid.{key}={fid_cfg[key]} is set, but this model has no "
                                  f"{key} setting (only diffusion models do); remove it.")
            setattr(model, key, fid_cfg[key])
    result = sample_quality(
        model, datamodule, extractor, num_samples=fid_cfg.num_samples,
        batch_size=fid_cfg.batch_size, seed=cfg.seed, reference_split=fid_cfg.reference_split,
        reference_num=fid_cfg.get("reference_num"), classifier=fid_cfg.get("classifier", "auto"),
        kid_subsets=fid_cfg.kid_subsets, kid_subset_size=fid_cfg.kid_subset_size,
        cache_dir=cfg.paths.cache_dir,
        npz_path=layout.root / "samples.npz" if fid_cfg.save_npz else None,
        grid_path=layout.root / "fid_samples.png")
    if isinstance(getattr(model, "sampler", None), str):
        result.update(sampler=model.sampler, sampling_steps=model.sampling_steps)
    return result


def _samples_and_tasks(cfg: DictConfig, model, datamodule, output_dir: Path
                       ) -> dict[str, float]:
    """samples.png from fixed noise, and <task>.png with task/<task>/<metric> numbers for each
    of cfg.tasks, on the first 16 images of the evaluated split (the restoration tasks take
    task_options.<task>.images of it themselves)."""
    def generator() -> torch.Generator:
        return torch.Generator(device=model.device).manual_seed(cfg.seed)

    if n := cfg.get("sample_grid"):
        with torch.no_grad():
            images = model.sample(n, labels=model.grid_labels(n), generator=generator())
        save_png(make_grid(images), output_dir / "samples.png")
    metrics = {}
    tasks = list(cfg.get("tasks") or [])
    if not tasks:
        return metrics
    images, labels = datamodule.splits[cfg.split]
    x = datamodule.to_model_input(images[:16].to(model.device), train=False)
    labels = labels[:16].to(model.device) if model.conditional else None
    options = cfg.get("task_options") or {}
    for name in tasks:
        inputs = TaskInputs(x, labels, generator(), datamodule,
                            OmegaConf.to_container(options.get(name) or OmegaConf.create()),
                            cfg.split)
        result = run_task(name, model, inputs)
        save_png(make_grid(result.images, nrow=result.nrow), output_dir / f"{name}.png")
        metrics.update({f"task/{name}/{key}": value for key, value in result.metrics.items()})
    return metrics


def _scored_images(cfg: DictConfig, model, datamodule) -> list[dict]:
    """For W&B's table: the first cfg.wandb_table images of the evaluated split, each with its
    bits/dim where the model has log_prob, and as many samples from fixed noise."""
    n = cfg.get("wandb_table") or 0
    if not n:
        return []
    images, labels = datamodule.splits[cfg.split]
    images, labels = images[:n], labels[:n]
    bpd = [None] * len(images)
    if hasattr(model, "log_prob"):
        x = datamodule.to_model_input(images.to(model.device), train=False)
        condition = labels.to(model.device) if model.conditional else None
        with torch.no_grad():
            bpd = bits_per_dim(-model.log_prob(x, condition), model.num_dims).tolist()
    rows = [{"kind": f"{cfg.split} image", "index": i, "label": int(labels[i]),
             "image": images[i].permute(1, 2, 0).squeeze(-1).numpy(), "bpd": bpd[i]}
            for i in range(len(images))]
    generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    with torch.no_grad():
        samples = to_uint8(model.sample(n, labels=model.grid_labels(n), generator=generator))
    sample_labels = model.grid_labels(n)
    rows += [{"kind": "sample", "index": i,
              "label": -1 if sample_labels is None else int(sample_labels[i]),
              "image": samples[i].cpu().permute(1, 2, 0).squeeze(-1).numpy(), "bpd": None}
             for i in range(n)]
    return rows
