"""Lossy rate-distortion of the VAE family against JPEG and WebP (Pillow).

    python -m genlab.codec.rate_distortion MULTIRUN_DIR [RUN_DIR ...] [--num N] [--out rd.png]

Rate of a VAE (per image, in bits per 32x32 pixel):

    R(x) = KL(q(z|x) || p(z)) / (ln 2 * 1024),  KL = 0.5 * sum_i (mu_i^2 + var_i - 1 - log var_i)

the KL rate: what bits-back or relative-entropy coding would spend to send z ~ q; not a file
(nothing here is coded). Distortion, on the 8-bit images (peak 255), per image and then averaged:

    MSE(x, y) = mean over pixels of (x - y)^2,   PSNR(x, y) = 10 log10(255^2 / MSE(x, y))

with y the decoder mean for z ~ q(z|x) (what the KL rate pays for) rounded to the nearest 8-bit
value, and also for z = mu (labelled: cheaper than the rate says). Identical images (MSE 0)
score PSNR_CAP_DB. JPEG and WebP (lossy, method 6) code the same images at a sweep of qualities,
(a) each image in its own file, headers included (what storing 32x32 files costs), and (b) all
images tiled into one mosaic (32x32 tiles sit on JPEG's 8- and WebP's 16-pixel block grid, so no
block straddles two images; one header: the fair codec comparison). Their rate is file bytes * 8
/ pixels. "Matched bits per pixel": a codec's PSNR at a VAE's rate, read off the codec's
(bpp, PSNR) sweep by linear interpolation in bpp between the two qualities around it; outside
the sweep's range there is no value (no extrapolation). The table also gives the converse, the
bpp a codec needs for the VAE's PSNR (interpolated in PSNR the same way).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.errors import ArgumentParser, GenlabError, exit_status
from genlab.maths.autoregressive import pixel_index

PEAK = 255.0
# 78.2 dB is one level of error in one pixel of a 32x32 image: a cap above every non-identical
# pair keeps the mean over images finite when some images come back exact.
PSNR_CAP_DB = 100.0
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
KL_RATE_LABEL = ("KL rate (what bits-back or relative-entropy coding would spend to send "
                 "z ~ q; not a file)")


# -- the maths -----------------------------------------------------------------------------------
def kl_rate_bpp(mu: torch.Tensor, logvar: torch.Tensor, pixels: int) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per row in bits per pixel: the KL in nats / ln 2 /
    `pixels`."""
    from genlab.maths.distributions import gaussian_kl_standard

    return gaussian_kl_standard(mu, logvar) / (math.log(2) * pixels)


