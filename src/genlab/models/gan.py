"""Generative adversarial networks (Goodfellow et al. 2014): a generator G(z), z ~ N(0, I), and
a discriminator D(x) trained as a two-player game, with no likelihood.

    min_G max_D  E_x[log sigmoid D(x)] + E_z[log(1 - sigmoid D(G(z)))]
with G trained on the non-saturating -log sigmoid D(G(z)) instead, or the Wasserstein (with
gradient penalty) and hinge games of `genlab.maths.gan`. One training step (one batch) is
n_critic discriminator updates, each on its own 1/n_critic slice of the batch, then one
generator update (Lightning manual optimization). Lightning's global_step counts every
optimizer step, so
    trainer.max_steps = (n_critic + 1) x generator steps.
The generator's exponential moving average (`genlab.nets.ema.EMA`) makes the samples and the
evaluation when `ema_decay` is set.

Mixed precision: every backward goes through `manual_backward` and every update through the
LightningOptimizer's `step`, so with precision=16 the precision plugin scales each loss and
unscales, checks (skipping a step with inf/NaN gradients) and updates the one GradScaler at
each of the n_critic + 1 optimizer steps. The gradient penalties' inner input-gradient is
taken unscaled: it is O(1) in norm, far above fp16's underflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import torch
from torch import nn

from genlab.checks import OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.degradations import Operator
from genlab.maths.distributions import slerp
from genlab.maths.gan import LOSSES, gan_loss
from genlab.maths.inversion import latent_restoration
from genlab.maths.penalties import gradient_penalty, r1_penalty
from genlab.maths.random import seeded_generator
from genlab.models.base import GenerativeModule
from genlab.nets.augment import POLICIES, check_policies, diff_augment
from genlab.nets.ema import EMA
from genlab.nets.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
)

log = logging.getLogger(__name__)
ARCHITECTURES = {"dcgan": (DCGANGenerator, DCGANDiscriminator),
                 "resnet": (ResNetGenerator, ResNetDiscriminator)}


class GAN(GenerativeModule):
    """DCGAN- or ResNet-based GAN with a choice of loss, penalties, TTUR learning rates,
    generator EMA, DiffAugment and class conditioning (conditional BatchNorm in G, projection
    discriminator)."""

    has_likelihood = False
    # the discriminator step leaves G without gradients, the generator step D (toggled off)
    leaves_parameters_unused = True
    restoration_methods = {"restore": "GAN inversion: MAP latent optimisation from z = 0"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 architecture: Annotated[str, OneOf(ARCHITECTURES)] = "dcgan",
                 latent_dim: Annotated[int, Range(1)] = 100,
                 g_width: Annotated[int, Range(1)] = 128, d_width: Annotated[int, Range(1)] = 64,
                 spectral_norm: bool = False, d_batch_norm: bool = True,
                 loss: Annotated[str, OneOf(LOSSES)] = "non_saturating",
                 n_critic: Annotated[int, Range(1)] = 1,
                 gradient_penalty: Annotated[float, Range(0)] = 0.0,
                 r1_gamma: Annotated[float, Range(0)] = 0.0,
                 lr_g: Annotated[float, Range(0, low_open=True)] = 2e-4,
                 lr_d: Annotated[float, Range(0, low_open=True)] = 2e-4,
                 generator_batch_size: Annotated[int, Range(1)] | None = None,
                 ema_decay: Annotated[float, Range(0, 1)] | None = 0.999,
                 ema_start: Annotated[int, Range(0)] = 0,
                 augment: Annotated[Sequence[str], OneOf(POLICIES)] = (),
                 seed: Annotated[int, Range(0)] = 0, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        check_choice("model.architecture", architecture, ARCHITECTURES)
        if n_critic < 1:
            raise GenlabError(f"model.n_critic={n_critic}: the discriminator needs at least "
                              "one update per generator update.")
        d_penalized = gradient_penalty > 0 or r1_gamma > 0
        if architecture == "dcgan" and d_batch_norm and d_penalized:
            raise GenlabError("Gradient penalties are per image, but BatchNorm in the "
                              "discriminator mixes the images of a batch: set "
                              "model.d_batch_norm=false with model.gradient_penalty or "
                              "model.r1_gamma.")
        check_policies(augment)
        self.loss = gan_loss(loss)
        self.latent_dim, self.n_critic = latent_dim, n_critic
        self.gp_weight, self.r1_gamma = gradient_penalty, r1_gamma
        self.lr_g, self.lr_d = lr_g, lr_d
        self.generator_batch_size = generator_batch_size
        self.augment, self.seed = list(augment), seed

        c, size, _ = self.image_shape
        classes = num_classes if conditional else 0
        generator_cls, discriminator_cls = ARCHITECTURES[architecture]
        self.generator = generator_cls(latent_dim, c, size, g_width, classes)
        d_options = {"batch_norm": d_batch_norm} if architecture == "dcgan" else {}
        self.discriminator = discriminator_cls(c, size, d_width, classes,
                                               spectral_norm=spectral_norm, **d_options)
        self.ema = (EMA(self.generator, ema_decay, start_step=ema_start)
                    if ema_decay is not None else None)
        self.automatic_optimization = False

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        n_critic, batch = model.get("n_critic", 1), data.get("batch_size")
        if isinstance(n_critic, int) and isinstance(batch, int) and batch < n_critic:
            raise GenlabError(f"data.batch_size={batch} cannot be split over "
                              f"model.n_critic={n_critic} discriminator steps; raise "
                              "data.batch_size (or lower model.n_critic).")
        penalized = model.get("gradient_penalty", 0) or model.get("r1_gamma", 0)
        if (model.get("architecture", "dcgan") == "dcgan" and model.get("d_batch_norm", True)
                and penalized):
            raise GenlabError("Gradient penalties are per image, but BatchNorm in the "
                              "discriminator mixes the images of a batch: set "
                              "model.d_batch_norm=false with model.gradient_penalty or "
                              "model.r1_gamma.")
        size = data.get("image_size")
        if isinstance(size, int) and (size < 8 or size & (size - 1)):
            raise GenlabError(f"The GAN networks need square images whose side is a power of "
                              f"two of at least 8 (data.image_size=32 or 64); got {size}.")

    # -- the networks ------------------------------------------------------------------------
    @property
    def sampling_net(self) -> nn.Module:
        """The network that makes samples: the EMA generator when there is one."""
        return self.generator if self.ema is None else self.ema.averaged

    def latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device, generator=generator)

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """D's logits on x, after DiffAugment when it is on (training only); float32 also under
        autocast, so the losses and penalties are computed in float32."""
        if self.augment and self.training:
            x = diff_augment(x, self.augment, generator)
        return self.discriminator(x, labels).float()

    # -- training ----------------------------------------------------------------------------
    def configure_optimizers(self):
        """Adam (or model.optimizer) for G at lr_g and for D at lr_d (TTUR, Heusel et al.
        2017); the scheduler, when set, is stepped once per generator step for both."""
        optimizers = [self.make_optimizer(self.generator.parameters(), lr=self.lr_g),
                      self.make_optimizer(self.discriminator.parameters(), lr=self.lr_d)]
        if self.scheduler_factory is None:
            return optimizers
        return optimizers, [self.scheduler_factory(optimizer=opt) for opt in optimizers]

    def _step_generator(self, generator_step: int) -> torch.Generator:
        """All of a training step's noise comes from (seed, generator step), so a resumed run
        draws exactly what the uninterrupted run would have drawn."""
        return seeded_generator(self.seed, generator_step, device=self.device)

    def _discriminator_step(self, optimizer, real: torch.Tensor, labels: torch.Tensor | None,
                            rng: torch.Generator) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.generator(self.latents(len(real), rng), labels)
        d_real = self.discriminate(real, labels, rng)
        d_fake = self.discriminate(fake, labels, rng)
        loss = self.loss.discriminator(d_real, d_fake)
        stats = {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}

        def critic(x):
            return self.discriminate(x, labels, rng)

        if self.gp_weight > 0:
            stats["gp"] = gradient_penalty(critic, real, fake, rng)
            loss = loss + self.gp_weight * stats["gp"]
        if self.r1_gamma > 0:
            stats["r1"] = r1_penalty(critic, real)
            loss = loss + self.r1_gamma / 2 * stats["r1"]
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()
        stats = {key: value.detach() for key, value in stats.items()}
        return {"d_loss": loss.detach(), **stats}

    def _generator_step(self, optimizer, n: int, labels: torch.Tensor | None,
                        rng: torch.Generator) -> torch.Tensor:
        with self.toggled_optimizer(optimizer):  # D's weights need no gradient here
            fake = self.generator(self.latents(n, rng), labels)
            loss = self.loss.generator(self.discriminate(fake, labels, rng))
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
        return loss.detach()

    def training_step(self, batch, batch_idx):
        x, labels = batch
        labels = self.condition(labels)
        if len(x) < self.n_critic:
            raise GenlabError(f"A batch of {len(x)} images cannot be split over "
                              f"model.n_critic={self.n_critic} discriminator steps; raise "
                              "data.batch_size.")
        opt_g, opt_d = self.optimizers()
        generator_step = self.global_step // (self.n_critic + 1)
        rng = self._step_generator(generator_step)

        slices = zip(x.tensor_split(self.n_critic),
                     labels.tensor_split(self.n_critic) if labels is not None
                     else [None] * self.n_critic)
        per_step = [self._discriminator_step(opt_d, real, y, rng) for real, y in slices]
        stats = {f"train/{key}": torch.stack([s[key].float() for s in per_step]).mean()
                 for key in per_step[0]}

        n = self.generator_batch_size or len(x) // self.n_critic
        fake_labels = None
        if labels is not None:  # the data's class frequencies, resampled from the batch
            fake_labels = labels[torch.randint(len(labels), (n,), device=self.device,
                                               generator=rng)]
        stats["train/g_loss"] = self._generator_step(opt_g, n, fake_labels, rng).float()

        for scheduler in self.lr_schedulers() or []:  # one per optimizer, when configured
            scheduler.step()
        if self.ema is not None:
            self.ema.update(self.generator, step=generator_step)
        self._check_finite(stats, generator_step)
        shown = {"train/d_loss", "train/g_loss"}
        self.log_dict({k: v for k, v in stats.items() if k in shown}, prog_bar=True)
        self.log_dict({k: v for k, v in stats.items() if k not in shown})

    def _check_finite(self, stats: dict[str, torch.Tensor], generator_step: int) -> None:
        losses = torch.stack([stats["train/d_loss"], stats["train/g_loss"]])
        if not torch.isfinite(losses).all():
            d_loss, g_loss = losses.tolist()
            raise GenlabError(f"The GAN diverged at generator step {generator_step} (trainer "
                              f"step {self.global_step}, epoch {self.current_epoch}): "
                              f"d_loss={d_loss}, g_loss={g_loss}. Lower model.lr_g and "
                              "model.lr_d, regularize D (model.spectral_norm=true, "
                              "model.r1_gamma=1) or use precision=32.")

    def compile_networks(self) -> None:
        """torch.compile G, its EMA and D in place; D stays eager under a gradient penalty or
        R1, whose double backward torch.compile does not support."""
        for module in self.children():
            if module is self.discriminator and (self.gp_weight > 0 or self.r1_gamma > 0):
                log.info("Not compiling the discriminator: its gradient penalty needs a double "
                         "backward, which torch.compile does not support.")
                continue
            module.compile()

    # -- evaluation --------------------------------------------------------------------------
    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        """D on held-out real images and on as many samples (from fixed noise per batch):
        mean logits and D's loss, a measure of how well D still tells them apart."""
        x, labels = batch
        labels = self.condition(labels)
        rng = torch.Generator(device=self.device).manual_seed(batch_idx)
        fake = self.sample(len(x), labels, rng)
        d_real, d_fake = self.discriminate(x, labels), self.discriminate(fake, labels)
        self.log_dict({f"{stage}/d_real": d_real.mean(), f"{stage}/d_fake": d_fake.mean(),
                       f"{stage}/d_loss": self.loss.discriminator(d_real, d_fake)},
                      sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images for latents z (B, latent_dim), from the sampling network in eval mode."""
        return self.sampling_net(z, self.condition(labels)).float()

    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for z ~ N(0, I)."""
        return self.generate(self.latents(n, generator), labels)

    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """GAN inversion: G at the MAP latent of y under the N(0, I) prior, from z = 0 (there is
        no encoder) (`genlab.maths.inversion.latent_restoration`)."""
        condition = self.condition(labels)
        return latent_restoration(lambda z: self.sampling_net(z, condition).float(), y,
                                  operator, torch.zeros(len(y), self.latent_dim, device=y.device))

    def interpolate_latents(self, z0: torch.Tensor, z1: torch.Tensor, steps: int = 8,
                            labels: torch.Tensor | None = None) -> torch.Tensor:
        """For pairs of latents (B, latent_dim): images along the great circle between them;
        (B * steps, C, H, W), one row of `steps` images per pair."""
        t = torch.linspace(0, 1, steps, device=z0.device)
        return self.generate(slerp(z0, z1, t).flatten(0, 1),
                             None if labels is None else labels.repeat_interleave(steps))
