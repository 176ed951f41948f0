"""Bad input through the real entry points, as a user meets it: every case runs `train.py`,
`evaluate.py` or `genlab-fid` in a subprocess (from a folder outside the repository) and must
end with exit status 1, no traceback, a one-paragraph message naming the key or path, and
nothing written: no run directory for a mistake found at start-up (the configuration, the
checkpoint, the run directory), only what Hydra makes (`.hydra/`, the log) for a mistake found
in the data, never a checkpoint, and no cache file for data that failed to decode.

New config keys join the table: add a case (name, command, what the message must say).
`python tests/test_bad_input.py` prints the table with each case's first line of message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, inception_weights  # noqa: E402
from helpers.fake_datasets import write_mnist_like  # noqa: E402

pytestmark = pytest.mark.slow
VAE_CKPT = REPO / "tests" / "fixtures" / "checkpoints" / "vae-53273f2.ckpt"
HYDRA_MADE = {".hydra", "train.log", "evaluate.log"}


@dataclass(frozen=True)
class Case:
    name: str
    command: tuple[str, ...]   # train.py / evaluate.py / fid, then arguments; {placeholders}
    says: tuple[str, ...]      # phrases the message must contain
    stage: str = "start"       # start: no run directory at all; data: only what Hydra makes
    cached: bool = False       # the decoded data may be cached (it decoded fine)
    needs: tuple[str, ...] = field(default=())  # placeholders that must be available


CASES = [
    # -- security: a checkpoint must not run code ----------------------------------------------
    Case("malicious checkpoint, evaluate.py", ("evaluate.py", "ckpt_path={evil}"),
         ("ckpt_path={evil} is not a genlab checkpoint, or was made by an untrusted tool",)),
    Case("malicious checkpoint, train.py", ("train.py", "data=digits", "ckpt_path={evil}"),
         ("ckpt_path={evil} is not a genlab checkpoint, or was made by an untrusted tool",)),
    Case("missing checkpoint", ("evaluate.py", "ckpt_path={tmp}/missing.ckpt"),
         ("ckpt_path={tmp}/missing.ckpt does not exist",)),
    Case("corrupt checkpoint", ("evaluate.py", "ckpt_path={corrupt_ckpt}"),
         ("ckpt_path={corrupt_ckpt} cannot be read", "corrupt or truncated")),
    Case("checkpoint of another model", ("train.py", "data=digits", "ckpt_path={gan_ckpt}"),
         ("ckpt_path={gan_ckpt} holds a model with model._target_",)),
    # -- configuration values -------------------------------------------------------------------
    Case("resume of a folder without checkpoints",
         ("train.py", "data=digits", "resume={empty_run}", "hydra.run.dir={empty_run}"),
         ("resume={empty_run} holds no checkpoint",)),
    Case("precision=64", ("train.py", "precision=64"), ("precision=64 is not valid",)),
    Case("data.batch_size=0", ("train.py", "data.batch_size=0"),
         ("data.batch_size=0 is out of range: it must be an integer >= 1",)),
    Case("data.batch_size=-5", ("train.py", "data.batch_size=-5"),
         ("data.batch_size=-5 is out of range",)),
    Case("model.channels=[]", ("train.py", "model.channels=[]"),
         ("model.channels=[] is not valid: it must be a non-empty list",)),
    Case("trainer.max_epochs=abc", ("train.py", "trainer.max_epochs=abc"),
         ("trainer.max_epochs='abc' is not valid: it must be an integer >= -1",)),
    Case("trainer.max_epochs=abc debug=fast", ("train.py", "debug=fast", "trainer.max_epochs=abc"),
         ("trainer.max_epochs='abc' is not valid",)),
    Case("trainer.max_time=1h", ("train.py", "trainer.max_time=1h"),
         ("trainer.max_time='1h' is not valid: it must be DD:HH:MM:SS",)),
    Case("model.latent_dim=0", ("train.py", "model.latent_dim=0"),
         ("model.latent_dim=0 is out of range: it must be an integer >= 1",)),
    Case("model=ddpm model.timesteps=0", ("train.py", "model=ddpm", "model.timesteps=0"),
         ("model.timesteps=0 is out of range: it must be an integer >= 2",)),
    Case("model=gan model.n_critic=0", ("train.py", "model=gan", "model.n_critic=0"),
         ("model.n_critic=0 is out of range",)),
    Case("data.name=imagenet", ("train.py", "data.name=imagenet"),
         ("data.name='imagenet' is not valid: it must be one of mnist",)),
    Case("unknown model key", ("train.py", "+model.latent_size=3"),
         ("model.latent_size is not a key of model",)),
    Case("unknown trainer key", ("train.py", "+trainer.max_epoch=3"),
         ("trainer.max_epoch is not a key of trainer",)),
    Case("VAE on dequantized data", ("train.py", "data.dequantize=true"),
         ("data.dequantize=true does not suit VAE",)),
    Case("bernoulli on 8-bit data", ("train.py", "model.likelihood=bernoulli"),
         ("model.likelihood=bernoulli needs binary pixels", "data.binarize")),
    Case("data.path unset", ("train.py", "data=image_folder"), ("data.path must be set",)),
    Case("unknown model option", ("train.py", "model=transformer"),
         ("Could not find 'model/transformer'", "Available options in 'model'")),
    # -- evaluate.py's overrides ---------------------------------------------------------------
    Case("+model.latent_dim on a VAE checkpoint", ("evaluate.py", f"ckpt_path={VAE_CKPT}",
                                                   "+model.latent_dim=999"),
         ("+model.latent_dim is not accepted by evaluate.py",
          "accepts for this checkpoint are: bound_images, importance_batch, "
          "test_importance_samples")),
    Case("+model.sampler on a VAE checkpoint", ("evaluate.py", f"ckpt_path={VAE_CKPT}",
                                                "+model.sampler=ddim"),
         ("+model.sampler is not accepted by evaluate.py", "has no such key")),
    Case("+data.image_size on a checkpoint", ("evaluate.py", f"ckpt_path={VAE_CKPT}",
                                              "+data.image_size=64"),
         ("+data.image_size is not accepted", "eval_batch_size")),
    Case("fid.num_samples=5", ("evaluate.py", f"ckpt_path={VAE_CKPT}", "fid.num_samples=5"),
         ("fid.num_samples=5 is out of range: it must be an integer >= 10",)),
    Case("split=train", ("evaluate.py", f"ckpt_path={VAE_CKPT}", "split=train"),
         ("split='train' is not valid: it must be one of test, val",)),
    # -- the run directory ---------------------------------------------------------------------
    Case("read-only run directory", ("train.py", "hydra.run.dir={readonly}/run"),
         ("hydra.run.dir={readonly}/run cannot be created", "not writable"),
         needs=("readonly",)),
    # -- data -----------------------------------------------------------------------------------
    Case("image folder that does not exist", ("train.py", "data=image_folder",
                                              "data.path={tmp}/nowhere"),
         ("data.path={tmp}/nowhere does not exist",)),
    Case("garbage .zip as data.path", ("train.py", "data=image_folder", "data.path={garbage}"),
         ("Cannot read the archive {garbage}",), stage="data"),
    Case("60 images, default hold-outs and batch", ("train.py", "data=image_folder",
                                                    "data.path={imgs60}"),
         ("data.batch_size=128 is more than the 48 training images", "data.path={imgs60}",
          "Set data.batch_size=48 or lower"), stage="data", cached=True),
    Case("60 images, data.val_size=100", ("train.py", "data=image_folder", "data.path={imgs60}",
                                          "data.val_size=100"),
         ("has 60 training images: too few for hold-outs of data.val_size=100 and "
          "data.test_size=6", "e.g. data.val_size=6 data.test_size=6"), stage="data", cached=True),
    Case("40 images, small hold-outs", ("train.py", "data=image_folder", "data.path={imgs40}",
                                        "data.val_size=4", "data.test_size=4"),
         ("data.batch_size=128 is more than the 32 training images",), stage="data",
         cached=True),
    Case("missing dataset files, no download", ("train.py", "data=svhn", "data.download=false",
                                                 "paths.data_dir={tmp}/no_data"),
         ("{tmp}/no_data/svhn", "train_32x32.mat"), stage="data"),
    Case("corrupt canonical file, data.verify=false",
         ("train.py", "data.root={corrupt_root}", "data.verify=false", "data.download=false"),
         ("Cannot decode mnist from {corrupt_root}", "data.verify=false"), stage="data"),
    Case("genlab-fid: 32x32 against 48x48", ("fid", "{imgs60}", "{imgs48}", "--weights",
                                             "{weights}"),
         ("{imgs60} holds 32x32 images and {imgs48} 48x48 ones",), needs=("weights",)),
]


def writable_only_by_nobody(tmp: Path) -> str | None:
    """A folder this process cannot write to: a read-only one made here (not as root), or a
    read-only system folder (as root, which ignores permissions)."""
    if os.geteuid() != 0:
        folder = tmp / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)
    for candidate in ("/proc/sys", "/sys"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return candidate
    return None


def make_inputs(tmp: Path) -> dict[str, str | None]:
    from PIL import Image

    from genlab.callbacks.config import CONFIG_KEY

    rng = np.random.default_rng(0)
    for n, size, name in ((60, 32, "imgs60"), (40, 32, "imgs40"), (10, 48, "imgs48")):
        folder = tmp / name
        folder.mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                folder / f"{i}.png")
    (tmp / "garbage.zip").write_bytes(b"this is not a zip archive")
    (tmp / "corrupt.ckpt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    root = tmp / "corrupt_root"
    write_mnist_like(root, "MNIST")
    gz = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[-6] ^= 0xFF
    gz.write_bytes(bytes(data))
    from test_validate import write_malicious_checkpoint

    write_malicious_checkpoint(tmp / "evil.ckpt", tmp / "written-by-the-checkpoint")
    (tmp / "empty_run" / "checkpoints").mkdir(parents=True)
    assert CONFIG_KEY == "genlab_config"
    return {"tmp": str(tmp), "evil": str(tmp / "evil.ckpt"), "garbage": str(tmp / "garbage.zip"),
            "corrupt_ckpt": str(tmp / "corrupt.ckpt"), "corrupt_root": str(root),
            "empty_run": str(tmp / "empty_run"),
            "imgs60": str(tmp / "imgs60"), "imgs40": str(tmp / "imgs40"),
            "imgs48": str(tmp / "imgs48"),
            "gan_ckpt": str(REPO / "tests" / "fixtures" / "checkpoints" / "gan-53273f2.ckpt"),
            "weights": str(inception_weights()) if inception_weights() else None,
            "readonly": writable_only_by_nobody(tmp)}


def run_case(case: Case, inputs: dict, tmp: Path) -> dict:
    slug = "".join(c if c.isalnum() else "_" for c in case.name)
    run_dir, cache = tmp / "runs" / slug, tmp / "cache" / slug
    args = [a.format(**inputs) for a in case.command]
    if args[0] == "fid":
        command = [sys.executable, "-m", "genlab.metrics", *args[1:], "--cache-dir", str(cache)]
    else:
        command = [sys.executable, str(REPO / args[0]), *args[1:], "logger=none"]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            command.append(f"hydra.run.dir={run_dir}")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "GENLAB_CACHE_DIR": str(cache), "GENLAB_DATA_DIR": str(tmp / "data")}
    work = tmp / "elsewhere"  # not the repository: paths must not depend on the folder
    work.mkdir(exist_ok=True)
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    lines = [line for line in result.stderr.splitlines() if line.startswith("genlab: ")]
    other = [line for line in result.stderr.splitlines() if line.strip()]
    first = lines[0][len("genlab: "):] if lines else (other[0] if other else "")
    return {"result": result, "run_dir": run_dir, "cache": cache, "first_line": first}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    inputs = make_inputs(tmp)
    runnable = [c for c in CASES if all(inputs.get(n) for n in c.needs)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip([c.name for c in runnable],
                        pool.map(lambda c: run_case(c, inputs, tmp), runnable)))
    return inputs, done, tmp


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_one_paragraph_and_writes_nothing(case, outcomes):
    inputs, done, tmp = outcomes
    if case.name not in done:
        pytest.skip(f"needs {', '.join(n for n in case.needs if not inputs.get(n))}, which this "
                    "machine lacks")
    outcome = done[case.name]
    result = outcome["result"]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for phrase in case.says:
        assert phrase.format(**inputs) in result.stderr, result.stderr[-3000:]
    run_dir = outcome["run_dir"]
    if case.stage == "start":
        assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
        assert "Decoding" not in output
    elif run_dir.exists():
        assert {p.name for p in run_dir.iterdir()} <= HYDRA_MADE
    decoded = list(outcome["cache"].rglob("*.pt")) if outcome["cache"].exists() else []
    assert case.cached or not decoded, decoded
    assert not (tmp / "written-by-the-checkpoint").exists()


if __name__ == "__main__":  # the table of the README / the closing note
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        inputs = make_inputs(tmp)
        print("| case | exit status | first line of the message |\n| --- | --- | --- |")
        for case in CASES:
            if all(inputs.get(n) for n in case.needs):
                outcome = run_case(case, inputs, tmp)
                line = str(outcome["first_line"]).replace(str(tmp), "<tmp>")
                print(f"| {case.name} | {outcome['result'].returncode} | {line} |")
