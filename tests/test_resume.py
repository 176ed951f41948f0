"""Resuming a training run: a run killed with kill -9 after a checkpoint and resumed from it ends
with the same weights, bit for bit, as the uninterrupted run (CPU, trainer.deterministic=true);
the global random state travels in the checkpoint; SIGTERM and Ctrl-C stop a run with a
checkpoint and the command that continues it; a disk that fills during a checkpoint write
leaves the previous checkpoint whole."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import run_train, start_train

from genlab.errors import GenlabError
from genlab.run.checkpoint import newest_checkpoint, resume_checkpoint

# two epochs of four batches of 8 digits, one validation batch, no test, no logger
RESUMABLE = ["data=digits", "data.batch_size=8", "data.val_size=16", "data.eval_batch_size=16",
             "trainer=cpu", "trainer.deterministic=true", "logger=none", "test=false",
             "trainer.max_epochs=2", "+trainer.limit_train_batches=4",
             "+trainer.limit_val_batches=1", "~callbacks.progress_bar",
             "~callbacks.model_summary", "callbacks.sample_grid.n=4",
             "callbacks.reconstruction_grid.n=4", "+trainer.enable_progress_bar=false"]
KILL = ["+callbacks.kill._target_=helpers.kill.KillAt"]
STEP_CHECKPOINTS = ["callbacks.step_checkpoint.every_n_train_steps=2"]
MODEL = {"vae": ["model=vae"], "gan": ["model=gan"],
         "ddpm": ["model=ddpm", "model.sampling_steps=5"]}  # a quicker sample grid


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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """uninterrupted(model) -> a function that waits for the uninterrupted run of that model
    (with step checkpoints every 2 steps, which change nothing in the weights) and returns its
    directory. The run starts in the background at the first call, once for the module, so
    that it trains while the test's own runs do."""
    runs = {}

    def start(model: str):
        if model not in runs:
            folder = tmp_path_factory.mktemp("full") / model
            log = folder.with_suffix(".log")
            runs[model] = folder, log, start_train(*RESUMABLE, *MODEL[model],
                                                   f"hydra.run.dir={folder}",
                                                   *STEP_CHECKPOINTS, log=log)
        folder, log, process = runs[model]

        def wait() -> Path:
            assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
            return folder

        return wait

    yield start
    for _, _, process in runs.values():  # a failed test may have left one running
        if process.poll() is None:
            process.kill()
            process.wait()


