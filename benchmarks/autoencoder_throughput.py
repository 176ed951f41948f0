"""Training throughput of the autoencoders (model=ae, dae, cae) and the cost of the contractive
penalty: exact Jacobian (torch.func, one backward pass per code dimension) against the
random-projection estimate (one extra backward pass), and of walk-back sampling.

    python benchmarks/autoencoder_throughput.py                       # GPU if there is one
    python benchmarks/autoencoder_throughput.py --device cpu --batch 128 --channels 16 32 64
    python benchmarks/autoencoder_throughput.py --code-dims 10 32 --image-channels 3

Prints one table: training images/s (forward, backward and Adam step of the model's
training_step) for each variant and code size, and walk-back chain sampling images/s (one
chain step = one corruption, one encoder and decoder pass and one draw).
"""

from __future__ import annotations

import argparse

import torch
from timing import timed

from genlab.models.autoencoder import Autoencoder

VARIANTS = {
    "ae": {},
    "dae (gaussian)": {"corruption": "gaussian", "corruption_level": 0.5},
    "dae walkback 3": {"corruption": "gaussian", "corruption_level": 0.5, "walkback_steps": 3},
    "cae estimate": {"contraction": 1.0, "jacobian": "estimate"},
    "cae exact": {"contraction": 1.0, "jacobian": "exact"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128, help="training and sampling batch")
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128],
                   help="encoder widths per level (model.channels)")
    p.add_argument("--code-dims", type=int, nargs="+", default=[10, 32])
    p.add_argument("--image-channels", type=int, default=1, help="1 (MNIST) or 3 (CIFAR-10)")
    p.add_argument("--steps", type=int, default=5, help="timed iterations of each measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations before timing")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device = args.device
    shape = (args.image_channels, 32, 32)
    x = torch.rand(args.batch, *shape, device=device) * 2 - 1
    labels = torch.full((args.batch,), -1, device=device)
    print(f"device {device}, batch {args.batch}, channels {args.channels}, images {shape}, "
          f"threads {torch.get_num_threads()}")
    print("| variant | code_dim | train images/s | relative to ae |")
    print("| --- | ---: | ---: | ---: |")
    for code_dim in args.code_dims:
        base = None
        for name, options in VARIANTS.items():
            model = Autoencoder(shape, code_dim=code_dim, channels=tuple(args.channels),
                                **options).to(device).train()
            model.log = model.log_dict = lambda *a, **k: None
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

            def step(model=model, optimizer=optimizer):
                loss = model.training_step((x, labels), 0)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            rate = args.batch / timed(step, device, args.steps, args.warmup)
            base = base or rate
            print(f"| {name} | {code_dim} | {rate:.0f} | {rate / base:.2f} |", flush=True)
    model = Autoencoder(shape, code_dim=args.code_dims[0], channels=tuple(args.channels),
                        corruption="gaussian", corruption_level=0.5).to(device).eval()
    seconds = timed(lambda: model.walkback_sample(args.batch, steps=10), device, args.steps,
                    args.warmup) / 10
    print(f"\nwalk-back sampling: {args.batch / seconds:.0f} chain steps x images/s, so "
          f"{args.batch / seconds / model.chain_steps:.1f} images/s at chain_steps="
          f"{model.chain_steps}")


if __name__ == "__main__":
    main()
