"""Lossless compression of test images: genlab-codec (a PixelCNN with a range coder, or a VAE
with bits-back coding) against PNG, WebP lossless and general-purpose compressors.

    python benchmarks/compression.py CKPT                          # 200 MNIST test images
    python benchmarks/compression.py CKPT --num 10000 --images fashion_mnist:test
    python benchmarks/compression.py CKPT --images cifar10-jpeg.tar.gz::cifar10-jpeg/test

The images are the first `--num` images of `--images` (a dataset split or anything genlab's
image reader opens) as genlab serves them (MNIST and Fashion-MNIST 28x28 zero-padded to
32x32); for a model with a Bernoulli likelihood they are
binarized once with `genlab.data.transforms.binarize` and a generator seeded with `--seed`
(each pixel white with probability u / 255): the binary pixels such a model sees; other
models get the 8-bit images. genlab-codec runs through its CLI functions, so its sizes are
real files (the header included) and its speeds include the model; decoding is checked bit for
bit. Rates are given per coded dimension (1,024 of a 32x32 image, times its channels) and per
original pixel (bits per image / 784 for the 28x28 datasets, the convention of the published
references on binarized MNIST: BB-ANS 0.19, bz2 0.25, WebP 0.44, PNG 0.78 bits/dim, Townsend et
al. 2019). The reference a codec pays: a PixelCNN's exact -log2 p(x); a VAE's negative ELBO
(one posterior sample per image), which bits-back coding attains, not its (lower) NLL.
PNG (optimize) and WebP (lossless, method 6) code each image in its own file (headers
included), and all of them tiled into one mosaic image (one header); gzip, bz2 and
lzma (their highest levels) code the whole array at once, as packed bits (8 pixels a byte)
and as one byte per pixel (0 or 255).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genlab.codec.cli import coder_of, compress, decompress, load_model
from genlab.codec.container import OVERHEAD_BYTES
from genlab.codec.rate_distortion import tile
from genlab.data.transforms import binarize, to_model_range
from genlab.metrics.sources import open_images
from genlab.run.checkpoint import load_checkpoint

PADDED_28 = ("mnist:", "fashion_mnist:")  # 28x28 images served zero-padded to 32x32


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", help="a PixelCNN or VAE checkpoint (e.g. of experiment=pixelcnn_mnist "
                   "or experiment=vae_mnist)")
    p.add_argument("--images", default="mnist:test",
                   help="the images to code: NAME:SPLIT, a folder, an archive (default "
                        "mnist:test)")
    p.add_argument("--num", type=int, default=200, help="test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the binarization")
    p.add_argument("--batch-size", type=int, default=None,
                   help="genlab-codec's coding batch or chain step (default: the coder's)")
    p.add_argument("--latent-bits", type=int, default=None, help="VAE: bits per latent")
    return p.parse_args()


def image_bytes(images: np.ndarray, fmt: str, mode: str, **options) -> int:
    """Total bytes of every image (N, H, W) saved in its own file by Pillow."""
    total = 0
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).convert(mode).save(buffer, fmt, **options)
        total += buffer.tell()
    return total


@torch.no_grad()
def reference_bits(model, images: torch.Tensor) -> tuple[str, float]:
    """What the codec pays in principle, in bits for all images: a PixelCNN's -log2 p(x), a
    VAE's negative ELBO (analytic KL, one posterior sample per image), in batches of 500."""
    coder, _ = coder_of(model)
    total = 0.0
    for begin in range(0, len(images), 500):
        x = to_model_range(images[begin:begin + 500])
        if coder == "autoregressive":
            total -= float(model.log_prob(x).sum())
        else:
            total += float(sum(term.sum() for term in model.negative_elbo(x, None)))
    label = ("model NLL, -log2 p(x)" if coder == "autoregressive"
             else "model negative ELBO (1 sample)")
    return label, total / math.log(2)


