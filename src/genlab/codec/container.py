"""The file format of `genlab-codec`: a fixed header, the coded stream, a trailing digest.

    offset  size  field (little-endian), format version 2
    0       4     magic b"GLAC" (genlab codec)
    4       2     format version (2)
    6       32    SHA-256 of the checkpoint file the images were coded with
    38      16    coder, ASCII, NUL-padded: autoregressive (PixelCNN), bits-back (VAE)
    54      16    pixel likelihood, ASCII, NUL-padded (softmax, bernoulli, logistic_mixture,
                  logistic, gaussian)
    70      6     image shape C, H, W (3 x uint16)
    76      4     number of images N (uint32)
    80      4     images per coding batch / chain step (uint32; the decoder must use the same)
    84      2     bits per latent dimension of bits-back coding (uint16; 0 for autoregressive)
    86      8     number of 32-bit words W of the coded stream (uint64)
    94      32    SHA-256 of the original pixels: uint8 (N, C, H, W), C order
    126     4 W   the coded stream (range coder or ANS stack), uint32 words
    ...     32    SHA-256 of every byte before it (a corrupted file is refused before decoding)

The header is 126 + 32 = 158 bytes per file, whatever the number of images. Format version 1
(written before bits-back coding existed: no coder or latent-bits fields, 140 bytes, always
autoregressive) is still read.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError
from genlab.files.atomic import atomic_write

MAGIC = b"GLAC"
VERSION = 2
HEADER = struct.Struct("<4sH32s16s16s3HIIHQ32s")
HEADER_V1 = struct.Struct("<4sH32s16s3HIIQ32s")
DIGEST = 32
OVERHEAD_BYTES = HEADER.size + DIGEST


@dataclass(frozen=True)
class Container:
    """The contents of one compressed file (see the module docstring)."""

    checkpoint_sha256: bytes
    coder: str  # autoregressive | bits-back
    head: str   # the pixel likelihood
    shape: tuple[int, int, int]
    count: int
    batch_size: int
    latent_bits: int  # 0 for autoregressive
    words: np.ndarray  # uint32, the coded stream
    pixels_sha256: bytes

    def to_bytes(self) -> bytes:
        header = HEADER.pack(MAGIC, VERSION, self.checkpoint_sha256, self.coder.encode("ascii"),
                             self.head.encode("ascii"), *self.shape, self.count,
                             self.batch_size, self.latent_bits, len(self.words),
                             self.pixels_sha256)
        body = header + self.words.astype("<u4").tobytes()
        return body + hashlib.sha256(body).digest()

    def write(self, path: str | Path) -> None:
        """Write the file atomically: a failure leaves no file (and any old one whole)."""
        with atomic_write(path) as f:
            f.write(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Container:
        """Parse a file's bytes; a GenlabError naming `name` for a foreign, newer, truncated or
        corrupted file."""
        if data[:4] != MAGIC:
            raise GenlabError(f"{name} is not a file written by `genlab-codec compress` (it does "
                              f"not start with {MAGIC!r}). Give a file that command wrote.")
        version = struct.unpack_from("<H", data, 4)[0] if len(data) >= 6 else VERSION
        header = HEADER_V1 if version == 1 else HEADER
        if len(data) < header.size + DIGEST:
            raise GenlabError(f"{name} is truncated: it has {len(data)} bytes, fewer than the "
                              f"{header.size + DIGEST} of a genlab-codec header and digest. "
                              "Nothing was decoded; use a complete copy of the file.")
        if version == 1:
            (_, _, ckpt_sha, head, c, h, w, count, batch, n_words,
             pixels_sha) = HEADER_V1.unpack_from(data)
            coder, latent_bits = b"autoregressive", 0
        elif version == VERSION:
            (_, _, ckpt_sha, coder, head, c, h, w, count, batch, latent_bits, n_words,
             pixels_sha) = HEADER.unpack_from(data)
        else:
            raise GenlabError(f"{name} has format version {version}; this genlab reads versions "
                              f"1 to {VERSION}. Decompress it with the genlab release that "
                              "wrote it.")
        expected = header.size + 4 * n_words + DIGEST
        if len(data) != expected:
            what = "truncated" if len(data) < expected else "longer than its header says"
            raise GenlabError(f"{name} is {what}: its header announces {n_words} words of coded "
                              f"stream, {expected} bytes in all, but the file has {len(data)} "
                              "bytes (or its header is damaged). Nothing was decoded; use a "
                              "complete, intact copy of the file.")
        if hashlib.sha256(data[:-DIGEST]).digest() != data[-DIGEST:]:
            raise GenlabError(f"{name} is corrupted: the SHA-256 of its header and coded stream "
                              "does not match the one stored at its end, so some bytes changed "
                              "after it was written. Nothing was decoded; use an intact copy.")
        words = np.frombuffer(data, dtype="<u4", count=n_words, offset=header.size)
        return cls(ckpt_sha, coder.rstrip(b"\0").decode("ascii"),
                   head.rstrip(b"\0").decode("ascii"), (c, h, w), count, batch, latent_bits,
                   words.astype(np.uint32), pixels_sha)

    @classmethod
    def read(cls, path: str | Path) -> Container:
        path = Path(path).expanduser()
        if not path.is_file():
            raise GenlabError(f"{path} does not exist; give a file written by "
                              "`genlab-codec compress`.")
        return cls.from_bytes(path.read_bytes(), str(path))


def sha256_of_file(path: str | Path) -> bytes:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def sha256_of_pixels(images) -> bytes:
    """The SHA-256 of uint8 images (N, C, H, W) in C order."""
    return hashlib.sha256(np.ascontiguousarray(images.numpy()).tobytes()).digest()
