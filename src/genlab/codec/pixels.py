"""uint8 pixels <-> the value indices an entropy coder codes, shared by both coders."""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import GenlabError


def value_indices(images: torch.Tensor, image_shape: tuple[int, int, int], binary: bool
                  ) -> torch.Tensor:
    """The value index of every pixel channel of uint8 images (N, C, H, W), as int64: the
    8-bit value itself, or for a binary (Bernoulli) likelihood 0 -> 0 and 255 -> 1. A
    GenlabError for images of another shape than the model's, or 8-bit images given to a
    binary likelihood."""
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise GenlabError(f"The images are {tuple(images.shape[1:])} (C, H, W), but the model "
                          f"was trained on {tuple(image_shape)}: compress images of the "
                          "model's shape (e.g. MNIST padded to 32x32 as genlab's data reader "
                          "serves it).")
    if not binary:
        return images.long()
    if not ((images == 0) | (images == 255)).all():
        raise GenlabError("This model has a Bernoulli likelihood: it gives probabilities to "
                          "binary pixels only, so it can compress only images whose pixels "
                          "are all 0 or 255 (binarized, as data.binarize makes them). "
                          "Binarize the images first (genlab-codec compress ... --binarize), "
                          "or use a model with an 8-bit likelihood (a softmax or "
                          "logistic-mixture PixelCNN, a logistic or Gaussian VAE).")
    return images.long() // 255


def to_uint8(indices: torch.Tensor, binary: bool) -> torch.Tensor:
    """The inverse of `value_indices`: uint8 pixels of value indices."""
    return (indices * 255 if binary else indices).to(torch.uint8)


def coder_probabilities(log_probs: torch.Tensor) -> np.ndarray:
    """Log-probabilities (..., V) as the float64 probability table that constriction's
    `Categorical(perfect=False)` rescales to integer frequencies summing to 2^24, none zero."""
    return np.ascontiguousarray(log_probs.double().exp().cpu().numpy())
