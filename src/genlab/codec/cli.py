"""``genlab-codec`` / ``python -m genlab.codec``: lossless compression of images with a trained
PixelCNN (autoregressive coding, any head) or VAE (bits-back coding, any likelihood);
unconditional models.

    genlab-codec compress CKPT IMAGES OUT      # IMAGES: an .npz of uint8, a folder, an archive
    genlab-codec compress CKPT mnist:test OUT --binarize   # 8-bit images, binarized first
    genlab-codec decompress CKPT IN OUT        # OUT: an .npz whose `images` are the originals

IMAGES is read by genlab's image reader (`genlab.metrics.sources.open_images`: also a dataset
split such as mnist:test). A model with a Bernoulli likelihood codes binary images (every pixel
0 or 255); `--binarize` binarizes 8-bit images first, as `data.binarize=dynamic` does (each pixel
255 with probability value / 255, drawn from a generator seeded with `--seed`): a lossy step
before the lossless code, so decompress then gives the binarized images. `decompress` writes
uint8 `images` (N, H, W, C), equal bit for bit to what was compressed, and only after checking
them against the file's pixel SHA-256. Exit status 1 with a one-paragraph message for input
the user can fix (a corrupted or truncated file, another checkpoint, a model without per-pixel
likelihoods); no output file is left then.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from genlab.codec import autoregressive, bitsback
from genlab.codec.container import OVERHEAD_BYTES, Container, sha256_of_file, sha256_of_pixels
from genlab.data.transforms import binarize
from genlab.errors import ArgumentParser, GenlabError, exit_status
from genlab.files.atomic import atomic_write


def load_model(ckpt_path: str | Path):
    """The PixelCNN or VAE of a train.py checkpoint (`genlab.run.checkpoint.load_model`) in
    eval mode on the CPU, the SHA-256 of the checkpoint file, and its run config."""
    from genlab.models.pixelcnn import PixelCNN
    from genlab.models.vae import VAE
    from genlab.run.checkpoint import load_model as load_checkpoint_model

    model, config = load_checkpoint_model(
        ckpt_path, (PixelCNN, VAE), "which genlab-codec cannot code with: it codes images "
        "autoregressively with the PixelCNN family (exact per-pixel conditionals) and by "
        "bits-back coding with a VAE (a posterior and a pixel likelihood); other families are "
        "not implemented. Use a PixelCNN or VAE checkpoint (e.g. experiment=pixelcnn_mnist or "
        "experiment=vae_mnist).", "CKPT")
    if model.conditional:
        raise GenlabError(f"CKPT={ckpt_path} holds a class-conditional "
                          f"{type(model).__name__}, whose probabilities depend on a label that "
                          "genlab-codec does not store. Use an unconditional model "
                          "(model.conditional=false).")
    return model, sha256_of_file(ckpt_path), config


def coder_of(model) -> tuple[str, str]:
    """(coder, pixel likelihood) of a PixelCNN or VAE, as the file records them."""
    from genlab.models.pixelcnn import PixelCNN

    if isinstance(model, PixelCNN):
        return "autoregressive", model.head.name
    return "bits-back", model.pixels.name


def read_images(spec: str) -> torch.Tensor:
    """All images of an image set as one uint8 tensor (N, C, H, W)."""
    from genlab.metrics.sources import open_images

    return torch.cat(list(open_images(spec).batches(1024)))


def compress(ckpt_path: str, images_spec: str, out: str, batch_size: int | None = None,
             binarize_seed: int | None = None, latent_bits: int | None = None) -> dict:
    """Code the images of `images_spec` into the file `out`, binarized first with a generator
    seeded with `binarize_seed` when it is given; returns the sizes and rates. `batch_size`
    and `latent_bits` default to the coder's own defaults."""
    model, ckpt_sha, _ = load_model(ckpt_path)
    coder, head = coder_of(model)
    if coder == "autoregressive" and latent_bits is not None:
        raise GenlabError(f"--latent-bits applies to bits-back coding with a VAE; CKPT="
                          f"{ckpt_path} is a PixelCNN, coded autoregressively without latents. "
                          "Leave --latent-bits out.")
    if coder == "bits-back" and latent_bits is not None:
        bitsback.check_latent_bits(latent_bits)  # before the images are read
    images = read_images(images_spec)
    if binarize_seed is not None:
        images = binarize(images, torch.Generator().manual_seed(binarize_seed))
    start = time.perf_counter()
    if coder == "autoregressive":
        batch_size = batch_size or autoregressive.BATCH_SIZE
        words, latent_bits = autoregressive.encode(model, images, batch_size), 0
    else:
        batch_size = batch_size or bitsback.BATCH_SIZE
        latent_bits = latent_bits or bitsback.LATENT_BITS
        words = bitsback.encode(model, images, batch_size, latent_bits)
    seconds = time.perf_counter() - start
    container = Container(ckpt_sha, coder, head, tuple(model.image_shape), len(images),
                          batch_size, latent_bits, words, sha256_of_pixels(images))
    container.write(out)
    dims = images.numel()
    initial = (0 if coder == "autoregressive" else
               len(bitsback.initial_words(min(batch_size, len(images)), model.latent_dim,
                                          latent_bits)))
    return {"images": len(images), "coder": coder, "bytes": OVERHEAD_BYTES + 4 * len(words),
            "bits_per_dim": (OVERHEAD_BYTES + 4 * len(words)) * 8 / dims,
            "stream_bits_per_dim": 32 * len(words) / dims,
            "net_bits_per_dim": 32 * (len(words) - initial) / dims, "seconds": seconds}


