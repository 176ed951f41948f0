"""Tiny instances of each family: a forward pass or training step takes milliseconds."""

from __future__ import annotations

from functools import partial

import torch

from genlab.models.autoencoder import Autoencoder
from genlab.models.ddpm import DDPM
from genlab.models.flow import Flow
from genlab.models.gan import GAN
from genlab.models.vae import VAE


def small_vae(**options) -> VAE:
    settings = dict(image_shape=(1, 32, 32), latent_dim=4, channels=(8, 16),
                    test_importance_samples=8)
    settings.update(options)
    return VAE(**settings)


def tiny_ddpm(**options) -> DDPM:
    """16x16 single-channel images, an 8-channel UNet, 4 DDIM steps; in eval mode."""
    settings = dict(image_shape=(1, 16, 16), channels=8, channel_mults=(1, 2), num_res_blocks=1,
                    attention_resolutions=(8,), dropout=0.0, sampling_steps=4)
    settings.update(options)
    return DDPM(**settings).eval()


def tiny_gan(**options) -> GAN:
    """16x16 single-channel images and 8-channel nets, 3 classes."""
    settings = dict(image_shape=(1, 16, 16), num_classes=3, latent_dim=8, g_width=8,
                    d_width=8, optimizer=partial(torch.optim.Adam, betas=(0.5, 0.9)))
    settings.update(options)
    return GAN(**settings)


def tiny_flow(**options) -> Flow:
    """8x8 single-channel images, a two-level Glow with two steps per level and 8-channel
    coupling networks."""
    settings = dict(image_shape=(1, 8, 8), levels=2, steps=2, width=8)
    settings.update(options)
    return Flow(**settings)


def tiny_autoencoder(**options) -> Autoencoder:
    """16x16 single-channel images, 4- and 8-channel nets, a 3-number code; in eval mode."""
    settings = dict(image_shape=(1, 16, 16), code_dim=3, channels=(4, 8), chain_steps=3)
    settings.update(options)
    return Autoencoder(**settings).eval()
