"""Start-up validation of a run's configuration: every value of the right kind and in its range,
every key known, the rules between keys, and (for evaluate.py) the checkpoint and the keys it
lets change, checked before any data is decoded, any model built or anything written. A mistake
ends in one paragraph that names the key, the value and what is valid.

Where the valid values are declared:
- constructor parameters of every class the config names (`_target_`: the model, the
  datamodule, the callbacks, nested targets such as the optimizer): their annotations
  (`genlab.checks`: `latent_dim: Annotated[int, Range(1)]`), read with
  `typing.get_type_hints(include_extras=True)` and followed through `**base` to the base class
  (`GenerativeModule`) and through the datamodule's `**options` to the dataset's options;
- keys of classes that are not ours (the Lightning Trainer keys the configs expose, the
  checkpoint callback, the TensorBoard and CSV loggers, optimizers) and keys that are not
  constructor parameters (top-level `seed`, evaluate.py's `split`, `sample_grid`,
  `wandb_table`, `fid.*`, `probe.*`, `ood.*`): the tables below;
- rules between keys: `check_config` of the model class and of the datamodule, and the few
  rules at the end of this module.
A new config key joins by being an annotated constructor parameter, or by a line in a table;
`tests/test_bad_input.py` and `tests/test_validate.py` then test it.

`validate(cfg)` is called by `genlab.run.startup` (a Hydra callback, before Hydra creates the
run directory) and again by `train()` / `evaluate()` (for configs composed in Python).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from genlab.checks import NonEmpty, OneOf, Range, check_value, checkable
from genlab.config import lightning_precision, register_resolvers
from genlab.errors import GenlabError, yaml_repr

log = logging.getLogger(__name__)

Count = Annotated[int, Range(1)]
Share = Annotated[float, Range(0, 1)]
BatchLimit = Annotated[int, Range(0)] | Share | None  # a number of batches, or a share of them
Seed = Annotated[int, Range(0, 2**32 - 1)]

# Top-level keys of conf/train.yaml and conf/evaluate.yaml (precision: config.PRECISIONS).
TRAIN_KEYS = {"seed": Seed, "ckpt_path": str | None, "resume": str | None, "test": bool,
              "compile": bool, "channels_last": bool, "optimized_metric": str | None,
              "task_name": str}
EVALUATE_KEYS = {"seed": Seed, "ckpt_path": str, "split": Annotated[str, OneOf(("test", "val"))],
                 "sample_grid": Annotated[int, Range(0)], "wandb_table": Annotated[int, Range(0)],
                 "tasks": list[str], "task_name": str}
# evaluate.py's sample-quality protocol (conf/evaluate.yaml, fid:).
FID_KEYS = {
    "enabled": bool,
    "num_samples": Annotated[int, Range(10, note="the Inception Score splits them in 10")],
    "reference_split": Annotated[str, OneOf(("train", "test"))],
    "reference_num": Count | None, "batch_size": Count,
    "sampler": Annotated[str, OneOf(("ddpm", "ddim"))] | None, "sampling_steps": Count | None,
    "weights": str | None, "device": str | None, "inception_batch_size": Count | None,
    "bf16": bool, "kid_subsets": Count, "kid_subset_size": Annotated[int, Range(2)],
    "classifier": Annotated[str | bool, OneOf(("auto", True, False))], "save_npz": bool,
}
# evaluate.py's representation evaluation (conf/evaluate.yaml, probe:;
# genlab.metrics.representation, whose BASELINES these are).
PROBE_KEYS = {
    "enabled": bool,
    "train_sizes": Annotated[list[Annotated[int, Range(2)] | None], NonEmpty],
    "train_images": Annotated[int, Range(2)] | None, "seeds": Count, "knn_k": Count,
    "max_iter": Count, "baselines": list[Annotated[str, OneOf(("pixels", "pca"))]],
    "pool": Count | None, "max_dim": Count | None,
    "map_points": Annotated[int, Range(31, note="t-SNE needs more points than its "
                                                "perplexity, 30")],
    "grid_per_cluster": Count, "batch_size": Count,
}
# evaluate.py's out-of-distribution scores (conf/evaluate.yaml, ood:; genlab.metrics.ood): the
# dataset names, their shapes, the model's scores and each dataset's reader options are checked
# in _check_ood.
OOD_KEYS = {"datasets": list[str], "num_images": Count, "batch_size": Count, "options": None}
# Lightning Trainer arguments (conf/trainer/*.yaml, debug/*.yaml and common +trainer.<key>).
TRAINER_KEYS = {
    "accelerator": str, "strategy": str, "num_nodes": Count, "default_root_dir": str | None,
    "devices": Count | Annotated[int, OneOf((-1,))] | str | list[int],
    "precision": Annotated[str, OneOf(("32-true", "16-mixed", "bf16-mixed", "64-true",
                                       "16-true", "bf16-true"))],
    "min_epochs": Annotated[int, Range(0)] | None,
    "max_epochs": Annotated[int, Range(-1, note="-1: no limit")] | None,
    "min_steps": Annotated[int, Range(0)] | None,
    "max_steps": Annotated[int, Range(-1, note="-1: no limit")],
    "max_time": str | None,  # DD:HH:MM:SS, checked below
    "check_val_every_n_epoch": Count | None,
    "val_check_interval": Count | Annotated[float, Range(0, 1, low_open=True)] | None,
    "log_every_n_steps": Count | None, "accumulate_grad_batches": Count,
    "gradient_clip_val": Annotated[float, Range(0)] | None,
    "gradient_clip_algorithm": Annotated[str, OneOf(("norm", "value"))] | None,
    "deterministic": bool | Annotated[str, OneOf(("warn",))] | None, "benchmark": bool | None,
    "limit_train_batches": BatchLimit, "limit_val_batches": BatchLimit,
    "limit_test_batches": BatchLimit, "limit_predict_batches": BatchLimit,
    "overfit_batches": BatchLimit, "fast_dev_run": bool | Annotated[int, Range(0)],
    "num_sanity_val_steps": Annotated[int, Range(-1, note="-1: all")] | None,
    "reload_dataloaders_every_n_epochs": Annotated[int, Range(0)],
    "sync_batchnorm": bool, "use_distributed_sampler": bool, "enable_progress_bar": bool | None,
    "enable_checkpointing": bool | None, "enable_model_summary": bool | None,
    "inference_mode": bool, "detect_anomaly": bool, "barebones": bool,
}
MODEL_CHECKPOINT_KEYS = {
    "dirpath": str | None, "filename": str | None, "monitor": str | None,
    "mode": Annotated[str, OneOf(("min", "max"))], "verbose": bool,
    "save_last": bool | Annotated[str, OneOf(("link",))] | None,
    "save_top_k": Annotated[int, Range(-1, note="-1: every one")],
    "every_n_epochs": Annotated[int, Range(0)] | None,
    "every_n_train_steps": Annotated[int, Range(0)] | None,
    "auto_insert_metric_name": bool, "save_weights_only": bool,
    "save_on_train_epoch_end": bool | None, "enable_version_counter": bool,
}
# Lightning's file loggers (conf/logger/tensorboard.yaml, csv.yaml).
TENSORBOARD_KEYS = {"save_dir": str, "name": str | None,
                    "version": Annotated[int, Range(0)] | str | None, "log_graph": bool,
                    "default_hp_metric": bool, "prefix": str, "sub_dir": str | None}
CSV_LOGGER_KEYS = {"save_dir": str, "name": str | None,
                   "version": Annotated[int, Range(0)] | str | None, "prefix": str,
                   "flush_logs_every_n_steps": Count}
OPTIMIZER_KEYS = {"lr": Annotated[float, Range(0, low_open=True)],
                  "weight_decay": Annotated[float, Range(0)],
                  "betas": Annotated[tuple[float, float], Range(0, 1, high_open=True)],
                  "eps": Annotated[float, Range(0, low_open=True)]}
# Learning-rate schedules the configs name (model.scheduler: ExponentialLR, LinearLR).
SCHEDULER_KEYS = {"gamma": Annotated[float, Range(0, 1, low_open=True)],
                  "start_factor": Annotated[float, Range(0, 1, low_open=True)],
                  "end_factor": Annotated[float, Range(0, 1)], "total_iters": Count}


def _foreign_tables() -> list[tuple[type, Mapping[str, Any]]]:
    """Declared keys of classes that are not genlab's (their own annotations are not ranges)."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return [(pl.Trainer, TRAINER_KEYS), (ModelCheckpoint, MODEL_CHECKPOINT_KEYS),
            (LearningRateMonitor, {"logging_interval": Annotated[str, OneOf(("step", "epoch"))]
                                   | None, "log_momentum": bool, "log_weight_decay": bool}),
            (ModelSummary, {"max_depth": Annotated[int, Range(-1)]}),
            (TensorBoardLogger, TENSORBOARD_KEYS), (CSVLogger, CSV_LOGGER_KEYS),
            (torch.optim.Optimizer, OPTIMIZER_KEYS),
            (torch.optim.lr_scheduler.LRScheduler, SCHEDULER_KEYS)]


