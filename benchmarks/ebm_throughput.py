"""Throughput of energy-based models (`genlab.models.ebm`): training steps and Langevin sampling.

    python benchmarks/ebm_throughput.py                        # the CPU default model=ebm
    python benchmarks/ebm_throughput.py --device cuda --recipe jem_cifar10 --precision bf16
    python benchmarks/ebm_throughput.py --threads 1 --batch 64 --train-steps 20

A training step is train_steps Langevin steps (a forward and an input-gradient backward each)
plus one forward and backward of the loss on data and samples, so its cost grows linearly with
train_steps. Prints one table: milliseconds per Langevin step (batch `--batch`), training steps
per second and training images per second, and sampling images per second for model.sample with
`--sample-steps` steps from noise.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial

import torch

from genlab.models.ebm import EBM, JEM

RECIPES = {  # (class, image shape, network) of the configs the numbers are for
    "ebm": (EBM, (1, 32, 32), dict(channels=(16, 32, 64, 128), blocks=1)),
    "jem_mnist_like": (JEM, (1, 32, 32), dict(channels=(16, 32, 64, 128), blocks=1)),
    "igebm_cifar10": (EBM, (3, 32, 32), dict(channels=(128, 256, 512), blocks=3,
                                              spectral_norm=True)),
    "jem_cifar10": (JEM, (3, 32, 32), dict(channels=(160, 320, 640), blocks=4)),
}
DTYPES = {"32": None, "bf16": torch.bfloat16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--recipe", choices=list(RECIPES), default="ebm",
                   help="which network: the default model=ebm, or a recipe's")
    p.add_argument("--batch", type=int, default=64, help="training batch (data and samples)")
    p.add_argument("--train-steps", type=int, default=20, help="Langevin steps per training step")
    p.add_argument("--sample-steps", type=int, default=60, help="Langevin steps of a sample")
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--precision", choices=list(DTYPES), default="32",
                   help="32, or bf16 autocast of the network")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions of each measure")
    return p.parse_args()


def timed(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds per call of fn, after one untimed call."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cls, shape, net = RECIPES[args.recipe]
    options = dict(num_classes=10) if cls is JEM else {}
    model = cls(shape, train_steps=args.train_steps, sample_steps=args.sample_steps,
                buffer_size=1000, optimizer=partial(torch.optim.Adam, lr=1e-4), **net,
                **options).to(args.device)
    optimizer = model.make_optimizer(model.parameters())
    dtype = DTYPES[args.precision]
    autocast = (partial(torch.autocast, args.device.split(":")[0], dtype=dtype) if dtype
                else nullcontext)
    x = torch.rand(args.batch, *shape, device=args.device) * 2 - 1
    labels = torch.randint(0, 10, (args.batch,), device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(0)

    def langevin_step():
        with autocast():
            model.chains(x, None, 1, generator)

    def training_step():
        with autocast():
            loss = model.training_step((x, labels), 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sampling():
        with autocast():
            model.sample(args.sample_batch, generator=generator)

    model.log = model.log_dict = lambda *a, **k: None  # no trainer attached
    step = timed(langevin_step, args.device, args.repeats)
    train = timed(training_step, args.device, args.repeats)
    sample = timed(sampling, args.device, args.repeats)
    params = sum(p.numel() for p in model.net.parameters())
    print(f"recipe {args.recipe} ({params / 1e6:.2f}M parameters), device {args.device}, "
          f"precision {args.precision}, threads {torch.get_num_threads()}")
    print("| measure | setting | value |")
    print("| --- | --- | ---: |")
    print(f"| Langevin step | batch {args.batch} | {step * 1000:.1f} ms |")
    print(f"| training step | batch {args.batch}, {args.train_steps} Langevin steps | "
          f"{1 / train:.2f} steps/s ({args.batch / train:.0f} images/s) |")
    print(f"| sampling | {args.sample_batch} chains of {args.sample_steps} steps | "
          f"{args.sample_batch / sample:.1f} images/s |")


if __name__ == "__main__":
    main()
