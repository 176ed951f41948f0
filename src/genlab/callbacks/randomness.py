"""The global random state in every checkpoint, so a resumed run draws what the uninterrupted run
would have drawn.

Training draws from the global generators of torch (the VAE's reparameterization noise, the
diffusion timesteps and noise, dropout, dynamic binarization and flips), numpy and Python. A
checkpoint used to hold only the weights, optimizer and loop state, so a resumed run continued
from the random state that seeding and building the model leave, not from the one at the
checkpoint: its weights drifted away from the uninterrupted run's from the first step after the
resume. `RandomState` stores the states of those generators (torch's CPU and CUDA, numpy's,
Python's) when a checkpoint is written and sets them again when training starts from one, after
Lightning's sanity validation, immediately before the first training batch is fetched.

This holds because nothing between writing a checkpoint (after a training batch, or after
validation) and the next training batch draws from the global generators: validation steps and
the image callbacks draw from their own seeded generators (`torch.Generator`), and the data
order comes from (data.seed, epoch) (`genlab.data.datamodule.TensorBatches`). Under DDP every
rank starts from rank 0's stored state, as every rank started from the same seed.

The numpy state is stored as a tensor, so checkpoints still load with `weights_only=True`
(`genlab.run.checkpoint`).
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

log = logging.getLogger(__name__)


def _portable(states: dict) -> dict:
    """numpy's state tuple with its key array as a tensor (weights_only-loadable)."""
    name, keys, *rest = states["numpy"]
    return {**states, "numpy": (name, torch.from_numpy(keys.astype(np.int64)), *rest)}


def _native(states: dict) -> dict:
    name, keys, *rest = states["numpy"]
    states = {**states, "numpy": (name, keys.numpy().astype(np.uint32), *rest)}
    cuda = states.get("torch.cuda") or []
    if len(cuda) != (torch.cuda.device_count() if torch.cuda.is_available() else 0):
        if cuda:
            log.warning("the checkpoint holds the random state of %d CUDA devices and this "
                        "machine has %d: the CUDA generators are not restored, so the resumed "
                        "run's GPU noise differs from the uninterrupted run's", len(cuda),
                        torch.cuda.device_count())
        states.pop("torch.cuda", None)
    return states


class RandomState(L.Callback):
    def __init__(self):
        self._loaded: dict | None = None

    def state_dict(self) -> dict:
        return {"rng": _portable(_collect_rng_states(include_cuda=True))}

    def load_state_dict(self, state: dict) -> None:
        self._loaded = state.get("rng")

    def on_train_start(self, trainer: L.Trainer, model) -> None:
        if self._loaded is not None:
            _set_rng_states(_native(self._loaded))
            self._loaded = None