def main() -> None:
    args = parse_args()
    model, _, _ = load_model(args.ckpt)
    coder, likelihood = coder_of(model)
    binary = likelihood == "bernoulli"
    images = next(open_images(args.images).batches(args.num))
    if binary:
        images = binarize(images, torch.Generator().manual_seed(args.seed))
    n, dims = len(images), images[0].numel()
    rows = []  # (method, bytes, note)
    with tempfile.TemporaryDirectory() as tmp:
        source, coded, out = Path(tmp, "in.npz"), Path(tmp, "x.glac"), Path(tmp, "out.npz")
        np.savez(source, images=images.permute(0, 2, 3, 1).numpy())
        enc = compress(args.ckpt, str(source), str(coded), args.batch_size,
                       latent_bits=args.latent_bits)
        dec = decompress(args.ckpt, str(coded), str(out))
        with np.load(out) as data:
            assert np.array_equal(data["images"], images.permute(0, 2, 3, 1).numpy())
    label, nll_bits = reference_bits(model, images)
    stream = enc["bytes"] - OVERHEAD_BYTES
    rows.append((f"{label} (no file)", nll_bits / 8, "the bound the codec pays"))
    if coder == "bits-back":
        rows.append(("genlab-codec bits-back, net of the initial bits",
                     enc["net_bits_per_dim"] * n * dims / 8, "the chain's own cost"))
    rows.append((f"genlab-codec {coder}, stream only", stream, "coder words"))
    rows.append((f"genlab-codec {coder}, whole file", enc["bytes"],
                 f"incl. the {OVERHEAD_BYTES}-byte header"))
    channels = images.shape[1]
    grey = images.permute(0, 2, 3, 1).numpy()
    grey = grey[..., 0] if channels == 1 else grey
    colour = "L" if channels == 1 else "RGB"
    if binary:
        rows.append(("PNG, 1-bit", image_bytes(grey, "PNG", "1", optimize=True), "per image"))
    rows.append(("PNG, 8-bit", image_bytes(grey, "PNG", colour, optimize=True), "per image"))
    rows.append(("WebP lossless", image_bytes(grey, "WEBP", colour, lossless=True, quality=100,
                                              method=6), "per image"))
    tiled = tile(grey, math.ceil(math.sqrt(n)))[None]
    if binary:
        rows.append(("PNG, 1-bit, one mosaic", image_bytes(tiled, "PNG", "1", optimize=True),
                     "all images in one file"))
    rows.append(("PNG, 8-bit, one mosaic", image_bytes(tiled, "PNG", colour, optimize=True),
                 "all images in one file"))
    rows.append(("WebP lossless, one mosaic", image_bytes(tiled, "WEBP", colour, lossless=True,
                                                          quality=100, method=6),
                 "all images in one file"))
    raw = images.numpy().tobytes()
    arrays = [("packed bits", np.packbits(images.numpy() > 0).tobytes())] if binary else []
    arrays.append(("one byte per pixel", raw))
    extreme = 9 | lzma.PRESET_EXTREME
    for name, compressor in (("gzip -9", lambda b: gzip.compress(b, 9)),
                             ("bz2 -9", lambda b: bz2.compress(b, 9)),
                             ("lzma -9e", lambda b: lzma.compress(b, preset=extreme))):
        for what, data in arrays:
            rows.append((f"{name}, {what}", len(compressor(data)), "the whole array"))
    what = "binarized" if binary else "8-bit"
    trained = load_checkpoint(args.ckpt, "CKPT")
    original = 28 * 28 if args.images.startswith(PADDED_28) else dims
    print(f"{n} images of {args.images} ({what}, {tuple(images.shape[1:])} as genlab serves "
          f"them); {args.ckpt} (epoch {trained.get('epoch')}, step {trained.get('global_step')})")
    print(f"| method | bytes | bits/image | bits/dim ({dims}) | bits per original pixel "
          f"(/{original}) | |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for method, size, note in rows:
        bits = 8 * size / n
        print(f"| {method} | {size:,.0f} | {bits:.1f} | {bits / dims:.4f} | "
              f"{bits / original:.4f} | {note} |")
    print(f"genlab-codec {coder} speed (one thread): encode {n / enc['seconds']:.1f} images/s, "
          f"decode {n / dec['seconds']:.1f} images/s; overhead over the reference: stream "
          f"{100 * (8 * stream / nll_bits - 1):.2f}%, file "
          f"{100 * (8 * enc['bytes'] / nll_bits - 1):.2f}%")


if __name__ == "__main__":
    main()
