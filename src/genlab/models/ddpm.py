"""Denoising diffusion probabilistic model (Ho et al. 2020) with DDIM sampling (Song et al.
2020), classifier-free guidance (Ho & Salimans 2021), an EMA of the weights and the variational
bound as its likelihood. The maths lives in `genlab.maths.diffusion`, the network in
`genlab.nets.unet`.

Training minimises sum_t w_t || f_theta(x_t, t) - target ||^2 with t ~ U{0..T-1},
x_t ~ q(x_t | x_0) and target eps, x_0 or v; w_t = 1 is Ho et al.'s L_simple. Validation, test,
samples and tasks use the EMA weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

import torch

from genlab.checks import NonEmpty, OneOf, Range
from genlab.errors import GenlabError, check_choice
from genlab.maths.degradations import Operator
from genlab.maths.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    SCHEDULES,
    VARIANCES,
    WEIGHTINGS,
    GaussianDiffusion,
    ModelFn,
)
from genlab.maths.distributions import slerp
from genlab.models.base import GenerativeModule
from genlab.nets.ema import EMA
from genlab.nets.unet import UNet
from genlab.progress import Progress

log = logging.getLogger(__name__)
Probability = Annotated[float, Range(0, 1)]


class DDPM(GenerativeModule):
    """The test step logs the loss on every test image and the variational bound on the first
    `bound_images`: all T terms when `test_bound_terms` is None (`test/nll_nats`), else an
    unbiased stratified estimate from that many terms per image (`test/nll_nats_terms<N>`),
    the default at the end of training; evaluate.py uses all T (`full_evaluation`)."""

    has_likelihood = True
    accepts_dequantized_data = False
    evaluation_keys = frozenset({
        "sampler", "sampling_steps", "eta", "variance", "clip_denoised", "guidance_scale",
        "sample_batch_size", "inpaint_resample", "bound_images", "val_bound_terms",
        "test_bound_terms", "bound_batch_size"})
    full_evaluation = {"test_bound_terms": None}
    restoration_methods = {
        "inpaint": "RePaint resampling (Lugmayr et al. 2022)",
        "denoise": "reverse process from the timestep of matching noise",
        "restore": "DDNM null-space projection on DDIM steps (Wang et al. 2023)"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 # network
                 channels: Annotated[int, Range(2)] = 128,
                 channel_mults: Annotated[tuple[int, ...], NonEmpty, Range(1)] = (1, 2, 2, 2),
                 num_res_blocks: Annotated[int, Range(1)] = 2,
                 attention_resolutions: Annotated[tuple[int, ...], Range(1)] = (16,),
                 dropout: Annotated[float, Range(0, 1, high_open=True)] = 0.1,
                 num_heads: Annotated[int, Range(1)] = 1,
                 # diffusion and loss
                 timesteps: Annotated[int, Range(2)] = 1000,
                 schedule: Annotated[str, OneOf(SCHEDULES)] = "linear",
                 beta_start: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 1e-4,
                 beta_end: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.02,
                 prediction: Annotated[str, OneOf(PREDICTIONS)] = "eps",
                 weighting: Annotated[str, OneOf(WEIGHTINGS)] = "simple",
                 snr_gamma: Annotated[float, Range(0, low_open=True)] = 5.0,
                 label_dropout: Probability = 0.1,
                 # weight average
                 ema_decay: Probability = 0.9999, ema_warmup: bool = True,
                 ema_start_step: Annotated[int, Range(0)] = 0,
                 # sampling (all may be changed at evaluation time)
                 sampler: Annotated[str, OneOf(SAMPLERS)] = "ddim",
                 sampling_steps: Annotated[int, Range(1)] = 50, eta: Probability = 0.0,
                 variance: Annotated[str, OneOf(VARIANCES)] = "beta", clip_denoised: bool = True,
                 guidance_scale: Annotated[float, Range(0)] | None = None,
                 sample_batch_size: Annotated[int, Range(1)] = 256,
                 inpaint_resample: Annotated[int, Range(1)] = 5,
                 # the variational bound
                 bound_images: Annotated[int, Range(1)] = 16,
                 val_bound_terms: Annotated[int, Range(2)] | None = 20,
                 test_bound_terms: Annotated[int, Range(2)] | None = 50,
                 bound_batch_size: Annotated[int, Range(1)] = 256,
                 **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.weighting = check_choice("model.weighting", weighting, WEIGHTINGS)
        self.sampler = check_choice("model.sampler", sampler, SAMPLERS)
        self.variance = check_choice("model.variance", variance, VARIANCES)
        self.snr_gamma, self.label_dropout = snr_gamma, label_dropout
        self.sampling_steps, self.eta, self.clip_denoised = sampling_steps, eta, clip_denoised
        self.guidance_scale = self._check_guidance(guidance_scale)
        self.sample_batch_size, self.inpaint_resample = sample_batch_size, inpaint_resample
        self.bound_images, self.val_bound_terms = bound_images, val_bound_terms
        self.test_bound_terms, self.bound_batch_size = test_bound_terms, bound_batch_size
        c, size, _ = self.image_shape
        self.diffusion = GaussianDiffusion(timesteps, schedule, beta_start, beta_end, prediction)
        self.diffusion.sampling_timesteps("ddim", sampling_steps)  # checks the step count
        self.net = UNet(c, size, channels=channels, channel_mults=tuple(channel_mults),
                        num_res_blocks=num_res_blocks,
                        attention_resolutions=tuple(attention_resolutions), dropout=dropout,
                        num_heads=num_heads, num_classes=num_classes if conditional else 0)
        self.ema = EMA(self.net, ema_decay, ema_warmup, ema_start_step)
        self._bound_nats: list[torch.Tensor] = []
        self._bound_progress: Progress | None = None

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        timesteps, steps = model.get("timesteps", 1000), model.get("sampling_steps", 50)
        if isinstance(steps, int) and isinstance(timesteps, int) and steps > timesteps:
            raise GenlabError(f"model.sampling_steps={steps} is more than the "
                              f"model.timesteps={timesteps} of the diffusion: DDIM takes "
                              f"between 1 and T={timesteps} steps.")
        channels, mults = model.get("channels", 128), list(model.get("channel_mults") or [])
        if isinstance(channels, int) and channels % 2:
            raise GenlabError(f"model.channels={channels} must be even (the timestep "
                              "embedding has sin and cos halves).")
        heads = model.get("num_heads", 1)
        if isinstance(channels, int) and isinstance(heads, int):
            if bad := [channels * m for m in mults if (channels * m) % heads]:
                raise GenlabError(f"model.num_heads={heads} must divide every level's width "
                                  f"(model.channels x model.channel_mults); {bad[0]} is not "
                                  "divisible by it.")
        size, levels = data.get("image_size"), 2 ** max(len(mults) - 1, 0)
        if isinstance(size, int) and mults and size % levels:
            raise GenlabError(f"model.channel_mults={mults} halves the image {len(mults) - 1} "
                              f"times, so data.image_size must be a multiple of {levels}; it is "
                              f"{size}.")

    @property
    def timesteps(self) -> int:
        return self.diffusion.timesteps

    def _check_guidance(self, scale: float | None) -> float | None:
        if scale is not None and not self.conditional:
            raise GenlabError("Classifier-free guidance (guidance_scale) needs a class-conditional "
                              "model; this one was trained with model.conditional=false. Leave "
                              "guidance_scale unset (null).")
        return scale

    def denoiser(self, guidance_scale: float | None = None) -> ModelFn:
        """The EMA network as a ModelFn; with a guidance scale w, classifier-free guidance

            f = f(x_t, t, null) + w (f(x_t, t, y) - f(x_t, t, null)),
        so w = 1 is plain conditional sampling (w = 1 + Ho & Salimans's w)."""
        net = self.ema
        if self._check_guidance(guidance_scale) is None:
            return net

        def guided(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
            null = torch.full_like(labels, self.num_classes)
            both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
            conditional, unconditional = both.float().chunk(2)
            return unconditional + guidance_scale * (conditional - unconditional)
        return guided

    # -- training ----------------------------------------------------------------------------
    def _train_labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Labels for the network, each replaced by the null class with prob. label_dropout."""
        labels = self.condition(labels)
        if labels is None or not self.label_dropout:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def _loss(self, model_fn: ModelFn, x: torch.Tensor, labels: torch.Tensor | None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        t = torch.randint(0, self.timesteps, (len(x),), device=x.device, generator=generator)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return self.diffusion.training_loss(model_fn, x, labels, t, noise, self.weighting,
                                            self.snr_gamma).mean()

    def training_step(self, batch, batch_idx):
        x, labels = batch
        loss = self._loss(self.net, x, self._train_labels(labels))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.net, step=self.global_step)

    # -- validation and test: loss on every batch, the bound on the first bound_images -------
    def _evaluate(self, batch, batch_idx: int, stage: str, terms: int | None) -> None:
        x, labels = batch
        labels = self.condition(labels)
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        self.log(f"{stage}/loss", self._loss(self.ema, x, labels, generator), sync_dist=True)
        remaining = self.bound_images - sum(len(b) for b in self._bound_nats)
        if remaining > 0:
            y = None if labels is None else labels[:remaining]
            progress = self._bound_progress.update if self._bound_progress else None
            self._bound_nats.append(self.variational_bound(x[:remaining], y, terms, generator,
                                                           progress))

    def _log_bound(self, stage: str, name: str = "nll_nats") -> None:
        if self._bound_progress is not None:
            self._bound_progress.close()
            self._bound_progress = None
        if self._bound_nats:
            self.log_nll(stage, torch.cat(self._bound_nats), name)
        self._bound_nats = []

    @property
    def test_bound_name(self) -> str:
        """nll_nats for the exact bound (all T terms), nll_nats_terms<N> for the estimate."""
        terms = self.test_bound_terms
        return "nll_nats" if terms is None or terms >= self.timesteps else f"nll_nats_terms{terms}"

    def on_validation_epoch_start(self) -> None:
        self._bound_nats = []

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val", self.val_bound_terms)

    def on_validation_epoch_end(self) -> None:
        self._log_bound("val")

    def on_test_epoch_start(self) -> None:
        self._bound_nats = []
        terms = min(self.test_bound_terms or self.timesteps, self.timesteps)
        how = ("all T terms" if terms == self.timesteps
               else f"an unbiased estimate from {terms} of the T={self.timesteps} terms")
        log.info("test/%s, test/bpd: the variational bound with %s, on the first %d test "
                 "images (evaluate.py: all T terms)", self.test_bound_name, how,
                 self.bound_images)
        self._bound_progress = Progress(f"test/{self.test_bound_name}",
                                        self.bound_images * terms, "terms")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test", self.test_bound_terms)

    def on_test_epoch_end(self) -> None:
        self._log_bound("test", self.test_bound_name)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """A lower bound on log P(x) per image in nats: minus the full variational bound (all T
        terms, so T network evaluations per image)."""
        return -self.variational_bound(x, labels)

    @torch.no_grad()
    def variational_bound(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                          terms: int | None = None, generator: torch.Generator | None = None,
                          progress=None) -> torch.Tensor:
        """Per-image upper bound on -log P(x) in nats for 8-bit images x in [-1, 1]: all T terms
        (terms=None), or an unbiased stratified estimate from `terms` of them."""
        return self.diffusion.variational_bound(
            self.denoiser(), x, labels, self.variance, self.clip_denoised, terms,
            self.bound_batch_size, generator, progress)

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def _reverse(self, x: torch.Tensor, labels: torch.Tensor | None,
                 generator: torch.Generator | None, start: int | None = None,
                 known: tuple[torch.Tensor, torch.Tensor] | None = None, resample: int = 1,
                 clip: bool | None = None, sampler: str | None = None, steps: int | None = None,
                 eta: float | None = None, guidance_scale: float | None = None,
                 project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """The reverse process from x at timestep `start` (default T-1) down to the data, with
        the model's sampling settings unless sampler / steps / eta / guidance_scale are given."""
        sampler = check_choice("sampler", sampler or self.sampler, SAMPLERS)
        timesteps = self.diffusion.sampling_timesteps(
            sampler, self.sampling_steps if steps is None else steps, start)
        guidance_scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return self.diffusion.reverse(
            self.denoiser(guidance_scale), x, timesteps, self.condition(labels), sampler,
            self.eta if eta is None else eta, self.variance,
            self.clip_denoised if clip is None else clip, generator, known, resample, project)

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn((n, *self.image_shape), device=self.device, generator=generator)

    def sample_batches(self, n: int, labels: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, batch_size: int | None = None,
                       **options) -> Iterator[torch.Tensor]:
        """n samples in [-1, 1], in chunks of at most `batch_size` (default
        model.sample_batch_size) on the model's device. Move or save each chunk before taking
        the next, and 50k samples for FID never sit on the accelerator at once. `options`:
        sampler ("ddpm" | "ddim"), steps (DDIM), eta (DDIM), guidance_scale."""
        batch_size = batch_size or self.sample_batch_size
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            chunk_labels = None if labels is None else labels[start:start + size]
            yield self._reverse(self._noise(size, generator), chunk_labels, generator, **options)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """n images in [-1, 1] from the EMA network, drawn sample_batch_size at a time;
        `options` as for `sample_batches`."""
        return torch.cat(list(self.sample_batches(n, labels, generator, **options)))

    # -- tasks -------------------------------------------------------------------------------
    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, resample: int | None = None,
                **options) -> torch.Tensor:
        """Fill the pixels where mask = 0, keeping those where mask = 1 (outpainting is the same
        with the mask inverted): RePaint-style resampling (Lugmayr et al. 2022) over the model's
        sampler, `resample` (default inpaint_resample) passes per step; resample=1 is plain
        replacement."""
        known = (x, self.check_mask(x, mask))
        return self._reverse(self._noise(len(x), generator), labels, generator, known=known,
                             resample=resample or self.inpaint_resample, **options)

    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """Images consistent with noise-free measurements y = A(x) for any operator with a
        pseudo-inverse (`genlab.maths.degradations`): DDNM (Wang et al. 2023), DDIM sampling
        from noise in which every predicted x0 is replaced by its null-space projection
        x0 - A+(A(x0) - y), so the result has A(x) = y up to float rounding (exactly on the
        known pixels of a mask). `options` as for `sample_batches` (steps, eta, ...).
        Noisy measurements are refused (denoising: `denoise`)."""
        if operator.sigma > 0:
            raise GenlabError(f"The DDPM's restore (DDNM) needs noise-free measurements; this "
                              f"operator adds noise of sigma={operator.sigma}. Use denoise.")
        options.setdefault("sampler", "ddim")
        return self._reverse(self._noise(len(y), generator), labels, generator,
                             project=lambda x0: operator.project(x0, y), **options)

    def noise_level_timestep(self, sigma: float) -> int:
        """The t whose x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps has sigma_t closest to
        sigma, where sigma_t^2 = (1 - alpha_bar_t) / alpha_bar_t."""
        sigmas = (1 / self.diffusion.snr(torch.arange(self.timesteps, device=self.device))).sqrt()
        return int((sigmas - sigma).abs().argmin())

    @torch.no_grad()
    def denoise(self, y: torch.Tensor, sigma: float, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None, **options) -> torch.Tensor:
        """Denoise y = x + sigma n, n ~ N(0, I), at a known sigma (in [-1, 1] units): y scaled by
        sqrt(alpha_bar_t) is a draw of x_t at the matching t; the reverse process from there
        gives a sample of x given y (Kadkhodaie & Simoncelli 2021 use the same identity)."""
        if sigma <= 0:
            raise GenlabError(f"denoise needs a noise level sigma > 0; got {sigma}.")
        t = self.noise_level_timestep(sigma)
        xt = self.diffusion.at("alpha_bar", t, y).sqrt() * y
        return self._reverse(xt, labels, generator, start=t, **options)

    @torch.no_grad()
    def ddim_invert(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                    steps: int | None = None, guidance_scale: float | None = None
                    ) -> torch.Tensor:
        """x_0 -> x_{T-1} by the deterministic DDIM ODE (the inverse of eta = 0 sampling), with
        the classifier-free guidance that sampling uses (model.guidance_scale unless given)."""
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return self.diffusion.ddim_invert(self.denoiser(scale), x, self.condition(labels),
                                          steps or self.sampling_steps)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None, ddim_steps: int | None = None,
                    guidance_scale: float | None = None) -> torch.Tensor:
        """For pairs of images (B, C, H, W): DDIM-invert both, slerp between the two x_T and
        decode with eta = 0, both directions with the same guidance (model.guidance_scale
        unless given); (B * steps, C, H, W), one row of `steps` images per pair."""
        b = len(x0)
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        pair_labels = None if labels is None else labels.repeat(2)
        z = self.ddim_invert(torch.cat([x0, x1]), pair_labels, ddim_steps, scale).flatten(1)
        weights = torch.linspace(0, 1, steps, device=z.device)
        path = slerp(z[:b], z[b:], weights).reshape(b * steps, *self.image_shape)
        row_labels = None if labels is None else labels.repeat_interleave(steps)
        images = self._reverse(path, row_labels, None, sampler="ddim",
                               steps=ddim_steps or self.sampling_steps, eta=0.0, clip=False,
                               guidance_scale=scale)
        return images.clamp(-1, 1)
