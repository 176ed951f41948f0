"""Resuming a training run: a run killed with kill -9 after a checkpoint and resumed from it ends
with the same weights, bit for bit, as the uninterrupted run (CPU, trainer.deterministic=true);
the global random state travels in the checkpoint."""

from __future__ import annotations

import io
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import run_train

from genlab.errors import GenlabError
from genlab.run.checkpoint import resume_checkpoint

# two epochs of four batches of 8 digits, one validation batch, no test, no logger
RESUMABLE = ["data=digits", "data.batch_size=8", "data.val_size=16", "data.eval_batch_size=16",
             "trainer=cpu", "trainer.deterministic=true", "logger=none", "test=false",
             "trainer.max_epochs=2", "+trainer.limit_train_batches=4",
             "+trainer.limit_val_batches=1", "~callbacks.progress_bar",
             "~callbacks.model_summary", "callbacks.sample_grid.n=4",
             "callbacks.reconstruction_grid.n=4", "+trainer.enable_progress_bar=false"]
KILL = ["+callbacks.kill._target_=helpers.kill.KillAt"]


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def final_tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the final state_dict and of the optimizers' states, by name."""
    ckpt = checkpoint(run)
    tensors = {f"state_dict.{k}": v for k, v in ckpt["state_dict"].items()}
    for i, optimizer in enumerate(ckpt["optimizer_states"]):
        for param, state in optimizer["state"].items():
            tensors.update({f"optimizer{i}.{param}.{k}": v for k, v in state.items()
                            if isinstance(v, torch.Tensor)})
    return tensors


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = {k: (a[k].double() - b[k].double()).abs().max().item()
              for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, at most by " \
                       f"{max(differ.values()):.3g}: {sorted(differ)[:5]}"


def kill_and_resume(tmp_path: Path, overrides: list[str], kill_step: int) -> tuple[Path, Path]:
    """Train uninterrupted into full/; train into resumed/, killed with SIGKILL when the trainer
    reaches `kill_step`, and continue it with resume=<its directory> (its newest checkpoint)."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    done = run_train(*RESUMABLE, *overrides, f"hydra.run.dir={full}")
    assert done.returncode == 0, done.stderr[-3000:]
    killed = run_train(*RESUMABLE, *overrides, f"hydra.run.dir={resumed}", *KILL,
                       f"+callbacks.kill.step={kill_step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    saved_at = checkpoint(resumed)["global_step"]
    assert 0 < saved_at < kill_step <= checkpoint(full)["global_step"]
    again = run_train(*RESUMABLE, *overrides, f"resume={resumed}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoint(resumed)["global_step"] == checkpoint(full)["global_step"]  # same folder
    return full, resumed


@pytest.mark.slow
@pytest.mark.parametrize("model, kill_step", [("vae", 6), ("ddpm", 6), ("gan", 12)])
def test_a_run_killed_in_its_second_epoch_and_resumed_ends_bitwise_equal(tmp_path, model,
                                                                          kill_step):
    """Killed in the second epoch (the GAN counts two optimizer steps per batch), resumed from
    the end-of-epoch checkpoint: every weight, buffer (EMA included) and optimizer state equals
    the uninterrupted run's."""
    full, resumed = kill_and_resume(tmp_path, [f"model={model}"], kill_step)
    assert_same_tensors(final_tensors(full), final_tensors(resumed))


def _draws() -> tuple:
    return torch.rand(3), np.random.rand(3), random.random()


def test_the_random_state_survives_a_weights_only_checkpoint_and_is_set_when_training_starts():
    from genlab.callbacks.randomness import RandomState

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    buffer = io.BytesIO()
    torch.save({"state": RandomState().state_dict()}, buffer)
    expected = _draws()
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)["state"]

    resumed = RandomState()
    resumed.load_state_dict(stored)
    torch.manual_seed(2), np.random.seed(2), random.seed(2)  # what seeding a new process does
    resumed.on_train_start(None, None)
    got = _draws()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    resumed.on_train_start(None, None)  # set once: a later fit continues from where it is
    assert not torch.equal(torch.rand(3), expected[0])


def test_resume_picks_the_newest_checkpoint_of_a_run_and_says_what_to_do_without_one(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with pytest.raises(GenlabError, match=r"resume=.*run holds no checkpoint .*Without one, "
                                          r"start the run afresh"):
        resume_checkpoint(None, str(tmp_path / "run"))
    with pytest.raises(GenlabError, match="does not exist"):
        resume_checkpoint(None, str(tmp_path / "elsewhere"))
    for name, written in {"best-epoch000.ckpt": 1, "last.ckpt": 3, "interrupted.ckpt": 2}.items():
        (checkpoints / name).write_bytes(b"")
        os.utime(checkpoints / name, (written, written))
    assert resume_checkpoint(None, str(tmp_path / "run")) == str(checkpoints / "last.ckpt")
    assert resume_checkpoint("a.ckpt", None) == "a.ckpt"
    assert resume_checkpoint(None, None) is None
    with pytest.raises(GenlabError, match="are both set: give one"):
        resume_checkpoint("a.ckpt", str(tmp_path / "run"))