@dataclass
class Parameters:
    """The keyword parameters a class takes: name -> hint (None: not checked), and whether that
    is all it takes (False when **kwargs lead nowhere we can follow)."""

    hints: dict[str, Any]
    closed: bool


def parameters(obj) -> Parameters:
    """The constructor parameters of a class (or the parameters of a function), following
    `**kwargs` through the base classes. Hints are kept for genlab code (its annotations state
    ranges) and taken from the tables above for other code."""
    table = {}
    if isinstance(obj, type):
        for base, keys in _foreign_tables():
            if issubclass(obj, base):
                table = dict(keys)
        functions = [k.__dict__["__init__"] for k in obj.__mro__ if "__init__" in k.__dict__]
    else:
        functions = [obj]
    hints: dict[str, Any] = {}
    closed = True
    for function in functions:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return Parameters({**table, **hints}, closed=False)
        ours = getattr(function, "__module__", "").startswith("genlab.")
        annotations = {}
        if ours:
            annotations = typing.get_type_hints(function, include_extras=True)
        var_keyword = False
        for name, parameter in signature.parameters.items():
            if name == "self" or parameter.kind is parameter.VAR_POSITIONAL:
                continue
            if parameter.kind is parameter.VAR_KEYWORD:
                var_keyword = True
                continue
            hints.setdefault(name, annotations.get(name) if ours else table.get(name))
        if not var_keyword:
            closed = True
            break
        closed = False
    for name, hint in table.items():
        hints.setdefault(name, hint)
    return Parameters(hints, closed)


