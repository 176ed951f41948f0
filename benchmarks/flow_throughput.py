"""Throughput of the Glow CIFAR-10 network (K=32 steps, L=3 levels, width 512, affine coupling,
LU 1x1 convolutions, learned prior; Kingma & Dhariwal 2018) on this machine.

    python benchmarks/flow_throughput.py                          # GPU if there is one
    python benchmarks/flow_throughput.py --precision bf16
    python benchmarks/flow_throughput.py --device cpu --batch 16  # a quick CPU look
    python benchmarks/flow_throughput.py --device cpu --steps-per-level 4 --width 96 --channels 1
                                                                  # the CPU MNIST recipe's network

Prints one table:
- training images/s: the dequantized negative log-likelihood (`Flow.nll`), backward, gradient
  clipping and an Adamax step, as in training;
- encoding (the forward pass without gradients) and sampling (the inverse) images/s;
- FLOPs of one training step (torch.utils.flop_counter.FlopCounterMode: convolutions and
  matmuls, forward and backward), the FLOP/s it reaches, and that as a share of this machine's
  dense matmul FLOP/s in the same dtype, measured here.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import torch
from timing import DTYPES, matmul_peak, print_table, timed
from torch.utils.flop_counter import FlopCounterMode

from genlab.models.flow import Flow


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=list(DTYPES), default="32",
                   help="32, bf16 (bf16 autocast) or 16 (fp16 autocast with loss scaling)")
    p.add_argument("--batch", type=int, default=64, help="training, encoding and sampling batch")
    p.add_argument("--levels", type=int, default=3, help="L")
    p.add_argument("--steps-per-level", type=int, default=32, help="K")
    p.add_argument("--width", type=int, default=512, help="channels of the coupling networks")
    p.add_argument("--channels", type=int, default=3, help="image channels (32x32 images)")
    p.add_argument("--steps", type=int, default=10, help="timed iterations of each measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations before timing")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device, dtype = args.device, DTYPES[args.precision]
    torch.backends.cudnn.benchmark = True
    model = Flow((args.channels, 32, 32), levels=args.levels, steps=args.steps_per_level,
                 width=args.width).to(device)
    # lr of the recipe's warm-up start: the speed does not depend on it, and the full 1e-3
    # from the first step sends this network (on noise images) to inf at the second step
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-7, foreach=True)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=args.precision == "16")
    autocast = (torch.autocast(device.split(":")[0], dtype=dtype) if args.precision != "32"
                else nullcontext())
    b = args.batch
    x = torch.rand(b, args.channels, 32, 32, device=device) * 2 - 1

    def train_step() -> None:
        with autocast:
            loss = model.nll(x).mean() / model.num_dims
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        scaler.step(optimizer)
        scaler.update()

    @torch.inference_mode()
    def encode() -> None:
        with autocast:
            model.encode(x)

    z = torch.randn(b, model.num_dims, device=device)

    @torch.inference_mode()
    def sample() -> None:
        with autocast:
            model.decode(z)

    model.train()
    train_step()  # ActNorm's data-dependent initialisation happens here, outside the count
    with FlopCounterMode(display=False) as counter:
        train_step()
    train_flops = counter.get_total_flops()
    train_s = timed(train_step, device, args.steps, args.warmup)
    model.eval()
    encode_s = timed(encode, device, args.steps, args.warmup)
    sample_s = timed(sample, device, args.steps, args.warmup)
    peak = matmul_peak(device, dtype, args.steps)

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    params = sum(p.numel() for p in model.parameters())
    print(f"Glow (L={args.levels}, K={args.steps_per_level}, width {args.width}, "
          f"{args.channels}x32x32, {params / 1e6:.1f}M parameters), batch {b}, {name}, "
          f"precision {args.precision}, {torch.get_num_threads()} CPU threads")
    rows = [
        ("training (nll + bwd + clip + Adamax)", f"{b / train_s:,.1f} images/s",
         f"{train_s * 1e3:.1f} ms/step"),
        ("encoding (forward, no grad)", f"{b / encode_s:,.1f} images/s",
         f"{encode_s * 1e3:.1f} ms/batch"),
        ("sampling (inverse)", f"{b / sample_s:,.1f} images/s", f"{sample_s * 1e3:.1f} ms/batch"),
        ("training step FLOPs", f"{train_flops / 1e12:.3f} TFLOP",
         f"{train_flops / b / 1e9:.2f} GFLOP per image (FlopCounterMode)"),
        ("training FLOP/s", f"{train_flops / train_s / 1e12:.2f} TFLOP/s", ""),
        (f"matmul peak ({dtype})".replace("torch.", ""), f"{peak / 1e12:.2f} TFLOP/s",
         "measured: best square matmul"),
        ("training share of matmul peak", f"{train_flops / train_s / peak:.1%}", ""),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
