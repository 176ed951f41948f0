"""A final validation when training stops in the middle of an epoch on `trainer.max_steps`.

Lightning validates at the end of an epoch (or every `val_check_interval` batches); a run that
reaches max_steps between two validations stops without validating its last weights, so the
monitored metric (e.g. `val/bpd`) of the final model is missing, the checkpoint callback warns
that it cannot find it, and no best checkpoint reflects the end of training. This callback asks
Lightning to stop at that step through `trainer.should_stop`, which makes Lightning run the
validation loop once more (and the checkpoint callback save after it), the same path that early
stopping and `max_time` take. train.py adds it to every run.
"""

from __future__ import annotations

import lightning as L


class ValidateAtMaxSteps(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch,
                           batch_idx: int) -> None:
        max_steps = trainer.max_steps
        if (max_steps is None or max_steps < 0 or trainer.global_step < max_steps
                or trainer.fast_dev_run or trainer.should_stop or not trainer.enable_validation):
            return
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch:
            return  # the end of the epoch: Lightning validates there anyway
        # The run ends after this batch whatever these say (max_steps wins over min_epochs in
        # Lightning's fit loop), so they may be relaxed: validation on should_stop waits for
        # min_epochs (1 when unset), and only every n-th epoch validates.
        trainer.fit_loop.min_epochs = 0
        trainer.check_val_every_n_epoch = None
        trainer.should_stop = True