def locate(target: str, key: str):
    try:
        return _locate(target)
    except Exception as err:  # ImportError, AttributeError, ...
        raise GenlabError(f"{key}._target_={target} cannot be imported ({err}); give the full "
                          "import path of a class.") from None


def check_node(node: DictConfig, key: str, table: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None):
    """Check every value of a config node against the parameters of its `_target_` (or against
    `table`, for a node without one); nested targets are checked in turn. Returns the located
    target (None without one)."""
    target = node.get("_target_")
    obj = locate(str(target), key) if target is not None else None
    if obj is not None:
        params = parameters(obj)
        hints, closed = dict(params.hints), params.closed
    else:
        hints, closed = dict(table or {}), table is not None
    values = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    if obj is not None and hasattr(obj, "config_options"):
        extra = {**(extra or {}), **obj.config_options(values)}
    hints.update(extra or {})
    for name in node:
        name = str(name)
        if name.startswith("_"):
            continue
        full, value = f"{key}.{name}", values[name]
        child = node._get_node(name)
        if isinstance(child, DictConfig) and "_target_" in child:
            check_node(child, full)
            continue
        if value is None and OmegaConf.is_interpolation(node, name):
            continue  # filled in later from the data (e.g. model.num_classes from the images)
        if name not in hints:
            if closed:
                what = f"{key} ({target})" if target is not None else key
                raise GenlabError(f"{full} is not a key of {what}; its keys are: "
                                  f"{', '.join(sorted(hints)) or 'none'}.")
            continue
        hint = hints[name]
        if hint is not None and checkable(hint):
            check_value(full, value, hint)
    return obj


def _check_max_time(trainer: Mapping) -> None:
    value = trainer.get("max_time")
    if isinstance(value, str) and not re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", value):
        raise GenlabError(f"trainer.max_time={yaml_repr(value)} is not valid: it must be "
                          "DD:HH:MM:SS, e.g. trainer.max_time=00:01:30:00 for 90 minutes.")


def _check_top_level(cfg: DictConfig, table: Mapping[str, Any]) -> None:
    for name, hint in table.items():
        if name in cfg:
            value = cfg[name]
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            check_value(name, value, hint)
    lightning_precision(cfg.get("precision", 32))


