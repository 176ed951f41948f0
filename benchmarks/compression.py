"""Lossless compression of binarized MNIST test images: genlab-codec (a PixelCNN and a range
coder) against PNG, WebP lossless and general-purpose compressors.

    python benchmarks/compression.py CKPT                # 200 test images
    python benchmarks/compression.py CKPT --num 1000

The images are the first `--num` MNIST test images as genlab serves them (28x28 zero-padded to
32x32), binarized once with `genlab.data.transforms.binarize` and a generator seeded with
`--seed` (each pixel white with probability u / 255): the binary pixels a Bernoulli-head model
sees (a softmax or mixture checkpoint gets the 8-bit images instead). genlab-codec runs through
its CLI functions, so its sizes are real files (the 140-byte header included) and its speeds
include the model; decoding is checked bit for bit. Rates are given per coded dimension
(1,024 of a 32x32 image) and per MNIST pixel (bits per image / 784, the convention of the
published references: BB-ANS 0.19, bz2 0.25, WebP 0.44, PNG 0.78 bits/dim, Townsend et al.
2019). The model's NLL is its exact -log2 p(x); the codec's overhead is the difference.
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

from genlab.codec.cli import compress, decompress, load_model
from genlab.data.transforms import binarize, to_model_range
from genlab.metrics.sources import open_images
from genlab.run.checkpoint import load_checkpoint

MNIST_PIXELS = 28 * 28


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt", help="a PixelCNN checkpoint (e.g. of experiment=pixelcnn_mnist)")
    p.add_argument("--num", type=int, default=200, help="test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the binarization")
    p.add_argument("--batch-size", type=int, default=64, help="genlab-codec's coding batch")
    return p.parse_args()


def image_bytes(images: np.ndarray, fmt: str, mode: str, **options) -> int:
    """Total bytes of every image (N, H, W) saved in its own file by Pillow."""
    total = 0
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).convert(mode).save(buffer, fmt, **options)
        total += buffer.tell()
    return total


def mosaic(images: np.ndarray) -> np.ndarray:
    """The images (N, H, W) tiled row by row into one square-ish image, blank tiles at the end."""
    n, h, w = images.shape
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    tiles = np.zeros((rows * columns, h, w), dtype=images.dtype)
    tiles[:n] = images
    return tiles.reshape(rows, columns, h, w).transpose(0, 2, 1, 3).reshape(rows * h, columns * w)


def main() -> None:
    args = parse_args()
    model, _ = load_model(args.ckpt)
    images = next(open_images("mnist:test").batches(args.num))
    if model.head.binary:
        images = binarize(images, torch.Generator().manual_seed(args.seed))
    n, dims = len(images), images[0].numel()
    rows = []  # (method, bytes, note)
    with tempfile.TemporaryDirectory() as tmp:
        source, coded, out = Path(tmp, "in.npz"), Path(tmp, "x.glac"), Path(tmp, "out.npz")
        np.savez(source, images=images.permute(0, 2, 3, 1).numpy())
        enc = compress(args.ckpt, str(source), str(coded), args.batch_size)
        dec = decompress(args.ckpt, str(coded), str(out))
        with np.load(out) as data:
            assert np.array_equal(data["images"], images.permute(0, 2, 3, 1).numpy())
    nll_bits = float(-model.log_prob(to_model_range(images)).sum()) / math.log(2)
    rows.append(("model NLL, -log2 p(x) (no file)", nll_bits / 8, "the bound the codec pays"))
    rows.append(("genlab-codec, stream only", enc["bytes"] - 140, "range coder words"))
    rows.append(("genlab-codec, whole file", enc["bytes"], "incl. the 140-byte header"))
    grey = images[:, 0].numpy()
    binary = model.head.binary
    if binary:
        rows.append(("PNG, 1-bit", image_bytes(grey, "PNG", "1", optimize=True), "per image"))
    rows.append(("PNG, 8-bit grey", image_bytes(grey, "PNG", "L", optimize=True), "per image"))
    rows.append(("WebP lossless", image_bytes(grey, "WEBP", "L", lossless=True, quality=100,
                                              method=6), "per image"))
    tiled = mosaic(grey)[None]
    if binary:
        rows.append(("PNG, 1-bit, one mosaic", image_bytes(tiled, "PNG", "1", optimize=True),
                     "all images in one file"))
    rows.append(("PNG, 8-bit grey, one mosaic", image_bytes(tiled, "PNG", "L", optimize=True),
                 "all images in one file"))
    rows.append(("WebP lossless, one mosaic", image_bytes(tiled, "WEBP", "L", lossless=True,
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
    print(f"{n} MNIST test images ({what}, 32x32: 28x28 zero-padded); {args.ckpt} (epoch "
          f"{trained.get('epoch')}, step {trained.get('global_step')})")
    print("| method | bytes | bits/image | bits/dim (32x32) | bits per MNIST pixel (/784) | |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for method, size, note in rows:
        bits = 8 * size / n
        print(f"| {method} | {size:,.0f} | {bits:.1f} | {bits / dims:.4f} | "
              f"{bits / MNIST_PIXELS:.4f} | {note} |")
    print(f"genlab-codec speed (batch {args.batch_size}, one thread): encode "
          f"{n / enc['seconds']:.1f} images/s, decode {n / dec['seconds']:.1f} images/s; "
          f"overhead over the NLL: stream {100 * (8 * (enc['bytes'] - 140) / nll_bits - 1):.2f}%,"
          f" file {100 * (8 * enc['bytes'] / nll_bits - 1):.2f}%")


if __name__ == "__main__":
    main()
