"""The file format of `genlab-codec`: a fixed header, the coded stream, a trailing digest.

    offset  size  field (little-endian)
    0       4     magic b"GLAC" (genlab autoregressive codec)
    4       2     format version (1)
    6       32    SHA-256 of the checkpoint file the images were coded with
    38      16    pixel head, ASCII, NUL-padded (softmax, bernoulli, logistic_mixture)
    54      6     image shape C, H, W (3 x uint16)
    60      4     number of images N (uint32)
    64      4     images per coding batch (uint32; the decoder must use the same batches)
    68      8     number of 32-bit words W of the coded stream (uint64)
    76      32    SHA-256 of the original pixels: uint8 (N, C, H, W), C order
    108     4 W   the range coder's stream, uint32 words
    ...     32    SHA-256 of every byte before it (a corrupted file is refused before decoding)

The header is 108 + 32 = 140 bytes per file, whatever the number of images.
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
VERSION = 1
HEADER = struct.Struct("<4sH32s16s3HIIQ32s")
DIGEST = 32
OVERHEAD_BYTES = HEADER.size + DIGEST


@dataclass(frozen=True)
class Container:
    """The contents of one compressed file (see the module docstring)."""

    checkpoint_sha256: bytes
    head: str
    shape: tuple[int, int, int]
    count: int
    batch_size: int
    words: np.ndarray  # uint32, the coded stream
    pixels_sha256: bytes

    def to_bytes(self) -> bytes:
        header = HEADER.pack(MAGIC, VERSION, self.checkpoint_sha256, self.head.encode("ascii"),
                             *self.shape, self.count, self.batch_size, len(self.words),
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
        if len(data) < OVERHEAD_BYTES or data[:4] != MAGIC:
            if data[:4] == MAGIC:
                raise GenlabError(f"{name} is truncated: it has {len(data)} bytes, fewer than the "
                                  f"{OVERHEAD_BYTES} of a genlab-codec header and digest. "
                                  "Nothing was decoded; use a complete copy of the file.")
            raise GenlabError(f"{name} is not a file written by `genlab-codec compress` (it does "
                              f"not start with {MAGIC!r}). Give a file that command wrote.")
        (_, version, ckpt_sha, head, c, h, w, count, batch, n_words,
         pixels_sha) = HEADER.unpack_from(data)
        if version != VERSION:
            raise GenlabError(f"{name} has format version {version}; this genlab reads version "
                              f"{VERSION}. Decompress it with the genlab release that wrote it.")
        expected = HEADER.size + 4 * n_words + DIGEST
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
        words = np.frombuffer(data, dtype="<u4", count=n_words, offset=HEADER.size)
        return cls(ckpt_sha, head.rstrip(b"\0").decode("ascii"), (c, h, w), count, batch,
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
