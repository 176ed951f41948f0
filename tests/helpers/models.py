"""Tiny instances of each family: a forward pass or training step takes milliseconds."""

from __future__ import annotations

from functools import partial

import torch

from genlab.models.autoencoder import Autoencoder
from genlab.models.ddpm import DDPM
from genlab.models.ebm import EBM, JEM
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


def tiny_ebm(**options) -> EBM:
    """16x16 single-channel images, a 2-level energy net of widths 4 and 8, a buffer of 64
    states, 3 Langevin steps everywhere; in eval mode."""
    settings = dict(image_shape=(1, 16, 16), channels=(4, 8), buffer_size=64, train_steps=3,
                    sample_steps=3, long_run_steps=5, inpaint_steps=3, denoise_steps=3,
                    optimizer=partial(torch.optim.Adam, lr=1e-3))
    settings.update(options)
    return EBM(**settings).eval()


def tiny_jem(**options) -> JEM:
    """tiny_ebm's settings as a 3-class JEM."""
    settings = dict(image_shape=(1, 16, 16), num_classes=3, channels=(4, 8), buffer_size=64,
                    train_steps=3, sample_steps=3, long_run_steps=5, inpaint_steps=3,
                    denoise_steps=3, alpha=0.0, optimizer=partial(torch.optim.Adam, lr=1e-3))
    settings.update(options)
    return JEM(**settings).eval()