def _check_trainer_and_loggers(cfg: DictConfig) -> None:
    check_node(cfg.trainer, "trainer")
    _check_max_time(cfg.trainer)
    for name, node in (cfg.get("logger") or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            check_node(node, f"logger.{name}")


def _check_model_and_data(model: DictConfig, data: DictConfig) -> tuple[type, type]:
    data_cls = check_node(data, "data")
    model_cls = check_node(model, "model")
    data_values = OmegaConf.to_container(data, resolve=True)
    if hasattr(data_cls, "check_config"):
        data_cls.check_config(data_values)
    if hasattr(model_cls, "check_config"):
        model_cls.check_config(OmegaConf.to_container(model, resolve=True), data_values)
    return model_cls, data_cls


def _check_resume(cfg: DictConfig) -> None:
    """resume=<run dir> continues a run in its own directory: hydra.run.dir follows it
    (conf/hydra/default.yaml), which a multirun's job directories cannot."""
    resume, output_dir = cfg.get("resume"), OmegaConf.select(cfg, "paths.output_dir")
    if not resume or output_dir is None:
        return
    if Path(resume).expanduser().resolve() != Path(output_dir).resolve():
        raise GenlabError(f"resume={resume} continues a run in its own directory, but this run "
                          f"writes to {output_dir} (a multirun job, or hydra.run.dir set "
                          "too). Resume one run at a time, without -m and without "
                          "hydra.run.dir.")


def validate_train(cfg: DictConfig) -> None:
    """Check a train.py config (see the module docstring); raise GenlabError on the first
    mistake."""
    register_resolvers()
    _check_top_level(cfg, TRAIN_KEYS)
    _check_trainer_and_loggers(cfg)
    model_cls, _ = _check_model_and_data(cfg.model, cfg.data)
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            check_node(node, f"callbacks.{name}")
    _check_resume(cfg)
    from genlab.run.checkpoint import load_checkpoint, resume_checkpoint

    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), cfg.get("resume"),
                                  OmegaConf.select(cfg, "paths.output_dir"))
    if ckpt_path:
        key = "ckpt_path" if cfg.get("ckpt_path") else "resume"
        stored = load_checkpoint(ckpt_path, key)["genlab_config"]["model"]
        what = f"ckpt_path={ckpt_path}" if key == "ckpt_path" else \
            f"resume={cfg.resume} (its newest checkpoint, {Path(ckpt_path).name})"
        resolved = OmegaConf.to_container(cfg.model, resolve=True)
        for name in ("_target_", "image_shape"):
            if stored.get(name) != resolved.get(name):
                raise GenlabError(f"{what} holds a model with "
                                  f"model.{name}={yaml_repr(stored.get(name))}, but this run "
                                  f"configures {yaml_repr(resolved.get(name))}: resume with the "
                                  "overrides the checkpoint was trained with.")


def _check_overrides(node: DictConfig | None, part: str, accepted: frozenset, cls,
                     stored: Mapping) -> None:
    for name in node or {}:
        if name in accepted:
            continue
        offered = ", ".join(sorted(accepted)) or "none"
        if name in stored:
            shapes = ("it shapes the trained network or its training" if part == "model"
                      else "it defines the data the model was trained on")
            why = (f"{shapes} (the checkpoint has {part}.{name}={yaml_repr(stored[name])}), so "
                   "it cannot change at evaluation")
        else:
            why = f"the checkpoint's {part} ({cls.__name__}) has no such key"
        raise GenlabError(f"+{part}.{name} is not accepted by evaluate.py: {why}. The "
                          f"{part} keys evaluate.py accepts for this checkpoint are: {offered}.")