def kill_and_resume(tmp_path: Path, overrides: list[str], kill_step: int, saved_at: int) -> Path:
    """Train into resumed/, killed with SIGKILL when the trainer reaches `kill_step` (its newest
    checkpoint is then that of step `saved_at`), and continue it with resume=<its directory>."""
    resumed = tmp_path / "resumed"
    killed = run_train(*RESUMABLE, *overrides, f"hydra.run.dir={resumed}", *KILL,
                       f"+callbacks.kill.step={kill_step}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    newest = torch.load(newest_checkpoint(resumed), weights_only=True)
    assert newest["global_step"] == saved_at
    again = run_train(*RESUMABLE, *overrides, f"resume={resumed}")
    assert again.returncode == 0, again.stderr[-3000:]
    return resumed


@pytest.mark.slow
@pytest.mark.parametrize("model, kill_step, saved_at, overrides", [
    ("vae", 6, 4, []),                   # resumes from the end of epoch 0
    ("ddpm", 7, 6, STEP_CHECKPOINTS),    # from the middle of epoch 1
    ("gan", 14, 14, STEP_CHECKPOINTS),   # the same: two optimizer steps per batch
], ids=["vae-epoch-end", "ddpm-mid-epoch", "gan-mid-epoch"])
def test_a_run_killed_in_its_second_epoch_and_resumed_ends_bitwise_equal(
        tmp_path, uninterrupted, model, kill_step, saved_at, overrides):
    """Killed with SIGKILL in the second epoch, after a checkpoint at `saved_at` (the end of the
    first epoch, or a step checkpoint mid-epoch), and resumed: every weight, buffer (EMA
    included) and optimizer state equals the uninterrupted run's."""
    full = uninterrupted(model)
    resumed = kill_and_resume(tmp_path, [*MODEL[model], *overrides], kill_step, saved_at)
    full = full()
    assert checkpoint(resumed)["global_step"] == checkpoint(full)["global_step"]  # same folder
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
    (tmp_path / "run" / "hpc_ckpt_1.ckpt").write_bytes(b"")  # Lightning's SLURM requeue's
    assert resume_checkpoint(None, str(tmp_path / "run")) == str(tmp_path / "run" /
                                                                 "hpc_ckpt_1.ckpt")
    assert resume_checkpoint("a.ckpt", None) == "a.ckpt"
    assert resume_checkpoint(None, None) is None
    with pytest.raises(GenlabError, match="ckpt_path=best is one of Lightning's shorthands"):
        resume_checkpoint("best", None)
    assert resume_checkpoint("last", None, tmp_path / "run") == str(tmp_path / "run" /
                                                                    "hpc_ckpt_1.ckpt")
    with pytest.raises(GenlabError, match=r"ckpt_path=last with hydra.run.dir=\S+ does not "):
        resume_checkpoint("last", None, tmp_path / "elsewhere")
    with pytest.raises(GenlabError, match="are both set: give one"):
        resume_checkpoint("a.ckpt", str(tmp_path / "run"))


def resume_command(stderr: str) -> list[str]:
    """The command train.py printed to continue a stopped run, to run with this interpreter."""
    lines = stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "Continue the run with:" in line)
    command = shlex.split(lines[at + 1])
    assert command[:2] == ["python", str(Path(__file__).resolve().parents[1] / "train.py")]
    return command[2:]


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_and_the_printed_command_continues_the_run(
        tmp_path, uninterrupted):
    """SIGTERM before step 7 (mid-epoch): exit status 143, checkpoints/interrupted.ckpt at step 7
    (the batch under way finished), run.json "interrupted", a message naming the checkpoint and
    the command; that command continues the run in its folder, and its W&B run, to the end,
    where its weights equal the uninterrupted run's (a mid-epoch resume)."""
    full, run = uninterrupted("vae"), tmp_path / "run"
    with_wandb = [o if o != "logger=none" else "logger=wandb" for o in RESUMABLE]  # offline
    stopped = run_train(*with_wandb, "model=vae", f"hydra.run.dir={run}", *KILL,
                        "+callbacks.kill.step=6", f"+callbacks.kill.signum={int(signal.SIGTERM)}")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    saved = run / "checkpoints" / "interrupted.ckpt"
    assert f"SIGTERM stopped training at epoch 1, step 7; the checkpoint is {saved}" \
        in stopped.stderr
    assert torch.load(saved, weights_only=True)["global_step"] == 7
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["wandb"]["offline"]
    command = resume_command(stopped.stderr)
    assert f"resume={run}" in command and "model=vae" in command
    again = run_train(*[c for c in command if not c.startswith("+callbacks.kill")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_tensors(final_tensors(full()), final_tensors(run))
    continued = json.loads((run / "run.json").read_text())
    assert continued["status"] == "finished"
    # one W&B run: the continued process resumed the same run id (offline: a second folder of
    # it, which `wandb sync` uploads into the one run)
    assert continued["wandb"]["id"] == record["wandb"]["id"]
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.endswith(f"-{record['wandb']['id']}")
                                     for f in folders), folders


def deliver(signum: int, done=lambda: False, timeout: float = 10.0) -> None:
    """Send `signum` to this process and wait until Python has run its handler (`done()` is
    true, or the handler raised, which interrupts the sleep), at most `timeout` seconds: a
    process-directed signal may reach another thread, and the main thread then runs the handler
    at its next check, so a test must not assume it has run when os.kill returns."""
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)


class _Trainer:
    """What StopOnSignal reads of a trainer, and a save_checkpoint that records its calls."""
    received_sigterm, current_epoch, global_step, is_global_zero = False, 0, 5, True

    def __init__(self, calls: list):
        self.calls = calls

    def save_checkpoint(self, path, weights_only=None):
        self.calls.append(("saved", Path(path).name))


