"""Stopping a run on a signal with a checkpoint to resume from.

SIGTERM (what `kill`, a scheduler or a container runtime send), Ctrl-C (SIGINT) and the SLURM
launcher's pre-timeout signal (SIGUSR2, submitit's; `$SUBMITIT_PREEMPT_SIGNAL` when set) end
training at the next batch boundary: the training batch under way finishes, the full training
state (weights, optimizers, loops, data position, random state) is written to
`<run>/checkpoints/interrupted.ckpt` through the run's checkpoint writer
(`genlab.run.checkpoint.AtomicCheckpointIO`: a temporary file renamed into place), and the run
ends with a message that names the checkpoint and the command that continues it (`python
train.py <its overrides> resume=<run>`). Exit status 128 + the signal's number (143 for SIGTERM,
130 for Ctrl-C), run.json says "interrupted", the W&B run is closed. A second Ctrl-C stops at
once (Lightning's KeyboardInterrupt handling; the previous checkpoint stays). During the test
after fitting, SIGTERM stops at once (status 143): the training is over and its checkpoints are
written, and a test (FID sampling, say) may run long between the points where Lightning looks at
its SIGTERM flag.

SIGTERM reaches us through Lightning's signal connector (`trainer.received_sigterm`), which
otherwise would only stop at the end of the epoch, without a checkpoint and with status 0. The
other two are noted by a handler installed for the fit; under submitit, its own handler of the
pre-timeout signal (which requeues the job and exits) is called once the checkpoint is written,
and the requeued job continues from it (`genlab.run.checkpoint.resume_checkpoint`). A signal
during validation stops there (Lightning raises `SIGTERMException`) and the checkpoint is
written then.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from genlab.run.layout import RunLayout

log = logging.getLogger(__name__)


def preemption_signal() -> signal.Signals:
    """The SLURM launcher's pre-timeout signal: submitit's, USR2 unless $SUBMITIT_PREEMPT_SIGNAL
    names another."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class StopOnSignal(L.Callback):
    def __init__(self, run_dir: str | Path, resume_command: str):
        self.checkpoint = RunLayout(Path(run_dir)).checkpoints / "interrupted.ckpt"
        self.resume_command = resume_command
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _note(self, signum: int, frame) -> None:
        log.info("received %s: stopping after this batch, with a checkpoint",
                 signal.Signals(signum).name)
        self.received = signum
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT)
                          or signal.default_int_handler)

    def _restore(self) -> dict[int, object]:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        return previous

    def on_train_start(self, trainer: L.Trainer, model) -> None:
        self.received = None
        for signum in {signal.SIGINT, preemption_signal()}:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        signum = self.received or (signal.SIGTERM if trainer.received_sigterm else None)
        if signum is not None:
            self._stop(trainer, signum)

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        trainer.save_checkpoint(self.checkpoint, weights_only=False)
        self._report(trainer, signum)
        handler = self._restore().get(signum)
        if signum != signal.SIGINT and callable(handler):
            handler(signum, None)  # submitit's: requeue the job (and exit)
        raise SIGTERMException(128 + signum)

    @rank_zero_only
    def _report(self, trainer: L.Trainer, signum: int) -> None:
        print(f"\ngenlab: {signal.Signals(signum).name} stopped training at epoch "
              f"{trainer.current_epoch}, step {trainer.global_step}; the checkpoint is "
              f"{self.checkpoint}. Continue the run with:\n    {self.resume_command}",
              file=sys.stderr)

    def on_exception(self, trainer: L.Trainer, model, exception: BaseException) -> None:
        """SIGTERM during validation (or testing) ends in Lightning's SIGTERMException there,
        with status 0 unless we set it: the checkpoint is written then (when fitting)."""
        signum = self.received or (signal.SIGTERM if trainer.received_sigterm else None)
        self._restore()
        if isinstance(exception, SIGTERMException) and exception.code is None and signum:
            if trainer.state.fn == TrainerFn.FITTING:
                trainer.save_checkpoint(self.checkpoint, weights_only=False)
                self._report(trainer, signum)
            exception.code = 128 + signum

    def on_fit_end(self, trainer: L.Trainer, model) -> None:
        self._restore()

    def _stop_testing(self, signum: int, frame) -> None:
        raise SIGTERMException(128 + signum)

    def on_test_start(self, trainer: L.Trainer, model) -> None:
        self._previous[signal.SIGTERM] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._stop_testing)

    def on_test_end(self, trainer: L.Trainer, model) -> None:
        self._restore()
