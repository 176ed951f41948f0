"""Autoregressive coding of uint8 images with a PixelCNN and a range coder.

**Code length.** Sub-pixel t of an image (raster-then-channel order,
`genlab.maths.autoregressive`) is coded under q_t, the model's conditional p(x_t | x_<t)
quantized to integer frequencies by `constriction.stream.model.Categorical(perfect=False)`
(24-bit precision; every value keeps a nonzero frequency, so every image can be coded). A range
coder (`constriction.stream.queue.RangeEncoder`, first in first out) then spends

    L(x) = -sum_t log2 q_t(x_t)   bits (+ at most a few words for the end of the stream)

against the model's -log2 p(x) = -sum_t log2 p(x_t | x_<t): the overhead comes from the
quantization of p to q, the coder's finite precision and the file's fixed header
(`genlab.codec.container`).

**Identical probabilities.** Decoding is sequential: x_t is read back only once x_<t is
known. The encoder therefore runs the very loop the decoder runs (`PixelCNN.choose_sequentially`:
the sampling loop with the cached sampler, starting from zeros and writing each coded value
before the next step), on batches of the same size, in float32 on one CPU thread, and codes the
true value where the sampler would draw. Both see bit-identical conditionals, and the
quantization of identical floats is identical. Should a machine or a library compute them
differently, the decoded pixels fail the file's pixel SHA-256 and decompression is an error.

**Pixels.** A softmax or logistic-mixture head codes the 256 values of each sub-pixel; a
Bernoulli head (binarized MNIST) codes binary pixels, given as uint8 0 or 255 (what
`data.binarize` makes), two symbols per sub-pixel: the codec codes the binary pixels the model
sees, never 8-bit ones.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from genlab.codec.pixels import coder_probabilities, value_indices
from genlab.errors import GenlabError
from genlab.maths.autoregressive import pixel_index
from genlab.models.pixelcnn import PixelCNN

BATCH_SIZE = 64  # images coded together: the decoder's batches must be the encoder's


def symbols_of(model: PixelCNN, images: torch.Tensor) -> torch.Tensor:
    """The value index of every sub-pixel of uint8 images (N, C, H, W), in coding order: (N, D)
    with D = C H W, column t = (i W + j) C + c. Binary heads take 0 -> 0 and 255 -> 1."""
    indices = value_indices(images, model.image_shape, model.head.binary)
    return indices.permute(0, 2, 3, 1).reshape(len(images), -1)


def encode(model: PixelCNN, images: torch.Tensor, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The range coder's stream (uint32 words) of uint8 images (N, C, H, W), coded in batches
    of `batch_size` images."""
    symbols = symbols_of(model, images)
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    for begin in range(0, len(images), batch_size):
        part = symbols[begin:begin + batch_size]

        def choose(log_probs: torch.Tensor, t: int, part=part) -> torch.Tensor:
            encoder.encode(part[:, t].numpy().astype(np.int32), family,
                           coder_probabilities(log_probs))
            return part[:, t].to(log_probs.device)

        model.choose_sequentially(len(part), choose)
    return encoder.get_compressed()


def decode(model: PixelCNN, words: np.ndarray, count: int, batch_size: int = BATCH_SIZE
           ) -> torch.Tensor:
    """`count` uint8 images (N, C, H, W) read back from the stream `words` that `encode` wrote
    with the same model and `batch_size`."""
    decoder = constriction.stream.queue.RangeDecoder(words)
    family = constriction.stream.model.Categorical(perfect=False)

    def choose(log_probs: torch.Tensor, t: int) -> torch.Tensor:
        try:
            values = decoder.decode(family, coder_probabilities(log_probs))
        except Exception as err:  # constriction reports exhausted or invalid streams
            raise GenlabError(f"The coded stream cannot be decoded ({err}): it was not written "
                              "by this model. Decompress with the checkpoint it was compressed "
                              "with.") from None
        return torch.from_numpy(values.astype(np.int64)).to(log_probs.device)

    parts = []
    for begin in range(0, count, batch_size):
        n = min(batch_size, count - begin)
        parts.append(pixel_index(model.choose_sequentially(n, choose)).to(torch.uint8))
    return torch.cat(parts).cpu()
