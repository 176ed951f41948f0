"""Throughput of the DDPM paper UNet (35.7M parameters, Ho et al. 2020) on this machine.

    python benchmarks/diffusion_throughput.py                          # GPU if there is one
    python benchmarks/diffusion_throughput.py --precision bf16 --compile
    python benchmarks/diffusion_throughput.py --device cpu --batch 16  # a quick CPU look

Prints one table:
- training images/s: forward, backward and Adam step of the eps-prediction loss;
- sampling images/s for DDIM-50 and DDPM-1000: a few reverse steps of each sampler are timed
  and the per-step cost is extrapolated to the full number of steps (each step is one network
  evaluation, so the cost per step is the same at every t);
- FLOPs of one training step (counted by torch.utils.flop_counter.FlopCounterMode: matmuls,
  convolutions and attention, forward and backward), the FLOP/s a training step reaches, and
  that as a share of this machine's dense matmul FLOP/s in the same dtype, measured here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import nullcontext

import torch
from timing import DTYPES, matmul_peak, print_table, timed
from torch.utils.flop_counter import FlopCounterMode

from genlab.maths.diffusion import GaussianDiffusion
from genlab.nets.unet import UNet


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=list(DTYPES), default="32",
                   help="32, bf16 (bf16 autocast) or 16 (fp16 autocast with loss scaling)")
    p.add_argument("--batch", type=int, default=128, help="training and sampling batch")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="timed iterations of each measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations before timing")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    device, dtype = args.device, DTYPES[args.precision]
    torch.backends.cudnn.benchmark = True
    net = UNet(3, 32, channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
               attention_resolutions=(16,), dropout=0.1).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    model = torch.compile(net) if args.compile else net
    diffusion = GaussianDiffusion(1000).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, foreach=True)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=args.precision == "16")
    autocast = (torch.autocast(device.split(":")[0], dtype=dtype) if args.precision != "32"
                else nullcontext())
    b = args.batch
    x0 = (torch.rand(b, 3, 32, 32, device=device) * 2 - 1).to(memory_format=memory_format)

    def train_step() -> None:
        t = torch.randint(0, 1000, (b,), device=device)
        with autocast:
            loss = diffusion.training_loss(model, x0, None, t, torch.randn_like(x0)).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()

    def sampler_step(sampler: str) -> Callable[[], object]:
        x = torch.randn_like(x0)

        @torch.inference_mode()
        def step():
            with autocast:
                if sampler == "ddpm":
                    return diffusion.ddpm_step(model, x, 500, None)
                return diffusion.ddim_step(model, x, 500, 480, None)
        return step

    net.train()
    with FlopCounterMode(display=False) as counter:
        train_step()
    train_flops = counter.get_total_flops()
    train_s = timed(train_step, device, args.steps, args.warmup)
    net.eval()
    ddim_s = timed(sampler_step("ddim"), device, args.steps, args.warmup)
    ddpm_s = timed(sampler_step("ddpm"), device, args.steps, args.warmup)
    peak = matmul_peak(device, dtype, args.steps)

    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    params = sum(p.numel() for p in net.parameters())
    print(f"DDPM UNet ({params / 1e6:.1f}M parameters), batch {b}, {name}, precision "
          f"{args.precision}, compile={args.compile}, channels_last={args.channels_last}, "
          f"{torch.get_num_threads()} CPU threads")
    rows = [
        ("training (fwd + bwd + Adam)", f"{b / train_s:,.1f} images/s",
         f"{train_s * 1e3:.1f} ms/step"),
        ("sampling DDIM-50", f"{b / (50 * ddim_s):,.2f} images/s",
         f"{ddim_s * 1e3:.1f} ms/step x 50 (extrapolated from {args.steps} steps)"),
        ("sampling DDPM-1000", f"{b / (1000 * ddpm_s):,.3f} images/s",
         f"{ddpm_s * 1e3:.1f} ms/step x 1000 (extrapolated from {args.steps} steps)"),
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
