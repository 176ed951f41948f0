"""Config overrides for short real training runs in the tests."""

from __future__ import annotations

from pathlib import Path

# a real step, kept small: one training batch, one validation batch, tiny grids, no logger
SMALL_RUN = ["trainer=cpu", "logger=none", "test=false", "trainer.max_steps=1",
             "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
             "callbacks.sample_grid.n=4", "callbacks.reconstruction_grid.n=4",
             "callbacks.long_run_grid.n=4", "callbacks.long_run_grid.steps=3",
             "~callbacks.progress_bar", "~callbacks.model_summary",
             "+trainer.num_sanity_val_steps=0",
             "+trainer.enable_progress_bar=false", "data.batch_size=8", "data.eval_batch_size=8"]


def fake_data_overrides(dataset: str, root: Path) -> list[str]:
    if dataset == "digits":
        return ["data.val_size=16"]
    overrides = [f"data.root={root}", f"data.cache_dir={root / 'cache'}", "data.download=false",
                 "data.verify=false", "data.val_size=8"]
    if dataset == "image_folder":
        overrides += [f"data.path={root / 'images.tar.gz'}", "data.test_size=4"]
    return overrides
