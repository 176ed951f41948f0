"""A callback that ends its own training process with SIGKILL (kill -9: no handler, no cleanup)
when the trainer reaches a given global step: a crash at a known point, for the resume tests
(train.py ... +callbacks.kill._target_=helpers.kill.KillAt +callbacks.kill.step=N, with tests/
on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    def __init__(self, step: int, signum: int = signal.SIGKILL):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), self.signum)