def mse(reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """Mean squared error per image over all its pixels, on the 8-bit scale: (N, ...) -> (N,)."""
    diff = reference.astype(np.float64) - decoded.astype(np.float64)
    return (diff ** 2).reshape(len(diff), -1).mean(axis=1)


def psnr(reference: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """PSNR per image in dB, 10 log10(255^2 / MSE), PSNR_CAP_DB for identical images. (From
    the MSE reported beside it, in float64: torchmetrics' PSNR, which the tasks use, is off by
    up to 3e-7 dB and gives inf for identical images.)"""
    error = mse(reference, decoded)
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(PEAK ** 2 / error)
    return np.minimum(db, PSNR_CAP_DB)


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """Images (N, H, W) or (N, H, W, C) tiled row by row into one (rows * H, columns * W[, C])
    image, blank tiles at the end."""
    n, h, w, *channels = images.shape
    rows = math.ceil(n / columns)
    tiles = np.zeros((rows * columns, h, w, *channels), dtype=images.dtype)
    tiles[:n] = images
    return (tiles.reshape(rows, columns, h, w, *channels).swapaxes(1, 2)
            .reshape(rows * h, columns * w, *channels))


def untile(mosaic: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """The first n (H, W) tiles of a mosaic made by `tile`, as (N, H, W)."""
    rows, columns = mosaic.shape[0] // h, mosaic.shape[1] // w
    tiles = mosaic.reshape(rows, h, columns, w).transpose(0, 2, 1, 3).reshape(-1, h, w)
    return tiles[:n]


# -- JPEG and WebP -------------------------------------------------------------------------------
@dataclass
class Point:
    """One point of a rate-distortion curve: rate in bits per pixel, mean PSNR and MSE."""
    label: str
    bpp: float
    psnr: float
    mse: float


def pillow_round_trip(image: np.ndarray, fmt: str, quality: int) -> tuple[int, np.ndarray]:
    """A grey (H, W) uint8 image saved by Pillow as JPEG or lossy WebP (method 6) at `quality`:
    the file's bytes and the decoded grey image."""
    options = {"method": 6} if fmt == "WEBP" else {}
    buffer = io.BytesIO()
    Image.fromarray(image, "L").save(buffer, fmt, quality=quality, **options)
    size = buffer.tell()
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return size, np.asarray(decoded.convert("L"))


def codec_point(images: np.ndarray, fmt: str, quality: int, mosaic: bool) -> Point:
    """JPEG / WebP at one quality on images (N, H, W): each in its own file, or all in one
    mosaic of ceil(sqrt(N)) columns."""
    n, h, w = images.shape
    if mosaic:
        size, decoded = pillow_round_trip(tile(images, math.ceil(math.sqrt(n))), fmt, quality)
        decoded = untile(decoded, n, h, w)
    else:
        coded = [pillow_round_trip(image, fmt, quality) for image in images]
        size, decoded = sum(c[0] for c in coded), np.stack([c[1] for c in coded])
    return Point(f"q={quality}", 8 * size / images.size, float(psnr(images, decoded).mean()),
                 float(mse(images, decoded).mean()))


def codec_sweep(images: np.ndarray, fmt: str, qualities, mosaic: bool) -> list[Point]:
    """The curve of one codec and mode over `qualities`."""
    return [codec_point(images, fmt, q, mosaic) for q in qualities]


def _interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """y at x, linear between the two points around x (sorted by x); None outside their range."""
    order = np.argsort(xs)
    xs, ys = np.asarray(xs)[order], np.asarray(ys)[order]
    if not xs[0] <= x <= xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def psnr_at_rate(sweep: list[Point], bpp: float) -> float | None:
    """A codec's PSNR at `bpp`, linearly interpolated in bpp along its sweep; None outside the
    sweep's range of rates."""
    return _interpolate([p.bpp for p in sweep], [p.psnr for p in sweep], bpp)


def rate_at_psnr(sweep: list[Point], db: float) -> float | None:
    """The bpp a codec needs for a PSNR of `db`, linearly interpolated in PSNR along its sweep;
    None outside the sweep's range of PSNR."""
    return _interpolate([p.psnr for p in sweep], [p.bpp for p in sweep], db)


# -- the VAE -------------------------------------------------------------------------------------
def load_vae(ckpt_path: Path):
    """The VAE of a train.py checkpoint in eval mode on the CPU, and its run config; a
    GenlabError for any other model, or a VAE not of 8-bit images."""
    from genlab.models.vae import VAE
    from genlab.run.checkpoint import load_model

    model, config = load_model(
        ckpt_path, (VAE,), "not a VAE. The rate-distortion measurement reads a VAE's posterior "
        "q(z|x) for the rate and its decoder for the distortion; give run directories of VAE "
        "runs, e.g. of python train.py -m experiment=vae_rate_distortion.", "checkpoint")
    if model.likelihood == "bernoulli" or model.conditional:
        raise GenlabError(f"{ckpt_path} holds a VAE with a Bernoulli likelihood or a class-"
                          "conditional one; the measurement needs an unconditional VAE of 8-bit "
                          "images (model.likelihood=gaussian or logistic, model.conditional="
                          "false), such as the jobs of experiment=vae_rate_distortion.")
    return model, config


@torch.no_grad()
def vae_points(model, images: torch.Tensor, seed: int, batch: int = 500
               ) -> tuple[Point, Point]:
    """The VAE's KL rate with the distortion of the decoder mean at z ~ q(z|x) (seeded) and at
    z = mu, rounded to the nearest 8-bit value, on uint8 images (N, C, H, W)."""
    from genlab.data.transforms import to_model_range
    from genlab.maths.vae import reparameterize

    generator = torch.Generator().manual_seed(seed)
    rates, sampled, means = [], [], []
    pixels = images[0, 0].numel()
    for chunk in images.split(batch):
        mu, logvar = model.posterior_params(to_model_range(chunk))
        rates.append(kl_rate_bpp(mu, logvar, pixels))
        z = reparameterize(mu, logvar, generator=generator)
        for z_, out in ((z, sampled), (mu, means)):
            out.append(pixel_index(model.pixels.mean(model.decoder_params(z_)))
                       .to(torch.uint8))
    rate = float(torch.cat(rates).mean())
    reference = images.numpy()
    return tuple(Point(label, rate, float(psnr(reference, y).mean()),
                       float(mse(reference, y).mean()))
                 for label, y in (("z ~ q", torch.cat(sampled).numpy()),
                                  ("z = mu", torch.cat(means).numpy())))


def find_checkpoints(paths: list[str]) -> list[Path]:
    """checkpoints/last.ckpt of each run directory given, or of each job of a multirun
    directory given (in job order); a GenlabError when there is none."""
    found = []
    for path in map(Path, paths):
        if (path / "checkpoints" / "last.ckpt").is_file():
            found.append(path / "checkpoints" / "last.ckpt")
            continue
        jobs = [p for p in path.glob("*/checkpoints/last.ckpt") if p.is_file()]
        found += sorted(jobs, key=lambda p: (len(p.parts[-3]), p.parts[-3]))
    if not found:
        raise GenlabError(f"No checkpoints/last.ckpt in {', '.join(paths)} or in its jobs. Give "
                          "the directory of a finished multirun (outputs/train/multiruns/<date>_"
                          "<time>, from python train.py -m experiment=vae_rate_distortion) or of "
                          "VAE runs (outputs/train/runs/<run>).")
    return found


# -- the report ----------------------------------------------------------------------------------
def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_tables(vaes: list[tuple[float, Point, Point]], sweeps: dict[str, list[Point]]) -> None:
    """The VAE points with the codecs' PSNR at matched bits per pixel and the codecs' bpp at
    matched PSNR, then the codec sweeps."""
    names = list(sweeps)
    print(f"Rate: {KL_RATE_LABEL}, bits per 32x32 pixel. PSNR in dB on 8-bit values, averaged "
          "over images. Codec columns, read off each codec's quality sweep by linear "
          "interpolation (— : outside the sweep, not extrapolated): its PSNR at the VAE's rate, "
          "then the bpp it needs for the VAE's PSNR (z ~ q).\n")
    print("| beta | KL rate (bpp) | PSNR z~q | MSE z~q | PSNR z=mu | MSE z=mu | "
          + " | ".join(f"{name}: dB at this rate" for name in names) + " | "
          + " | ".join(f"{name}: bpp for this PSNR" for name in names) + " |")
    print("| ---: " * (6 + 2 * len(names)) + "|")
    for beta, sampled, mean in vaes:
        at_rate = [_cell(psnr_at_rate(sweeps[name], sampled.bpp), 2) for name in names]
        at_psnr = [_cell(rate_at_psnr(sweeps[name], sampled.psnr), 3) for name in names]
        print(f"| {beta:g} | {sampled.bpp:.4f} | {sampled.psnr:.2f} | {sampled.mse:.1f} | "
              f"{mean.psnr:.2f} | {mean.mse:.1f} | " + " | ".join(at_rate + at_psnr) + " |")
    print("\n| codec | quality | bpp | PSNR (dB) | MSE |\n| --- | ---: | ---: | ---: | ---: |")
    for name, sweep in sweeps.items():
        for p in sweep:
            print(f"| {name} | {p.label[2:]} | {p.bpp:.4f} | {p.psnr:.2f} | {p.mse:.1f} |")


def plot(vaes: list[tuple[float, Point, Point]], sweeps: dict[str, list[Point]], n: int,
         data: str, out: Path) -> None:
    """Rate (bpp, log axis) against PSNR (dB): the VAE at z ~ q and z = mu, the codecs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genlab.files.atomic import atomic_write

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {"JPEG, mosaic": ("tab:blue", "-"), "WebP, mosaic": ("tab:green", "-"),
              "JPEG, per file": ("tab:blue", ":"), "WebP, per file": ("tab:green", ":")}
    for name, sweep in sweeps.items():
        color, line = styles[name]
        ax.plot([p.bpp for p in sweep], [p.psnr for p in sweep], line, color=color, marker=".",
                label=name)
    for i, label in ((1, "VAE, z ~ q (KL rate)"), (2, "VAE, z = mu (at the same KL rate)")):
        points = sorted((v[i] for v in vaes), key=lambda p: p.bpp)
        ax.plot([p.bpp for p in points], [p.psnr for p in points], "o-" if i == 1 else "s--",
                color="tab:red" if i == 1 else "tab:orange", label=label)
    for beta, sampled, _ in vaes:
        ax.annotate(f"β={beta:g}", (sampled.bpp, sampled.psnr), textcoords="offset points",
                    xytext=(0, -7), rotation=-60, ha="left", va="top", fontsize=8,
                    color="tab:red")
    ax.set_xscale("log")
    ax.set_ylim(bottom=min(v[1].psnr for v in vaes) - 4)   # room for the slanted labels
    ax.set_xlabel("rate (bits per pixel; VAE: KL rate, not a file)")
    ax.set_ylabel("PSNR (dB, 8-bit, mean over images)")
    ax.set_title(f"Rate-distortion on {n:,} {data} test images (32x32)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m genlab.codec.rate_distortion",
                                description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="a multirun directory of VAE jobs, or run directories")
    p.add_argument("--num", type=int, default=10_000, help="test images (default 10,000: all)")
    p.add_argument("--seed", type=int, default=0, help="the seed of z ~ q(z|x)")
    p.add_argument("--out", default="rate_distortion.png", help="the plot (PNG)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Measure every checkpoint and the codecs on the same test images; print, plot."""
    from genlab.metrics.sources import open_images

    if args.num < 1:
        raise GenlabError(f"--num={args.num}: give a positive number of test images (default "
                          "10,000: all of them).")
    paths = find_checkpoints(args.runs)
    models = [load_vae(path) for path in paths]
    trained_on = {str(path): " ".join(str(config["data"][key]) for key in ("name", "path")
                                      if config["data"].get(key))
                  for path, (_, config) in zip(paths, models, strict=True)}
    if len(set(trained_on.values())) > 1:
        raise GenlabError("The checkpoints were trained on different datasets ("
                          + ", ".join(f"{p}: {d}" for p, d in trained_on.items()) + "); one "
                          "curve measures VAEs of one dataset on its test images. Give the runs "
                          "of one dataset.")
    data = models[0][1]["data"]["name"]
    folder = {"path": models[0][1]["data"]["path"]} if data == "image_folder" else {}
    images = next(open_images(f"{data}:test", **folder).batches(args.num))
    if images.shape[1] != 1:
        raise GenlabError(f"{data} has {images.shape[1]} channels; the JPEG / WebP comparison "
                          "here codes grey images. Measure VAEs of a grey dataset (fashion_mnist, "
                          "mnist).")
    vaes = sorted(((float(config["model"]["beta"]), *vae_points(model, images, args.seed))
                   for model, config in models), key=lambda v: v[0])
    grey = images[:, 0].numpy()
    sweeps = {f"{name}, {mode}": codec_sweep(grey, fmt, qualities, mode == "mosaic")
              for mode in ("mosaic", "per file")
              for name, fmt, qualities in (("JPEG", "JPEG", JPEG_QUALITIES),
                                           ("WebP", "WEBP", WEBP_QUALITIES))}
    print(f"{len(images):,} {data}:test images (32x32 as genlab serves them); "
          f"{len(vaes)} VAE checkpoints\n")
    print_tables(vaes, sweeps)
    plot(vaes, sweeps, len(images), data, Path(args.out))
    print(f"\nplot: {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