def ctrl_c_scenario(tmp_path: Path) -> None:
    """The first Ctrl-C is only noted; the batch under way ends, the checkpoint is written and
    the run stops with status 130; after it (or a second Ctrl-C) SIGINT is Python's
    KeyboardInterrupt again."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from genlab.callbacks.interruption import StopOnSignal

    calls = []
    stop, trainer = StopOnSignal(tmp_path, "python train.py resume=x"), _Trainer(calls)
    # Python's own Ctrl-C handler, as in a terminal: a process started as a background job
    # (`cmd &` in a script, as CI may run) starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop.on_train_start(trainer, None)
    try:
        deliver(signal.SIGINT, lambda: stop.received is not None)
        assert calls == [] and stop.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: at once
            deliver(signal.SIGINT)
        with pytest.raises(SIGTERMException) as stopped:
            stop.on_train_batch_end(trainer)
        assert calls == [("saved", "interrupted.ckpt")]
        assert stopped.value.code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_ctrl_c_stops_at_the_end_of_the_batch_and_a_second_one_at_once(tmp_path):
    """`ctrl_c_scenario` in a fresh Python process, as train.py runs, so that the signal
    state of the pytest process is not the test's."""
    check = subprocess.run(
        [sys.executable, "-c", f"import test_resume; test_resume.ctrl_c_scenario("
                               f"test_resume.Path({str(tmp_path)!r}))"],
        cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]


