"""Sampling speed of a PixelCNN: the naive sampler (the whole network for every sub-pixel)
against the cached one (Ramachandran et al. 2017: only what the new pixel changes).

    python benchmarks/pixelcnn_sampling.py                      # Gated PixelCNN, batches 16, 64
    python benchmarks/pixelcnn_sampling.py --architecture pixelcnn --batch 16
    python benchmarks/pixelcnn_sampling.py --image-channels 3 --head softmax --channels 48
    python benchmarks/pixelcnn_sampling.py --architecture pixelcnn_pp --image-channels 3 \
        --head logistic_mixture --channels 16

Prints one table of images/s per sampler and batch, and the ratio. The cached sampler draws
whole images (model.sample); the naive one costs the same at every pixel (one full network
pass per sub-pixel, or per pixel for the whole-pixel logistic mixture, plus the head), so it
is timed on the last `--naive-pixels` pixels of a completion and extrapolated to all H*W.
`--check` also draws 2 whole images with each sampler from the same generator and says whether
they are identical. The model has random weights (speed does not depend on training). The
cached sampler runs on one CPU thread (`genlab.models.pixelcnn`); `--threads` sets torch's
threads for the naive one.
"""

from __future__ import annotations

import argparse
import time

import torch

from genlab.models.pixelcnn import PixelCNN


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    p.add_argument("--architecture", default="gated", choices=["gated", "pixelcnn", "pixelcnn_pp"])
    p.add_argument("--head", default="bernoulli", choices=["softmax", "bernoulli",
                                                           "logistic_mixture"])
    p.add_argument("--image-channels", type=int, default=1)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--channels", type=int, default=36, help="model.channels")
    p.add_argument("--layers", type=int, default=8, help="model.layers (pixelcnn, gated)")
    p.add_argument("--resnets", type=int, default=1, help="model.resnets (pixelcnn_pp)")
    p.add_argument("--naive-pixels", type=int, default=8,
                   help="timed pixels of the naive sampler (then extrapolated)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (naive sampler)")
    p.add_argument("--check", action="store_true",
                   help="also compare 2 whole samples of both samplers (slow: naive in full)")
    return p.parse_args()


def seconds(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.image_channels, args.size, args.size)
    torch.manual_seed(0)
    model = PixelCNN(shape, architecture=args.architecture, head=args.head,
                     channels=args.channels, layers=args.layers, resnets=args.resnets,
                     num_mixtures=5).to(args.device).eval()
    rows = [("sampler", "batch", "images/s", "s per batch", "how")]
    for b in args.batch:
        g = torch.Generator(device=args.device).manual_seed(0)
        model.sample(min(b, 2), generator=g, sampler="cached")  # warm-up
        cached = seconds(lambda b=b, g=g: model.sample(b, generator=g, sampler="cached"),
                         args.device)
        pixels = shape[1] * shape[2]
        known = torch.ones(pixels, device=args.device)
        known[pixels - args.naive_pixels:] = 0
        mask = known.view(1, 1, shape[1], shape[2])
        x = torch.zeros(b, *shape, device=args.device)
        naive = seconds(lambda x=x, mask=mask, g=g: model.complete(x, mask, generator=g,
                                                                   sampler="naive"),
                        args.device)
        naive *= pixels / args.naive_pixels
        rows += [("naive", str(b), f"{b / naive:.3f}", f"{naive:.1f}",
                  f"{args.naive_pixels} of {pixels} pixels timed, extrapolated"),
                 ("cached", str(b), f"{b / cached:.2f}", f"{cached:.2f}",
                  f"whole images; {naive / cached:.0f}x the naive sampler")]
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    params = sum(p.numel() for p in model.parameters())
    depth = (f"resnets {args.resnets}" if args.architecture == "pixelcnn_pp"
             else f"layers {args.layers}")
    print(f"{args.architecture} ({params / 1e6:.2f}M parameters, channels {args.channels}, "
          f"{depth}), head {args.head}, images {'x'.join(map(str, shape))}, "
          f"{name}, {torch.get_num_threads()} torch threads for the naive sampler")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        print("| " + " | ".join(f"{v:<{w}}" for v, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if args.check:
        a = model.sample(2, generator=torch.Generator(args.device).manual_seed(1),
                         sampler="naive")
        c = model.sample(2, generator=torch.Generator(args.device).manual_seed(1),
                         sampler="cached")
        print(f"2 whole samples from one seed: naive and cached identical: {torch.equal(a, c)}")


if __name__ == "__main__":
    main()