def validate_evaluate(cfg: DictConfig) -> tuple[dict, DictConfig]:
    """Check an evaluate.py config and its checkpoint (see the module docstring): the
    checkpoint loads safely, only the keys the model and data declare (`evaluation_keys`) are
    overridden, and the merged model and data configs are valid. Returns the checkpoint and
    the config with `model` and `data` merged (stored config, `full_evaluation`, overrides)."""
    from genlab.run.checkpoint import load_checkpoint

    register_resolvers()
    _check_top_level(cfg, EVALUATE_KEYS)
    if cfg.get("fid") is not None:
        check_node(cfg.fid, "fid", FID_KEYS)
    if cfg.get("probe") is not None:
        check_node(cfg.probe, "probe", PROBE_KEYS)
    _check_trainer_and_loggers(cfg)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    stored = OmegaConf.create(checkpoint["genlab_config"])
    model_cls = locate(stored.model._target_, "model")
    data_cls = locate(stored.data._target_, "data")
    _check_overrides(cfg.get("model"), "model", getattr(model_cls, "evaluation_keys", frozenset()),
                     model_cls, stored.model)
    _check_overrides(cfg.get("data"), "data", getattr(data_cls, "evaluation_keys", frozenset()),
                     data_cls, stored.data)
    merged = cfg.copy()
    stored.data.root, stored.data.cache_dir = cfg.paths.data_dir, cfg.paths.cache_dir
    full = {k: v for k, v in getattr(model_cls, "full_evaluation", {}).items()
            if k not in (cfg.get("model") or {})}
    with open_dict(merged):
        merged.data = OmegaConf.merge(stored.data, cfg.get("data") or {})
        merged.model = OmegaConf.merge(stored.model, full, cfg.get("model") or {})
    _check_model_and_data(merged.model, merged.data)
    for name in ("sampler", "sampling_steps"):
        if (cfg.get("fid") or {}).get(name) is not None and name not in merged.model:
            raise GenlabError(f"fid.{name}={cfg.fid[name]} is set, but this checkpoint's model "
                              f"({model_cls.__name__}) has no {name} setting (only diffusion "
                              "models do); remove it.")
    if (cfg.get("probe") or {}).get("enabled") and not callable(getattr(model_cls, "encode",
                                                                         None)):
        raise GenlabError(f"probe.enabled=true needs a model that encodes images (an `encode` "
                          f"method: VAE, autoencoders, flows); {model_cls.__name__} has none. "
                          "Set probe.enabled=false.")
    _check_tasks(cfg, model_cls)
    _check_ood(cfg, model_cls, merged.model)
    return checkpoint, merged


def _check_ood(cfg: DictConfig, model_cls: type, model: DictConfig) -> None:
    """`ood:` holds only its keys, each in range; its datasets exist, have the model's image
    shape and the model has a score (`genlab.metrics.ood.check_ood`); `ood.options.<dataset>`
    names a listed dataset and holds only that reader's options."""
    ood = cfg.get("ood")
    if ood is None:
        return
    check_node(ood, "ood", OOD_KEYS)
    from genlab.data.datasets import DATASETS
    from genlab.metrics.ood import check_ood

    datasets = list(ood.get("datasets") or [])
    if datasets:
        values = OmegaConf.to_container(model, resolve=True)
        check_ood(model_cls, tuple(values["image_shape"]), datasets,
                  conditional=bool(values.get("conditional")))
    options = ood.get("options")
    options = OmegaConf.create() if options is None else options
    if not isinstance(options, DictConfig):
        raise GenlabError(f"ood.options={yaml_repr(options)} is not valid: it maps a dataset to "
                          "its reader options, e.g. +ood.options.image_folder.path=/data/svhn.zip.")
    for name in options:
        if name not in datasets:
            raise GenlabError(f"ood.options.{name} is set, but {name} is not in ood.datasets "
                              f"({yaml_repr(datasets)}); add it there or remove the options.")
        if options[name] is not None:
            check_node(options[name], f"ood.options.{name}", DATASETS[name].options)
    for name in datasets:
        if "path" not in DATASETS[name].options:
            continue
        path = (options.get(name) or {}).get("path")
        if not path or not Path(os.path.expanduser(str(path))).exists():
            raise GenlabError(f"ood.datasets includes {name}, which reads the images at "
                              f"ood.options.{name}.path, but that is "
                              f"{'not set' if not path else f'{path}, which does not exist'}: "
                              f"pass +ood.options.{name}.path=/path/to/images (a folder, an "
                              "archive or an .npz).")


def _check_tasks(cfg: DictConfig, model_cls: type) -> None:
    """The tasks exist and the model offers them; `task_options.<task>` names a task and holds
    only the options it declares, each in range."""
    from genlab.tasks import TASKS, check_tasks

    check_tasks(list(cfg.get("tasks") or []), model_cls)
    options = cfg.get("task_options")
    if options is None:
        return
    if not isinstance(options, DictConfig):
        raise GenlabError(f"task_options={yaml_repr(options)} is not valid: it maps a task to its "
                          "options, e.g. task_options.edit.attribute=Smiling.")
    for name in options:
        if name not in TASKS:
            raise GenlabError(f"task_options.{name}: '{name}' is not a task; the tasks are: "
                              f"{', '.join(sorted(TASKS))}.")
        if options[name] is not None:
            check_node(options[name], f"task_options.{name}", TASKS[name].options)


def validate(cfg: DictConfig) -> None:
    """validate_train or validate_evaluate, by the config's task_name."""
    if cfg.get("task_name") == "evaluate":
        validate_evaluate(cfg)
    else:
        validate_train(cfg)