def test_sigterm_during_the_test_after_fitting_stops_at_once(tmp_path):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from genlab.callbacks.interruption import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    stop = StopOnSignal(tmp_path, "python train.py resume=x")
    stop.on_test_start(None, None)
    try:
        with pytest.raises(SIGTERMException) as stopped:
            deliver(signal.SIGTERM)
        assert stopped.value.code == 143
    finally:
        stop.on_exception(_Trainer([]), None, stopped.value)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_slurm_signal_writes_the_checkpoint_then_lets_submitit_requeue(tmp_path, monkeypatch):
    """submitit's handler of its pre-timeout signal (which requeues the job and exits) runs only
    once the batch under way has finished and the checkpoint is written; the requeued job then
    starts from the newest checkpoint of its run directory."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from genlab.callbacks.interruption import StopOnSignal

    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(("requeued",)))
    try:
        stop, trainer = StopOnSignal(tmp_path, "python train.py resume=x"), _Trainer(calls)
        stop.on_train_start(trainer, None)
        stop.on_train_batch_end(trainer)
        deliver(signal.SIGUSR2, lambda: stop.received is not None)
        assert calls == []  # noted, nothing done inside the handler
        with pytest.raises(SIGTERMException) as stopped:
            stop.on_train_batch_end(trainer)
        assert calls == [("saved", "interrupted.ckpt"), ("requeued",)]
        assert stopped.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
    assert resume_checkpoint(None, None, tmp_path) is None  # a new run in an old folder
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_checkpoint(None, None, tmp_path) == str(tmp_path / "checkpoints" /
                                                          "interrupted.ckpt")
    assert resume_checkpoint(None, None, tmp_path / "new") is None  # requeued before one


def test_the_training_batches_continue_from_the_batch_a_checkpoint_stopped_at():
    from genlab.data.datamodule import TensorBatches

    images, labels = torch.arange(20).view(20, 1, 1, 1), torch.arange(20)

    def batches(epoch: int) -> TensorBatches:
        return TensorBatches(images, labels, 3, shuffle=True, drop_last=True, seed=7,
                             epoch_fn=lambda: epoch, consumed_fn=lambda: 4)

    order = [x.flatten().tolist() for x, _ in batches(1)]
    stopped = batches(1).state_dict()
    assert stopped == {"epoch": 1, "batches": 4}
    resumed = batches(1)
    resumed.load_state_dict(stopped)
    assert [x.flatten().tolist() for x, _ in resumed] == order[4:]
    assert [x.flatten().tolist() for x, _ in resumed] == order  # the next pass is whole
    later = batches(2)
    later.load_state_dict(stopped)  # a checkpoint of an earlier epoch skips nothing
    assert len(list(later)) == len(order) == 6


def disk_fills_up(monkeypatch, room: int, target: str = "") -> list[str]:
    """From now on, the writes of genlab's atomic writer into a temporary file for `target`
    (any, when empty) fail with ENOSPC once `room` bytes were written, the bytes that fit
    written to disk. Returns the temporary files that filled up."""
    from genlab.files import atomic

    filled = []

    class Filling:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data) -> int:
            data = bytes(data)
            if self.written + len(data) > room:
                self.f.write(data[: room - self.written])
                self.f.flush()
                filled.append(self.f.name)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return Filling(f) if target in Path(path).name else f

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    return filled


def test_a_disk_that_fills_during_a_checkpoint_write_leaves_the_previous_one_whole(
        tmp_path, monkeypatch):
    """Lightning's checkpoint writer in train.py (AtomicCheckpointIO): the write of a new
    last.ckpt fails midway with ENOSPC; the old last.ckpt is byte for byte what it was and
    loads, and no temporary file is left."""
    from genlab.run.checkpoint import AtomicCheckpointIO, load_checkpoint

    path = tmp_path / "checkpoints" / "last.ckpt"
    config = {"model": {"_target_": "genlab.models.vae.VAE"},
              "data": {"_target_": "genlab.data.ImageDataModule"}}
    AtomicCheckpointIO().save_checkpoint({"genlab_config": config, "global_step": 4,
                                          "state_dict": {"w": torch.ones(1000)}}, path)
    before = path.read_bytes()
    filled = disk_fills_up(monkeypatch, room=3000)
    with pytest.raises(RuntimeError) as failed:  # torch.save's, about the failed write
        AtomicCheckpointIO().save_checkpoint({"genlab_config": config, "global_step": 6,
                                              "state_dict": {"w": torch.zeros(10**5)}}, path)
    assert failed.value.__context__.errno == errno.ENOSPC
    assert filled and Path(filled[0]).parent == path.parent  # it failed midway, beside it
    assert path.read_bytes() == before
    assert load_checkpoint(path)["global_step"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_training_on_a_full_disk_ends_in_a_paragraph_naming_the_intact_checkpoint(
        compose, tmp_path, monkeypatch):
    """In train(): the first epoch's checkpoints are written, then the disk fills up, and the
    rewrite of last.ckpt after the second epoch fails midway: a GenlabError says so, names the
    newest intact checkpoint and the command that continues the run; last.ckpt is the first
    epoch's, whole."""
    from genlab.models.vae import VAE
    from genlab.run import train
    from genlab.run.checkpoint import load_checkpoint

    def fill_in_epoch_one(self):
        if self.current_epoch == 1:
            disk_fills_up(monkeypatch, room=1000, target="last.ckpt")

    monkeypatch.setattr(VAE, "on_train_epoch_start", fill_in_epoch_one)
    tiny = [o for o in RESUMABLE if not o.startswith("+trainer.limit_train_batches")]
    cfg = compose([*tiny, "model=vae", "+trainer.limit_train_batches=1",
                   "~callbacks.sample_grid", "~callbacks.reconstruction_grid"])
    with pytest.raises(GenlabError) as failed:
        train(cfg)
    message, last = str(failed.value), tmp_path / "checkpoints" / "last.ckpt"
    assert message.startswith("The disk is full: training stopped because a write failed "
                              "(No space left on device). The newest complete checkpoint")
    assert f"{newest_checkpoint(tmp_path)}, is intact" in message
    assert message.endswith(f"resume={tmp_path}")
    assert load_checkpoint(last)["global_step"] == 1
    # the second epoch's best checkpoint, written before the disk filled, is the newest
    best = tmp_path / "checkpoints" / "best-epoch001.ckpt"
    assert sorted(last.parent.iterdir()) == [best, last] and newest_checkpoint(tmp_path) == best
