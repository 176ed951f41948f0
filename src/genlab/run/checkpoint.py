"""Reading checkpoints written by train.py, safely; writing them atomically.

A checkpoint is a pickle, and unpickling an arbitrary pickle runs arbitrary code. genlab
checkpoints hold only tensors and plain containers (dicts, lists, numbers, strings: the run
config is stored as plain containers, hyperparameters as plain values), so they are read with
`torch.load(weights_only=True)`, whose unpickler refuses every other global: a crafted file
fails to load instead of running anything. Every path that reads a checkpoint goes through
here first (evaluate.py, `train.py ckpt_path=`), and Lightning itself is told to load with
`weights_only=True` too (`genlab.run.train`).

Writing: `AtomicCheckpointIO` makes Lightning write every checkpoint through
`genlab.files.atomic.atomic_write` (a temporary file in the checkpoint's own folder, fsynced,
then `os.replace`d over the old file), so a full disk, a crash or a kill during a save leaves
the previous checkpoint whole. Lightning's own writer stages the bytes in the system's
temporary folder (`tempfile.mkstemp()`) and moves them into place: across file systems
(/tmp local, the run on a network disk, as on most clusters) that move is a copy into the
target, which truncates the previous checkpoint first.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from genlab.callbacks.config import CONFIG_KEY
from genlab.errors import GenlabError
from genlab.files.atomic import atomic_write
from genlab.run.layout import RunLayout

# Globals that a safe genlab checkpoint may hold beyond torch's default allow-list: none today
# (see tests/test_run.py for the checkpoints of earlier releases that must keep loading).
SAFE_GLOBALS: list = []


def load_model(path: str | Path, families: tuple[type, ...], refusal: str, key: str) -> tuple:
    """The model of a train.py checkpoint, built from the run config it stores and given its
    weights, in eval mode, with that config (plain containers); a GenlabError naming `key`
    when its class is none of `families`: "`key`=`path` holds a <class>, " then `refusal`."""
    from omegaconf import OmegaConf

    from genlab.run.build import build
    from genlab.run.validate import locate

    checkpoint = load_checkpoint(path, key)
    config = checkpoint[CONFIG_KEY]
    cls = locate(str(config["model"]["_target_"]), "model")
    if not (isinstance(cls, type) and issubclass(cls, families)):
        raise GenlabError(f"{key}={path} holds a {getattr(cls, '__name__', cls)}, {refusal}")
    model = build(OmegaConf.create(config["model"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), config

class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for local paths, through `atomic_write`."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:  # Lightning's error: no storage options here
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path) as f:
            torch.save(checkpoint, f)


def _load(path: Path) -> object:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:  # memory-mapped: cheap even for a large checkpoint that is only checked
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The contents of a checkpoint written by train.py, loaded without running any code from
    the file; a GenlabError naming `key` for a missing, corrupt, foreign or unsafe file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GenlabError(f"{key}={path} does not exist. Give the path of a checkpoint "
                          "written by train.py, e.g. outputs/train/runs/<run>/checkpoints/"
                          "last.ckpt.")
    try:
        checkpoint = _load(path)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise GenlabError(f"{key}={path} cannot be read as a checkpoint ({err}). It is "
                              "corrupt or truncated; use another one, such as last.ckpt or "
                              "best-*.ckpt from the same run.") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"it refers to {found.group(1)}" if found else "it holds objects that are not " \
            "tensors or plain containers"
        raise GenlabError(f"{key}={path} is not a genlab checkpoint, or was made by an "
                          f"untrusted tool: {what}, and genlab loads checkpoints only as "
                          "tensors and plain values (torch.load with weights_only=True), so that "
                          "a checkpoint can never run code. Nothing from it was run. Use a "
                          "checkpoint written by train.py (checkpoints/last.ckpt or "
                          "best-*.ckpt of a run).") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise GenlabError(f"{key}={path} cannot be read as a checkpoint ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}). It is corrupt or "
                          "truncated; use another one, such as last.ckpt or best-*.ckpt from the "
                          "same run.") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(CONFIG_KEY), dict):
        raise GenlabError(f"{key}={path} is not a genlab checkpoint (it holds no run config); "
                          "give a checkpoint written by train.py.")
    stored = checkpoint[CONFIG_KEY]
    if not all(isinstance(stored.get(part), dict) and "_target_" in stored[part]
               for part in ("model", "data")):
        raise GenlabError(f"{key}={path} is not a genlab checkpoint (its run config names no "
                          "model and data); give a checkpoint written by train.py.")
    return checkpoint


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recently written checkpoint of a run directory (last.ckpt, best-*.ckpt,
    step.ckpt, interrupted.ckpt; and hpc_ckpt_<n>.ckpt, which Lightning's SLURM auto-requeue
    writes into the run directory on SIGUSR1), or None."""
    layout = RunLayout(Path(run_dir))
    found = [p for p in [*layout.checkpoints.glob("*.ckpt"), *layout.root.glob("hpc_ckpt_*.ckpt")]
             if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def requeued() -> bool:
    """Whether this process is a SLURM job that was requeued (preempted or timed out, then
    started again by the scheduler): it continues its own run directory."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def resume_checkpoint(ckpt_path: str | None, resume: str | None,
                      run_dir: str | Path | None = None) -> str | None:
    """The checkpoint train.py starts from: `ckpt_path`; or with `resume=<run dir>` the newest
    checkpoint of that run (a GenlabError when it has none; `ckpt_path=last` is the same for
    this run's own directory `run_dir`, hydra.run.dir); or, in a requeued SLURM job, the newest
    checkpoint of `run_dir`, if any; else None (a new run)."""
    if ckpt_path and resume:
        raise GenlabError(f"ckpt_path={ckpt_path} and resume={resume} are both set: give one. "
                          "resume=<run dir> continues that run from its newest checkpoint, in its "
                          "directory; ckpt_path=<file> starts a new run directory from a "
                          "checkpoint.")
    if ckpt_path in ("best", "hpc"):
        raise GenlabError(f"ckpt_path={ckpt_path} is one of Lightning's shorthands, which name no "
                          "run here: continue a run with resume=<its directory> (e.g. "
                          "resume=outputs/train/runs/<date>_<time>: its newest checkpoint), or "
                          "give ckpt_path=<the path of a checkpoint file>.")
    if ckpt_path == "last":  # the same as resume=<this run's directory>
        ckpt_path, resume, key = None, str(run_dir), "ckpt_path=last with hydra.run.dir"
    else:
        key = "resume"
    if ckpt_path:
        return str(ckpt_path)
    if resume:
        layout = RunLayout(Path(resume).expanduser())
        newest = newest_checkpoint(layout.root)
        if newest is None:
            what = "does not exist" if not layout.root.is_dir() else \
                f"holds no checkpoint ({layout.checkpoints}/*.ckpt is empty or missing)"
            raise GenlabError(f"{key}={resume} {what}. Give the directory of a train.py run "
                              "that wrote a checkpoint, e.g. resume=outputs/train/runs/<date>_"
                              "<time>: checkpoints are written at the end of every epoch, every "
                              "callbacks.model_checkpoint.every_n_train_steps steps when set, and "
                              "when a signal (SIGTERM, Ctrl-C) stops a run. Without one, start "
                              "the run afresh (no resume=).")
        return str(newest)
    if run_dir is not None and requeued():
        newest = newest_checkpoint(run_dir)
        return None if newest is None else str(newest)
    return None
