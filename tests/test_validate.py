"""Start-up validation (genlab.run.validate): every declared range rejects the value just
outside it and accepts its bound; every numeric key of every config states its range; every
option of every config group is typed as a user types it; rules between keys; evaluate.py's
overrides. The subprocess cases, as a user meets them, are in test_bad_input.py."""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
from conftest import REPO
from helpers.runs import fake_data_overrides
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from genlab.checks import NonEmpty, OneOf, Range, check_value, checkable, describe
from genlab.config import lightning_precision
from genlab.errors import GenlabError
from genlab.run import validate as v

FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"
GROUPS = sorted(p.name for p in (REPO / "conf").iterdir()
                if p.is_dir() and p.name not in ("hydra", "local"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("[!_]*.yaml"))


# -- every declared range ------------------------------------------------------------------------
def configured_classes() -> dict[str, type]:
    """Every class a shipped config names: models, the datamodule, callbacks, loggers, the
    trainer, optimizers and schedulers (so a new family's annotations are found here)."""
    found = {}

    def walk(node, key):
        if isinstance(node, dict):
            if "_target_" in node:
                found[node["_target_"]] = v.locate(node["_target_"], key)
            for name, child in node.items():
                walk(child, f"{key}.{name}")

    for path in (REPO / "conf").rglob("*.yaml"):
        walk(OmegaConf.to_container(OmegaConf.load(path)), path.stem)
    return found


def declared_hints() -> list[tuple[str, object]]:
    """(name, hint) of every constructor parameter and table entry the validator knows."""
    hints = []
    for target, obj in sorted(configured_classes().items()):
        for name, hint in v.parameters(obj).hints.items():
            if hint is not None:
                hints.append((f"{target}.{name}", hint))
    from genlab.data.datasets import DATASETS

    for dataset, spec in DATASETS.items():
        hints += [(f"data={dataset}.{name}", hint) for name, hint in spec.options.items()]
    for table in ("TRAIN_KEYS", "EVALUATE_KEYS", "FID_KEYS", "PROBE_KEYS", "OOD_KEYS",
                  "TRAINER_KEYS", "MODEL_CHECKPOINT_KEYS", "OPTIMIZER_KEYS", "SCHEDULER_KEYS"):
        hints += [(f"{table}.{name}", hint) for name, hint in getattr(v, table).items()]
    return hints


def ranges(hint) -> list[tuple[object, Range]]:
    """(base type, Range) of every Annotated alternative of a hint that carries a Range."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *metadata = get_args(hint)
        return [(base, m) for m in metadata if isinstance(m, Range)]
    if origin in (Union, __import__("types").UnionType):
        return [r for alternative in get_args(hint) for r in ranges(alternative)]
    return []


def sample(base, number):
    """A value of type `base` (int, float or a list of them) holding `number`."""
    origin = get_origin(base)
    if origin in (tuple, list, typing.Sequence) or base in (list, tuple):
        args = [a for a in get_args(base) if a is not Ellipsis]
        count = len(args) if origin is tuple and Ellipsis not in get_args(base) else 1
        return [sample(args[0], number)] * count
    return int(number) if base is int else float(number)


def range_cases() -> list:
    cases = []
    for name, hint in declared_hints():
        for base, bounds in ranges(hint):
            element = get_args(base)[0] if get_args(base) else base
            step = 1 if element is int else 0.5
            for bound, open_, sign in ((bounds.low, bounds.low_open, -1),
                                       (bounds.high, bounds.high_open, +1)):
                if bound is None:
                    continue
                inside = bound - sign * (step if element is int else 1e-3) if open_ else bound
                outside = bound if open_ else bound + sign * step
                cases.append(pytest.param(name, hint, sample(base, inside),
                                          sample(base, outside), id=f"{name}-{sign:+d}"))
    return cases


@pytest.mark.parametrize("name, hint, inside, outside", range_cases())
def test_every_declared_range_rejects_the_value_outside_and_accepts_its_bound(name, hint,
                                                                              inside, outside):
    assert check_value(name, inside, hint) == inside
    with pytest.raises(GenlabError, match=f"{name}=.* must be "):
        check_value(name, outside, hint)


def test_the_range_cases_cover_every_family():
    names = {case.values[0].rsplit(".", 1)[0] for case in range_cases()}
    for target in ("genlab.models.vae.VAE", "genlab.models.ddpm.DDPM", "genlab.models.gan.GAN",
                   "genlab.models.flow.Flow", "genlab.models.pixelcnn.PixelCNN",
                   "genlab.models.autoencoder.Autoencoder",
                   "genlab.models.ebm.EBM", "genlab.models.ebm.JEM", "PROBE_KEYS", "OOD_KEYS",
                   "genlab.data.ImageDataModule", "genlab.callbacks.SampleGrid",
                   "genlab.callbacks.LongRunGrid", "TRAINER_KEYS"):
        assert target in names


def test_messages_name_the_key_the_value_and_the_range():
    with pytest.raises(GenlabError) as err:
        check_value("data.batch_size", 0, Annotated[int, Range(1)])
    assert str(err.value) == "data.batch_size=0 is out of range: it must be an integer >= 1."
    with pytest.raises(GenlabError, match=r"model.channels=\[\] is not valid: it must be a "
                                          r"non-empty list of integers >= 4"):
        check_value("model.channels", [], Annotated[tuple[int, ...], NonEmpty, Range(4)])
    with pytest.raises(GenlabError, match="'abc' is not valid: it must be an integer >= -1"):
        check_value("trainer.max_epochs", "abc", v.TRAINER_KEYS["max_epochs"])
    with pytest.raises(GenlabError, match="=nan is out of range"):
        check_value("model.beta", math.nan, Annotated[float, Range(0)])
    with pytest.raises(GenlabError, match="=true is not valid"):  # a bool is not a number
        check_value("model.beta", True, Annotated[float, Range(0)])
    with pytest.raises(GenlabError, match="=0 is not valid: it must be one of dynamic, static, "
                                          "false"):  # 0 is not false
        check_value("data.binarize", 0, Annotated[str | bool, OneOf(("dynamic", "static",
                                                                         False))])
    assert describe(v.TRAINER_KEYS["val_check_interval"]) == \
        "an integer >= 1, a number in (0, 1] or null"


# -- every configured key states what is valid ---------------------------------------------------
def test_every_numeric_key_of_every_config_has_a_declared_range(compose):
    """A key added to a config must be an annotated constructor parameter or a table entry;
    an int or float key must state its range."""
    unchecked = []

    def visit(node: DictConfig, key: str, hints: dict):
        for name in node:
            child = node._get_node(name)
            full = f"{key}.{name}"
            if str(name).startswith("_"):
                continue
            if isinstance(child, DictConfig) and "_target_" in child:
                visit(child, full, v.parameters(v.locate(child._target_, full)).hints)
                continue
            hint = hints.get(name)
            value = OmegaConf.select(node, str(name))
            if hint is None or not checkable(hint):
                unchecked.append(full)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and not ranges(hint) and not isinstance(value, str) \
                    and "OneOf" not in repr(hint):
                unchecked.append(f"{full} (no range)")

    for model in options("model"):
        for dataset in options("data"):
            cfg = compose([f"model={model}", f"data={dataset}", "callbacks=fid",
                           *(["data.path=x"] if dataset == "image_folder" else [])])
            for part in ("model", "data", "trainer"):
                node = cfg[part]
                hints = v.parameters(v.locate(node._target_, part)).hints
                if part == "data":
                    hints = {**hints, **v.locate(node._target_, part).config_options(node)}
                visit(node, part, hints)
            for name, node in cfg.callbacks.items():
                visit(node, f"callbacks.{name}", v.parameters(v.locate(node._target_, name)).hints)
    allowed = {"model.optimizer", "model.scheduler", "model.image_shape"}  # nested / derived
    assert sorted(set(unchecked) - allowed) == []


# -- config groups and precision, as typed on the command line -----------------------------------
@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_of_every_group_is_typed_as_a_user_types_it(group, option, compose,
                                                                  fake_root):
    """The command line reads `group=option` as a string (precision=32 as an integer broke the
    old precision group), and the composed config passes the start-up validation."""
    (parsed,) = OverridesParser.create().parse_overrides([f"{group}={option}"])
    assert isinstance(parsed.value(), str), f"{group}={option} is read as {parsed.value()!r}"
    extra = []
    if group == "data" and option == "image_folder":
        extra = [f"data.path={fake_root / 'images.tar.gz'}"]
    cfg = compose([f"{group}={option}", *extra])
    if group == "experiment" and option == "sweep_vae_beta":
        return  # a multirun: its jobs are validated one by one
    v.validate_train(cfg)


@pytest.mark.parametrize("typed, expected", [
    ("32", "32-true"), ("fp32", "32-true"), ("32-true", "32-true"), ("16", "16-mixed"),
    ("fp16", "16-mixed"), ("16-mixed", "16-mixed"), ("bf16", "bf16-mixed"),
    ("bf16-mixed", "bf16-mixed")])
def test_every_precision_spelling_works_as_typed(typed, expected, compose):
    cfg = compose([f"precision={typed}"])
    assert cfg.trainer.precision == expected
    v.validate_train(cfg)
    evaluate_cfg = compose([f"precision={typed}", "ckpt_path=x"], config_name="evaluate")
    assert evaluate_cfg.trainer.precision == expected


@pytest.mark.parametrize("typed", ["64", "half", "true", "8"])
def test_other_precisions_are_refused_with_the_valid_spellings(typed, compose):
    with pytest.raises(GenlabError, match=f"precision='?{typed}'? is not valid: choose 32 .* 16 "
                                          ".* bf16"):
        v.validate_train(compose([f"precision={typed}"]))
    with pytest.raises(GenlabError, match="is not valid"):
        lightning_precision(typed)


# -- keys, rules between keys ---------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["+model.latent_size=3"], r"model.latent_size is not a key of model \(genlab.models.vae"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch is not a key of trainer"),
    (["+data.crop=3"], "data.crop is not a key of data"),
    (["trainer.max_time=1h"], r"trainer.max_time='1h' is not valid: it must be DD:HH:MM:SS"),
    (["data.dequantize=true"], "data.dequantize=true does not suit VAE"),
    (["model=ddpm", "data.dequantize=true"], "data.dequantize=true does not suit DDPM"),
    (["model=dae", "data.dequantize=true"], "data.dequantize=true does not suit Autoencoder"),
    (["model=dae", "model.corruption_level=0"], "the gaussian corruption's standard deviation"),
    (["model=ae", "model.sampler=walkback"], "which needs a corruption"),
    (["model.likelihood=bernoulli"], "model.likelihood=bernoulli needs binary pixels"),
    (["model.channels=[6,12]"], r"model.channels=\[6, 12\]: every width must be a multiple of 4"),
    (["model.channels=[8,16,32,64,128,256]"], "data.image_size must be a multiple of 64"),
    (["model=ddpm", "model.sampling_steps=2000"], "model.sampling_steps=2000 is more than the "
                                                  "model.timesteps=1000"),
    (["model=ddpm", "model.channels=15"], "model.channels=15 must be even"),
    (["model=wgan_gp", "data.batch_size=3"], "data.batch_size=3 cannot be split over "
                                             "model.n_critic=5"),
    (["model=gan", "model.r1_gamma=1"], "model.d_batch_norm=false"),
    (["model=glow", "model.levels=6"], "model.levels=6 halves the 32x32 images 6 times"),
    (["model=realnvp", "model.logit_alpha=0.5"], "model.logit_alpha=0.5 is out of range"),
    (["model=pixelcnn", "data.dequantize=true"], "data.dequantize=true does not suit PixelCNN"),
    (["model=gated_pixelcnn", "model.head=bernoulli"], "model.head=bernoulli needs binary pixels"),
    (["model=pixelcnn", "data=cifar10", "model.channels=32"], "must be a multiple of 3"),
    (["model=pixelcnn", "model.kernel_size=4"], "model.kernel_size=4: .* must be odd"),
    (["model=pixelcnn_pp", "model.scheduler.gamma=1.5"], "model.scheduler.gamma=1.5 is out of "
                                                         "range"),
    (["model.conditional=true", "data=celeba"], "needs a labelled dataset"),
    (["model.optimizer.lr=0"], "model.optimizer.lr=0 is out of range"),
    (["+model.optimizer.momentum=0.9"], "model.optimizer.momentum is not a key"),
    (["callbacks.sample_grid.n=0"], "callbacks.sample_grid.n=0 is out of range"),
    (["callbacks.model_checkpoint.save_top_k=-2"], "save_top_k=-2 is out of range"),
    (["callbacks.step_checkpoint.every_n_train_steps=-5"],
     "callbacks.step_checkpoint.every_n_train_steps=-5 is out of range"),
    (["resume=7"], "resume=7 is not valid"),
    (["resume=/elsewhere"], "resume=/elsewhere continues a run in its own directory, but this "
                            "run writes to"),
    (["seed=-1"], "seed=-1 is out of range"),
    (["logger=[tensorboard,csv]", "logger.tensorboard.default_hp_metric=maybe"],
     "logger.tensorboard.default_hp_metric='maybe' is not valid"),
    (["logger=csv", "+logger.csv.flush_every=10"], "logger.csv.flush_every is not a key"),
    (["data=image_folder", "data.path=/nowhere/images"], "data.path=/nowhere/images does not "
                                                        "exist"),
    (["data.name=imagenet"], "data.name='imagenet' is not valid"),
])
def test_mistakes_are_refused_at_start_up(overrides, message, compose):
    with pytest.raises(GenlabError, match=message):
        v.validate_train(compose(overrides))


@pytest.mark.parametrize("overrides", [
    ["model=gan", "data.dequantize=true"],  # GANs have no likelihood: dequantized data is fine
    ["model=glow", "data.dequantize=true"],  # flows requantize and dequantize the batch themselves
    ["model.likelihood=bernoulli", "data.binarize=dynamic"],
    ["model=pixelcnn_pp", "data=cifar10", "model.channels=32"],  # the mixture: any width
    ["data=image_folder", "data.path=x", "data.num_classes=null", "model.conditional=true"],
    ["trainer.max_time=00:01:30:00", "trainer.max_epochs=-1", "+trainer.val_check_interval=0.5"],
])
def test_valid_combinations_pass(overrides, compose, fake_root):
    overrides = [o.replace("data.path=x", f"data.path={fake_root / 'images.tar.gz'}")
                 for o in overrides]
    v.validate_train(compose(overrides))


# -- evaluate.py's overrides ----------------------------------------------------------------------
def evaluate_cfg(compose, family: str, *overrides: str):
    return compose([f"ckpt_path={FIXTURES / f'{family}-53273f2.ckpt'}", *overrides],
                   config_name="evaluate")


@pytest.mark.parametrize("family, overrides, message", [
    ("vae", ["+model.latent_dim=999"], r"\+model.latent_dim is not accepted by evaluate.py: it "
                                       r"shapes the trained network or its training \(the "
                                       r"checkpoint has model.latent_dim=2\)"),
    ("vae", ["+model.sampler=ddim"], r"the checkpoint's model \(VAE\) has no such key. The "
                                     "model keys evaluate.py accepts for this checkpoint are: "
                                     "bound_images, importance_batch, test_importance_samples"),
    ("ddpm", ["+model.channels=32"], r"\+model.channels is not accepted"),
    ("gan", ["+model.latent_dim=3"], "accepts for this checkpoint are: none"),
    ("vae", ["+data.image_size=64"], r"\+data.image_size is not accepted .* the data the model "
                                     "was trained on"),
    ("vae", ["+data.name=mnist"], r"\+data.name is not accepted"),
    ("vae", ["+model.test_importance_samples=0"], "test_importance_samples=0 is out of range"),
    ("ddpm", ["+model.sampling_steps=0"], "model.sampling_steps=0 is out of range"),
    ("ddpm", ["+model.sampler=euler"], "model.sampler='euler' is not valid: it must be one of "
                                       "ddpm, ddim"),
    ("vae", ["fid.sampler=ddim"], "fid.sampler=ddim is set, but this checkpoint's model"),
    ("vae", ["fid.num_samples=5"], "fid.num_samples=5 is out of range"),
    ("vae", ["+fid.samples=5"], "fid.samples is not a key of fid"),
    ("vae", ["split=train"], "split='train' is not valid"),
    ("gan", ["tasks=[reconstruct]"], "'reconstruct' needs one of the capabilities reconstruct"),
    ("vae", ["task_options.inpaint_pixels.missing=1.5"],
     "task_options.inpaint_pixels.missing=1.5 is out of range"),
    ("vae", ["sample_grid=-1"], "sample_grid=-1 is out of range"),
    ("vae", ["wandb_table=-1"], "wandb_table=-1 is out of range"),
    ("vae", ["task_options.edit.examples=1"], "task_options.edit.examples=1 is out of range"),
    ("vae", ["+task_options.edit.colour=red"], "task_options.edit.colour is not a key"),
    ("vae", ["task_options.temperature.temperatures=[0.7,-1]"],
     r"task_options.temperature.temperatures=\[0.7, -1\] is out of range"),
    ("vae", ["+task_options.edti.examples=5"], "'edti' is not a task"),
    ("vae", ["probe.seeds=0"], "probe.seeds=0 is out of range"),
    ("vae", ["probe.baselines=[pixel]"], r"probe.baselines=\['pixel'\] is not valid: it must be "
                                         "a list of"),
    ("vae", ["+probe.k=5"], "probe.k is not a key of probe"),
    ("gan", ["probe.enabled=true"], "probe.enabled=true needs a model that encodes images"),
    ("vae", ["ood.num_images=0"], "ood.num_images=0 is out of range"),
    ("vae", ["+ood.images=5"], "ood.images is not a key of ood"),
    ("vae", ["ood.datasets=[svhm]"], "ood.datasets='svhm' is not valid"),
    ("vae", ["ood.datasets=[cifar10]"], "cifar10 images are 3x32x32, but the model's are 1x32x32"),
    ("gan", ["ood.datasets=[mnist]"], "GAN has no out-of-distribution score"),
    ("vae", ["+ood.options.image_folder.path=x"], "ood.options.image_folder is set, but "
                                                  "image_folder is not in ood.datasets"),
    ("vae", ["ood.datasets=[image_folder]"], "ood.options.image_folder.path, but that is not set"),
    ("vae", ["ood.datasets=[celeba]", "+ood.options.celeba.crop=0"],
     "ood.options.celeba.crop=0 is out of range"),
])
def test_evaluate_refuses_overrides_a_checkpoint_does_not_accept(family, overrides, message,
                                                                  compose):
    with pytest.raises(GenlabError, match=message):
        v.validate_evaluate(evaluate_cfg(compose, family, *overrides))


def test_evaluate_accepts_sampling_keys_and_applies_the_full_evaluation(compose):
    _, cfg = v.validate_evaluate(evaluate_cfg(compose, "vae", "+data.eval_batch_size=64"))
    assert cfg.model.test_importance_samples == 1000 and cfg.model.bound_images is None
    assert cfg.data.eval_batch_size == 64
    _, cfg = v.validate_evaluate(evaluate_cfg(compose, "vae",
                                              "+model.test_importance_samples=10"))
    assert cfg.model.test_importance_samples == 10
    _, cfg = v.validate_evaluate(evaluate_cfg(compose, "ddpm", "+model.sampler=ddpm",
                                              "+model.sampling_steps=3", "+model.eta=0.5"))
    assert (cfg.model.sampler, cfg.model.test_bound_terms) == ("ddpm", None)


# -- checkpoints -----------------------------------------------------------------------------
def write_malicious_checkpoint(path: Path, target: Path) -> Path:
    """A checkpoint whose unpickling opens `target` for writing (creating it): the shape of
    any code-running pickle."""
    import torch

    class Payload:
        def __reduce__(self):
            return open, (str(target), "w")

    torch.save({"genlab_config": {"model": {}, "data": {}}, "state_dict": {},
                "payload": Payload()}, path)
    return path


def test_a_malicious_checkpoint_runs_nothing(tmp_path):
    import torch

    from genlab.run.checkpoint import load_checkpoint

    target = tmp_path / "written-by-the-checkpoint"
    ckpt = write_malicious_checkpoint(tmp_path / "evil.ckpt", target)
    with pytest.raises(GenlabError, match="is not a genlab checkpoint, or was made by an "
                                          "untrusted tool: it refers to io.open"):
        load_checkpoint(ckpt)
    assert not target.exists()
    torch.load(ckpt, weights_only=False)  # proof that the file is malicious: unsafe loading
    assert target.exists()                # writes the file


@pytest.mark.parametrize("family", ["vae", "ddpm", "gan"])
def test_checkpoints_of_earlier_releases_load_safely(family):
    from genlab.run.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(FIXTURES / f"{family}-53273f2.ckpt")
    assert checkpoint["state_dict"] and checkpoint["genlab_config"]["model"]["_target_"]


def test_resuming_a_checkpoint_of_another_model_is_refused(compose):
    ckpt = FIXTURES / "gan-53273f2.ckpt"
    with pytest.raises(GenlabError, match="holds a model with model._target_="):
        v.validate_train(compose([f"ckpt_path={ckpt}"]))


# -- the run directory --------------------------------------------------------------------------
def test_an_unwritable_run_directory_is_explained(tmp_path):
    from genlab.files.dirs import check_writable

    assert check_writable(tmp_path / "a" / "b", "hydra.run.dir") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("")
    with pytest.raises(GenlabError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "run", "hydra.run.dir")


def test_fake_data_overrides_validate(compose, fake_root):
    for dataset in options("data"):
        v.validate_train(compose([f"data={dataset}", *fake_data_overrides(dataset, fake_root)]))