def decompress(ckpt_path: str, file: str, out: str) -> dict:
    """Decode the file `file` and write its images to the .npz `out` (array `images`)."""
    container = Container.read(file)  # a corrupted file fails before the model is loaded
    model, ckpt_sha, _ = load_model(ckpt_path)
    if ckpt_sha != container.checkpoint_sha256:
        raise GenlabError(f"{file} was compressed with another checkpoint (SHA-256 "
                          f"{container.checkpoint_sha256.hex()[:16]}...), not {ckpt_path} "
                          f"({ckpt_sha.hex()[:16]}...); decoding needs exactly the same "
                          "weights. Give the checkpoint it was compressed with.")
    coder, head = coder_of(model)
    if (container.coder, container.head, container.shape) != (coder, head,
                                                              tuple(model.image_shape)):
        raise GenlabError(f"{file} holds {container.shape} images coded {container.coder} "
                          f"with a {container.head} likelihood, but the model codes {coder} "
                          f"with {head} and {tuple(model.image_shape)}: give the checkpoint it "
                          "was made with.")
    start = time.perf_counter()
    if coder == "autoregressive":
        images = autoregressive.decode(model, container.words, container.count,
                                       container.batch_size)
    else:
        images = bitsback.decode(model, container.words, container.count,
                                 container.batch_size, container.latent_bits)
    seconds = time.perf_counter() - start
    if sha256_of_pixels(images) != container.pixels_sha256:
        raise GenlabError(f"Decoding {file} gave images that differ from the ones compressed "
                          "(their SHA-256 does not match the file's): the model's probabilities "
                          "came out differently here than when compressing (another torch "
                          "version or CPU), so nothing was written. Decompress with the same "
                          "software and machine type that compressed it.")
    with atomic_write(out) as f:
        np.savez(f, images=images.permute(0, 2, 3, 1).numpy())
    return {"images": len(images), "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="genlab-codec", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress", help="code uint8 images into a file")
    c.add_argument("ckpt", help="a PixelCNN or VAE checkpoint written by train.py")
    c.add_argument("images", help="an .npz of uint8 images, a folder, an archive, or NAME:SPLIT")
    c.add_argument("out", help="the compressed file to write")
    c.add_argument("--batch-size", type=int, default=None,
                   help="images coded together: a PixelCNN's batch (default "
                        f"{autoregressive.BATCH_SIZE}), a VAE's chain step (default "
                        f"{bitsback.BATCH_SIZE}); speed and, for a VAE, the initial bits; "
                        "stored in the file")
    c.add_argument("--latent-bits", type=int, default=None,
                   help="VAE only: bins of equal prior mass per latent dimension, as a power "
                        f"of two (default {bitsback.LATENT_BITS}: 2^{bitsback.LATENT_BITS} bins)")
    c.add_argument("--binarize", action="store_true",
                   help="binarize 8-bit images first (each pixel 255 with probability "
                        "value/255), for a Bernoulli-head model; lossy, then coded losslessly")
    c.add_argument("--seed", type=int, default=0, help="the seed of --binarize (default 0)")
    d = sub.add_parser("decompress", help="decode a file into an .npz of uint8 images")
    d.add_argument("ckpt", help="the checkpoint the file was compressed with")
    d.add_argument("file", help="a file written by `genlab-codec compress`")
    d.add_argument("out", help="the .npz to write (array `images`, (N, H, W, C) uint8)")
    return p


def run(args: argparse.Namespace) -> None:
    """Compress or decompress as the parsed command line says, printing what was done."""
    if args.command == "compress":
        if args.batch_size is not None and args.batch_size < 1:
            raise GenlabError(f"--batch-size={args.batch_size}: give a positive number.")
        r = compress(args.ckpt, args.images, args.out, args.batch_size,
                     args.seed if args.binarize else None, args.latent_bits)
        initial = (f", {r['net_bits_per_dim']:.4f} without the initial bits"
                   if r["coder"] == "bits-back" else "")
        print(f"{r['images']} images -> {args.out}: {r['bytes']} bytes, "
              f"{r['bits_per_dim']:.4f} bits/dim ({r['stream_bits_per_dim']:.4f} without "
              f"the {OVERHEAD_BYTES}-byte header{initial}), "
              f"{r['images'] / r['seconds']:.1f} images/s")
    else:
        r = decompress(args.ckpt, args.file, args.out)
        print(f"{r['images']} images -> {args.out}, identical to the compressed images "
              f"(SHA-256 checked), {r['images'] / max(r['seconds'], math.ulp(1)):.1f} "
              "images/s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status(lambda: run(args))
