"""Autoencoders as representation learners: plain, denoising (Vincent et al. 2008) and
contractive (Rifai et al. 2011), one LightningModule behind model=ae, model=dae and model=cae.

An encoder f maps an image to a code z = f(x) (D numbers), a decoder g maps the code to the
parameters of a pixel likelihood p(x | g(z)) (`genlab.maths.distributions.PixelLikelihood`, the
VAE's), and training minimises the reconstruction NLL plus the family's regulariser:

    ae    -log p(x | g(f(x)))
    dae   -log p(x | g(f(x~))),  x~ ~ C(x~ | x)   the corruption (`genlab.maths.autoencoder`),
          in training only; with walkback_steps K > 1 the K states of the walk-back chain
          (Bengio et al. 2013) started at x, each reconstructing x
    cae   -log p(x | g(f(x))) + lambda ||J_f(x)||_F^2   (`genlab.maths.penalties`): the exact
          Jacobian (torch.func, D backward passes) or its random-projection estimate
The options combine (a contractive DAE is corruption and contraction both set).

There is no likelihood of the data (has_likelihood = False): the reconstruction NLL is logged,
not bits/dim. Samples, where they are honest:
    code_gaussian  decode z ~ N(m, S), a Gaussian fitted to the codes of training images (the
                   first code_fit_images, refitted at the start of every validation run, so
                   every checkpoint and sample grid carries the current one): a simple density
                   on codes, not a model of the data the autoencoder was trained to be
    walkback       the DAE's Markov chain: from uniform noise, chain_steps rounds of corruption
                   and a draw from P(X | x~); the decoder's mean image at the last state
Capabilities: encode (the code), decode (the mean image), reconstruct, interpolate (straight
lines between codes), denoise (one reconstruction of the noisy image, for every variant, so their
gains compare), sample; tasks reconstruct, interpolate, denoise, edit.
Class-conditional (model.conditional=true): the decoder sees the label, the code does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any

import torch
from torch import nn

from genlab.checks import NonEmpty, OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.autoencoder import CORRUPTIONS, check_corruption, corrupt, walkback_chain
from genlab.maths.degradations import Operator
from genlab.maths.distributions import PixelLikelihood
from genlab.maths.inversion import latent_restoration
from genlab.maths.penalties import jacobian_frobenius_sq, jacobian_frobenius_sq_estimate
from genlab.models.base import GenerativeModule, encode_all, interpolate_codes
from genlab.nets.conv import ConvDecoder, ConvEncoder, check_conv_config

SAMPLERS = ("code_gaussian", "walkback")
JACOBIANS = ("exact", "estimate")


class Autoencoder(GenerativeModule):
    has_likelihood = False
    # the reconstruction NLL is the discretized likelihood of the 8-bit grid, as the VAE's
    accepts_dequantized_data = False
    # how samples are made; everything else shapes or trains the network
    evaluation_keys = frozenset({"sampler", "chain_steps"})
    restoration_methods = {"denoise": "one reconstruction pass",
                           "restore": "MAP latent optimisation from the code of A+(y), the "
                                      "fitted code Gaussian as prior"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 code_dim: Annotated[int, Range(1)] = 32,
                 channels: Annotated[tuple[int, ...], NonEmpty, Range(4)] = (32, 64, 128),
                 likelihood: Annotated[str, OneOf(PixelLikelihood.NAMES)] = "logistic",
                 corruption: Annotated[str, OneOf(CORRUPTIONS)] | None = None,
                 corruption_level: Annotated[float, Range(0)] = 0.0,
                 walkback_steps: Annotated[int, Range(1)] = 1,
                 contraction: Annotated[float, Range(0)] = 0.0,
                 jacobian: Annotated[str, OneOf(JACOBIANS)] = "estimate",
                 projections: Annotated[int, Range(1)] = 1, relative_contraction: bool = False,
                 sampler: Annotated[str, OneOf(SAMPLERS)] = "code_gaussian",
                 chain_steps: Annotated[int, Range(1)] = 100,
                 code_fit_images: Annotated[int, Range(2)] = 10000, **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.pixels = PixelLikelihood(likelihood)
        if corruption is not None:
            check_corruption(corruption, corruption_level)
        self.sampler = check_choice("model.sampler", sampler, SAMPLERS)
        self.jacobian = check_choice("model.jacobian", jacobian, JACOBIANS)
        self._check_counts(code_dim=code_dim, walkback_steps=walkback_steps,
                           projections=projections, chain_steps=chain_steps,
                           code_fit_images=code_fit_images)
        self._check_chain(corruption, walkback_steps, sampler)
        if contraction < 0:
            raise GenlabError(f"model.contraction={contraction}: the weight of the contractive "
                              "penalty must be >= 0 (0: off).")
        self.code_dim, self.likelihood = code_dim, likelihood
        self.corruption, self.corruption_level = corruption, corruption_level
        self.walkback_steps, self.contraction, self.projections = (walkback_steps, contraction,
                                                                   projections)
        self.relative_contraction = relative_contraction
        self.chain_steps, self.code_fit_images = chain_steps, code_fit_images
        c, size, _ = self.image_shape
        self.encoder = ConvEncoder(c, size, tuple(channels))
        self.to_code = nn.Linear(self.encoder.out_features, code_dim)
        cond = num_classes if conditional else 0
        self.decoder = ConvDecoder(code_dim + cond, self.pixels.channels(c), size,
                                   tuple(channels))
        # the code Gaussian of sampler=code_gaussian: mean and Cholesky factor of the covariance
        self.register_buffer("code_mean", torch.zeros(code_dim))
        self.register_buffer("code_scale_tril", torch.eye(code_dim))
        self.register_buffer("code_fitted", torch.tensor(False))

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        check_conv_config(model, data)
        corruption = model.get("corruption")
        if corruption is not None:
            check_corruption(corruption, model.get("corruption_level", 0.0))
        cls._check_chain(corruption, model.get("walkback_steps", 1),
                         model.get("sampler", "code_gaussian"))
        batch = data.get("batch_size")
        if (model.get("relative_contraction") and model.get("contraction", 0) > 0
                and isinstance(batch, int) and batch < 2):
            raise GenlabError(f"model.relative_contraction=true divides by the spread of the "
                              f"codes over the batch, which needs data.batch_size >= 2; it is "
                              f"{batch}.")

    @staticmethod
    def _check_chain(corruption: str | None, walkback_steps: int, sampler: str) -> None:
        if corruption is None and (walkback_steps > 1 or sampler == "walkback"):
            raise GenlabError("model.walkback_steps > 1 and model.sampler=walkback run the "
                              "denoising chain, which needs a corruption: set model.corruption "
                              "(gaussian, masking or salt_and_pepper) or use model=dae.")

    @staticmethod
    def _check_counts(**counts: int) -> None:
        for name, value in counts.items():
            if value < 1:
                raise GenlabError(f"model.{name}={value} must be a positive count.")

    # -- the networks ------------------------------------------------------------------------
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the code (B, code_dim), float32 (also under autocast), differentiable."""
        return self.to_code(self.encoder(x)).float()

    def decoder_params(self, z: torch.Tensor, labels: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """g(z): the pixel likelihood's parameters for codes z (float32)."""
        return self.decoder(self.with_labels(z, self.condition(labels))).float()

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x~ ~ C(x~ | x), the model's corruption."""
        return corrupt(x, self.corruption, self.corruption_level, generator)

    def _resample(self, x: torch.Tensor, labels: torch.Tensor | None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from P(X | x~): the pixel likelihood at the reconstruction of x~."""
        return self.pixels.sample(self.decoder_params(self.code(x), labels), generator)

    def contraction_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """||J_f(x)||_F^2 per image, exact or estimated (model.jacobian); with
        relative_contraction, ||diag(1/s) J_f(x)||_F^2 with s the per-dimension standard
        deviation of the batch's codes (in the graph: the penalty does not change when the code
        is rescaled)."""
        fn = self.code
        if self.relative_contraction:
            spread = self.code(x).std(0).clamp(min=1e-6)  # a constant unit: no NaN
            fn = lambda images: self.code(images) / spread  # noqa: E731
        if self.jacobian == "exact":
            return jacobian_frobenius_sq(fn, x)
        return jacobian_frobenius_sq_estimate(fn, x, self.projections)

    # -- training and evaluation -------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, labels = batch
        labels = self.condition(labels)
        self.pixels.check_input(x)
        inputs = x
        if self.corruption is not None:
            with torch.no_grad():  # the chain's states are inputs; nothing is trained through it
                inputs = torch.cat(list(walkback_chain(
                    x, self.corrupt, partial(self._resample, labels=labels),
                    self.walkback_steps)))
        k = len(inputs) // len(x)
        repeated = None if labels is None else labels.repeat(k)
        z = self.code(inputs)
        recon = -self.pixels.log_prob(x.repeat(k, 1, 1, 1), self.decoder_params(z, repeated))
        loss = recon.mean()
        stats = {"train/recon_nll": loss.detach(), "train/code_rms": z.detach().square().mean()
                 .sqrt()}
        if self.contraction > 0:
            penalty = self.contraction_penalty(x).mean()
            loss = loss + self.contraction * penalty
            stats["train/contraction"] = penalty.detach()
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(stats)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        """The reconstruction NLL and squared error of clean images (no corruption)."""
        x, labels = batch
        params = self.decoder_params(self.code(x), labels)
        recon = -self.pixels.log_prob(x, params)
        mse = (self.pixels.mean(params) - x).square().flatten(1).mean(1)
        self.log_dict({f"{stage}/loss": recon.mean(), f"{stage}/recon_nll": recon.mean(),
                       f"{stage}/mse": mse.mean()}, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        """Refit the code Gaussian to the current codes of the first code_fit_images training
        images (the same images on every rank, so every rank fits the same Gaussian)."""
        datamodule = self.trainer.datamodule
        if datamodule is not None:
            images, labels = datamodule.splits["train"]
            n = self.code_fit_images
            self.fit_code_distribution(encode_all(
                self, images[:n], labels[:n] if self.conditional else None, datamodule))

    @torch.no_grad()
    def fit_code_distribution(self, codes: torch.Tensor) -> None:
        """Fit the Gaussian N(m, S) of sampler=code_gaussian to codes (N, code_dim): their mean
        and covariance (with a jitter of 1e-6 of the mean variance, so few codes still give a
        proper Cholesky factor)."""
        codes = codes.double()
        mean = codes.mean(0)
        centred = codes - mean
        cov = centred.T @ centred / max(len(codes) - 1, 1)
        jitter = 1e-6 * cov.diagonal().mean().clamp(min=1e-12)
        cov = cov + jitter * torch.eye(self.code_dim, dtype=cov.dtype, device=cov.device)
        self.code_mean.copy_(mean)
        self.code_scale_tril.copy_(torch.linalg.cholesky(cov))
        self.code_fitted.fill_(True)

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The code f(x) (B, code_dim); labels are not used (the code never sees them)."""
        return self.code(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image for codes z (B, code_dim), in [-1, 1]."""
        return self.pixels.mean(self.decoder_params(z, labels))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """decode(encode(x)): the mean image of p(x | g(f(x)))."""
        return self.decode(self.encode(x), labels)

    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """For pairs of images (B, C, H, W): images along the straight line between their
        codes; (B * steps, C, H, W), one row of `steps` images per pair."""
        return interpolate_codes(self, x0, x1, steps, labels)

    @torch.no_grad()
    def denoise(self, y: torch.Tensor, sigma: float, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The reconstruction of the noisy images y = x + sigma * noise (one pass; a DAE was
        trained for its own corruption and level, which `sigma` does not change)."""
        if not sigma > 0:
            raise GenlabError(f"denoise needs a noise level sigma > 0; got {sigma}.")
        return self.reconstruct(y, labels)

    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder mean at the MAP code of y from the code of A+(y)
        (`genlab.maths.inversion.latent_restoration`), under the fitted code Gaussian
        N(m, L L^T) as the prior, ||L^-1 (z - m)||^2 / 2 (no prior before it is fitted)."""
        def prior(z: torch.Tensor) -> torch.Tensor:
            white = torch.linalg.solve_triangular(self.code_scale_tril,
                                                  (z - self.code_mean).T, upper=False)
            return 0.5 * white.pow(2).sum(0)

        return latent_restoration(lambda z: self.pixels.mean(self.decoder_params(z, labels)),
                                  y, operator, self.encode(operator.pinv(y)),
                                  prior if self.code_fitted else None)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images by model.sampler: decoded draws from the fitted code Gaussian, or the
        walk-back chain (see the module docstring)."""
        if self.sampler == "walkback":
            return self.walkback_sample(n, labels, generator)
        if not self.code_fitted:
            raise GenlabError("This autoencoder has no fitted code distribution: it is fitted "
                              "at the start of every validation run in training, so a model "
                              "that was never validated has none. Validate it once (or call "
                              "fit_code_distribution with codes of training images).")
        eps = torch.randn(n, self.code_dim, device=self.device, generator=generator)
        return self.decode(self.code_mean + eps @ self.code_scale_tril.T, labels)

    @torch.no_grad()
    def walkback_sample(self, n: int, labels: torch.Tensor | None = None,
                        generator: torch.Generator | None = None,
                        steps: int | None = None) -> torch.Tensor:
        """The walk-back chain from uniform noise for `steps` (default chain_steps) rounds; the
        decoder's mean image at the last corrupted state."""
        x = torch.rand((n, *self.image_shape), device=self.device, generator=generator) * 2 - 1
        for state in walkback_chain(x, partial(self.corrupt, generator=generator),
                                    partial(self._resample, labels=labels, generator=generator),
                                    steps or self.chain_steps):
            x = state
        return self.pixels.mean(self.decoder_params(self.code(x), labels))
