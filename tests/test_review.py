"""Reviewing runs: the run record (run.json), the loggers' summaries (W&B, TensorBoard),
evaluate.py logging into the training run's W&B run, and genlab-review's table and report, on
runs made by real tiny trainings (a VAE sweep, a GAN, a diverged run, an evaluation)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from helpers.runs import SMALL_RUN, fake_data_overrides
from PIL import Image

from genlab.errors import GenlabError
from genlab.review.cli import main as review
from genlab.run import train
from genlab.run.layout import RunLayout
from genlab.run.loggers import build_loggers

TINY = ["data=digits", "trainer=cpu", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", "data.batch_size=8", "data.eval_batch_size=8",
        "data.val_size=16", "callbacks.sample_grid.n=4", "callbacks.reconstruction_grid.n=4",
        "~callbacks.progress_bar", "~callbacks.model_summary", "test=false"]


def run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """outputs/ with a two-job VAE sweep over beta, a GAN run, a diverged VAE run and an
    evaluation of the first sweep job, made by train.py and evaluate.py as a user runs them."""
    out = tmp_path_factory.mktemp("outputs")
    sweep = out / "train" / "multiruns" / "sweep"
    commands = [
        ("train.py", "-m", "model=vae", "model.beta=0.5,2", *TINY, f"hydra.sweep.dir={sweep}"),
        ("train.py", "model=gan", *TINY, f"hydra.run.dir={out / 'train' / 'runs' / 'gan'}"),
        ("evaluate.py", f"ckpt_path={sweep / '0' / 'checkpoints' / 'last.ckpt'}", "trainer=cpu",
         "fid.enabled=false", "tasks=[reconstruct]", "sample_grid=4", "wandb_table=2",
         "+model.test_importance_samples=4", "+trainer.limit_test_batches=1",
         f"hydra.run.dir={out / 'evaluate' / 'runs' / 'vae'}")]
    for script, *overrides in commands:
        result = run(script, *overrides)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    diverged = run("train.py", "model=vae", "model.optimizer.lr=1e30", "logger=csv", *TINY,
                   f"hydra.run.dir={out / 'train' / 'runs' / 'diverged'}")
    assert diverged.returncode == 1 and "became nan" in diverged.stderr, diverged.stderr[-3000:]
    return out


def html_of(outputs: Path, tmp_path: Path, *args: str) -> tuple[str, Path]:
    report = tmp_path / "report.html"
    assert review([str(outputs), "-o", str(report), *args]) == 0
    return report.read_text(), report


@pytest.mark.slow
def test_runs_keep_a_record_and_evaluate_logs_into_the_training_runs_wandb_run(outputs):
    job = RunLayout(outputs / "train" / "multiruns" / "sweep" / "0")
    record = json.loads(job.record.read_text())
    assert record["status"] == "finished" and record["epochs"] == 2 and record["steps"] == 4
    assert record["parameters"] > 1000 and record["wall_s"] > 0 and record["monitor"] == "val/bpd"
    assert record["best"]["val/bpd"] == min(record["best"]["val/bpd"], record["last"]["val/bpd"])
    assert job.csv_metrics() and set(job.epoch_grids("samples")) == {0, 1}
    run_id = record["wandb"]["id"]
    assert list(job.wandb.glob(f"offline-run-*-{run_id}"))
    evaluation = RunLayout(outputs / "evaluate" / "runs" / "vae")
    assert list(evaluation.wandb.glob(f"offline-run-*-{run_id}"))  # the same W&B run, resumed
    assert list(evaluation.wandb.glob("offline-run-*/files/media/table/evaluate/images_*.json"))
    diverged = json.loads(RunLayout(outputs / "train" / "runs" / "diverged").record.read_text())
    assert diverged["status"] == "failed" and "became nan" in diverged["error"]


@pytest.mark.slow
def test_the_report_lists_every_run_metric_and_evaluation(outputs, tmp_path, capsys):
    page, report = html_of(outputs, tmp_path)
    table = capsys.readouterr().out
    for label in ("sweep/0", "sweep/1", "gan", "diverged"):
        assert f">{label}<" in page and label in table
    curves = set()
    for csv_file in outputs.glob("train/**/csv/version_*/metrics.csv"):
        curves |= set(csv_file.read_text().splitlines()[0].split(",")) - {"epoch", "step"}
    assert {"val/bpd", "train/d_loss", "train/g_loss", "val/d_loss"} <= curves
    for metric in curves - {m for m in curves if m.startswith("test/")}:
        title = metric.replace("/", "\\u002f")  # as plotly writes it in the page
        assert f'"text":"{title}"' in page, metric  # one chart per metric
    for column in ("best/val/bpd", "last/val/bpd", "last/val/d_loss", "eval/test/bpd",
                   "eval/task/reconstruct/psnr", "model.beta", "logger", "parameters"):
        assert f">{column}<" in page, column
    evaluation = json.loads((outputs / "evaluate" / "runs" / "vae" / "metrics.json").read_text())
    assert f"{evaluation['task/reconstruct/psnr']:.4g}" in page
    # the sweep: beta against the metric, the best job's command line
    assert "swept: model.beta" in page and "python train.py model=vae model.beta=" in page
    assert "became nan" in page and "diverged" in table  # failed runs, with their log's end
    assert "[wandb,csv]" in page and "[wandb,csv]" in table  # a list-composed group, as typed
    assert page.count("data:image/png;base64,") >= 2 * 2 + 3  # grids per epoch, eval grids
    assert page.count("* plotly.js v") == 1  # plotly.js inlined once
    body = page[page.index("<body>"):]  # (plotly.js itself names URLs it never loads here)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", body)  # nothing from a server
    assert report.stat().st_size < 20e6


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(outputs, tmp_path):
    if chromium() is None:
        pytest.skip("Debian's chromium package is not installed (apt-get install -y chromium; "
                    ".ci/run installs it)")
    _, report = html_of(outputs, tmp_path)
    png = tmp_path / "report.png"
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                    "--window-size=1400,2000", "--virtual-time-budget=10000",
                    report.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (2000, 1400, 3)
    assert (image.min(axis=2) < 200).mean() > 0.02  # text, tables, axes: not a blank page
    run_blue = np.all(np.abs(image.astype(int) - (0x1F, 0x77, 0xB4)) < 8, axis=2)
    assert run_blue.sum() > 200  # the first run's curves were drawn by plotly


@pytest.mark.slow
def test_the_metric_option_sorts_and_unknown_metrics_are_explained(outputs, tmp_path, capsys):
    page, _ = html_of(outputs, tmp_path, "--metric", "last/val/d_loss")
    assert re.search(r"sorted by\s+<code>last/val/d_loss</code>", page)
    assert "<tbody><tr><td data-value='gan'" in page  # the only run with the metric, first
    assert review([str(outputs), "--metric", "val/fid", "--no-html"]) == 1
    assert "--metric val/fid is not a column" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_with_grids_of_epoch_0_only_shows_them(outputs, tmp_path):
    gan = tmp_path / "gan"
    shutil.copytree(outputs / "train" / "runs" / "gan", gan)
    for grid in (gan / "samples").glob("*_epoch0001.png"):
        grid.unlink()
    page, _ = html_of(gan, tmp_path)
    assert "<img data-key='samples' data-run='0'" in page


def test_bad_paths_and_damaged_runs_get_one_paragraph(tmp_path, capsys):
    assert review([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert review([str(tmp_path)]) == 1
    assert "No runs under" in capsys.readouterr().err
    damaged = tmp_path / "run"
    (damaged / ".hydra").mkdir(parents=True)
    (damaged / ".hydra" / "config.yaml").write_text("task_name: train\n")
    (damaged / "run.json").write_text('{"status": "fini')
    assert review([str(tmp_path), "--no-html"]) == 1
    err = capsys.readouterr().err
    assert "run.json cannot be read" in err and "Traceback" not in err


def test_best_and_last_come_from_the_csv_log_without_a_record(tmp_path):
    """Runs written before run records existed: the best epoch by the monitor, from the CSV."""
    from genlab.review.runs import load_runs

    run_dir = tmp_path / "old"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        "task_name: train\nmodel: {monitor: val/bpd, monitor_mode: min}\n"
        "callbacks: {model_checkpoint: {monitor: '${model.monitor}', mode: max}}\n")
    csv_dir = run_dir / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    (csv_dir / "metrics.csv").write_text("epoch,step,train/loss,val/bpd\n0,5,3.0,\n0,9,,2.0\n"
                                         "1,19,,1.5\n2,29,,1.7\n")
    ((run,), _) = load_runs([tmp_path])
    best, last = run.best_and_last()
    assert run.monitor == ("val/bpd", "max")  # the checkpoint's mode, interpolation resolved
    assert best["val/bpd"] == 2.0 and best["epoch"] == 0 and last["val/bpd"] == 1.7
    assert run.curves()["val/bpd"] == ([9.0, 19.0, 29.0], [2.0, 1.5, 1.7])
    assert run.status == "failed"  # no record and no checkpoint: it never trained


def test_tensorboard_gets_scalars_grids_and_hparams_with_the_final_metrics(compose, fake_root,
                                                                          tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    overrides = [o for o in SMALL_RUN if o != "logger=none"]
    train(compose(["model=vae", "data=mnist", *overrides, "logger=[tensorboard,csv]",
                   *fake_data_overrides("mnist", fake_root)]))
    (events,) = RunLayout(tmp_path).tensorboard.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert {"samples", "reconstructions"} <= set(accumulator.Tags()["images"])
    assert {"val/bpd", "best/val/bpd", "last/val/bpd"} <= set(
        accumulator.Tags()["scalars"])
    content = accumulator.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"best/val/bpd", "last/val/bpd", "parameters", "wall_s"} <= metrics
    session = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["model/beta"].number_value == 1.0


def test_the_wandb_summary_carries_best_and_last_metrics(compose, fake_root, tmp_path,
                                                         monkeypatch):
    import wandb

    train_module = sys.modules["genlab.run.train"]  # genlab.run.train is the function
    summary = {}
    close = train_module.close_wandb

    def read_summary_then_close(failed: bool) -> None:
        summary.update({k: wandb.run.summary[k] for k in wandb.run.summary.keys()})
        close(failed)

    monkeypatch.setattr(train_module, "close_wandb", read_summary_then_close)
    overrides = [o for o in SMALL_RUN if o != "logger=none"]
    train(compose(["model=vae", "data=mnist", *overrides, *fake_data_overrides("mnist",
                                                                                fake_root)]))
    record = json.loads(RunLayout(tmp_path).record.read_text())
    assert summary["best/val/bpd"] == record["best"]["val/bpd"]
    assert summary["last/val/bpd"] == record["last"]["val/bpd"]
    assert summary["parameters"] == record["parameters"] > 0
    assert record["wandb"]["id"] and record["wandb"]["offline"]


def test_checkpoint_artifacts_need_an_online_wandb_run(compose):
    with pytest.raises(GenlabError, match="log_model=true .* needs an online run"):
        build_loggers(compose(["logger.wandb.log_model=true"]))
