"""Normalizing flows, RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018), trained by
exact maximum likelihood on dequantized 8-bit images: an invertible network maps an image x to a
code z of the same dimension D, and

    log p(x) = log N(z; 0, I) + log |det dz/dx|          (`genlab.maths.flows`)
with the layers and the multi-scale architecture in `genlab.nets.flows`. The 8-bit image u is
recovered from the batch (grid values or data.dequantize=true values alike) and dequantized
here, uniformly (Theis et al. 2016) or by a learned q(v|u) (Flow++, Ho et al. 2019), so the
loss and every bits/dim are upper bounds on the discrete NLL on the 8-bit scale:

    -log P(u) <= E_q[-log p(x) + log q(v|u)] + D log 128,     x = (u + v)/128 - 1.
Validation uses one dequantization sample per image (fixed noise per batch); the test split and
`log_prob` use `test_dequant_samples` samples in the importance-weighted bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import torch
from torch import nn

from genlab.checks import OneOf, Range
from genlab.data.transforms import to_model_range, to_uint8
from genlab.errors import GenlabError, check_choice
from genlab.maths.bpd import bits_per_dim
from genlab.maths.degradations import Operator
from genlab.maths.flows import change_of_variables, dequantized_bound
from genlab.maths.inversion import latent_restoration
from genlab.models.base import GenerativeModule
from genlab.nets.flows import MultiScaleFlow, VariationalDequantizer

PERMUTATIONS = ("lu", "conv", "reverse")
COUPLINGS = ("affine", "additive")
DEQUANTIZATIONS = ("uniform", "variational")
Count = Annotated[int, Range(0)]


def check_levels(levels: int, top_checkerboard_steps: int, size: tuple[int, int]) -> None:
    """Every level but a RealNVP checkerboard top halves the image: its sides must divide."""
    h, w = size
    squeezes = levels - (1 if top_checkerboard_steps else 0)
    if h % 2 ** squeezes or w % 2 ** squeezes:
        raise GenlabError(f"model.levels={levels} halves the {h}x{w} images {squeezes} "
                          f"times, so their sides must be divisible by {2 ** squeezes}. "
                          "Use fewer levels or another data.image_size.")


class Flow(GenerativeModule):
    """A multi-scale flow (RealNVP's checkerboard and channel couplings, or Glow's steps of
    ActNorm, invertible 1x1 convolution and coupling) with learned split priors, a learned
    (optionally class-conditional) top prior and uniform or variational dequantization.

    The code of an image (`encode`) is the whole standardized latent, (B, C*H*W): standard
    normal under the model, decoded exactly by `decode`; samples at temperature T decode
    z ~ N(0, T^2 I).

    The test step logs the plain one-sample bound (`test_dequant_samples=1`, as cheap as
    validation and the number the papers report); evaluate.py keeps it unless asked for the
    importance-weighted bound (+model.test_dequant_samples=K), so there is no `full_evaluation`.
    """

    has_likelihood = True
    # The 8-bit image is recovered from the batch (to_uint8) and dequantized here, so
    # data.dequantize=true gives the same bits/dim (never a second dequantization).
    accepts_dequantized_data = True
    evaluation_keys = frozenset({"test_dequant_samples", "importance_batch", "temperature"})
    restoration_methods = {"restore": "MAP latent optimisation from the code of A+(y)"}

    def __init__(self, image_shape: Annotated[tuple[int, int, int], Range(1)],
                 num_classes: Annotated[int, Range(0)] = 0, conditional: bool = False,
                 # architecture
                 levels: Annotated[int, Range(1)] = 3, steps: Count = 8,
                 checkerboard_steps: Count = 0, top_checkerboard_steps: Count = 0,
                 width: Annotated[int, Range(1)] = 64, res_blocks: Count = 0,
                 coupling: Annotated[str, OneOf(COUPLINGS)] = "affine",
                 permutation: Annotated[str, OneOf(PERMUTATIONS)] = "lu",
                 logit_alpha: Annotated[float, Range(0, 0.5, low_open=True, high_open=True)]
                 | None = None,
                 learn_top: bool = True,
                 # dequantization and the likelihood
                 dequantization: Annotated[str, OneOf(DEQUANTIZATIONS)] = "uniform",
                 dequant_steps: Annotated[int, Range(1)] = 4,
                 dequant_width: Annotated[int, Range(1)] = 32,
                 test_dequant_samples: Annotated[int, Range(1)] = 1,
                 importance_batch: Annotated[int, Range(1)] = 1024,
                 # sampling
                 temperature: Annotated[float, Range(0)] = 1.0,
                 **base):
        super().__init__(image_shape, num_classes, conditional, **base)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        check_choice("model.coupling", coupling, COUPLINGS)
        check_choice("model.permutation", permutation, PERMUTATIONS)
        check_choice("model.dequantization", dequantization, DEQUANTIZATIONS)
        check_levels(levels, top_checkerboard_steps, self.image_shape[1:])
        self.test_dequant_samples, self.temperature = test_dequant_samples, temperature
        self.importance_batch = importance_batch
        self.flow = MultiScaleFlow(
            self.image_shape, levels, steps, checkerboard_steps, top_checkerboard_steps, width,
            res_blocks, coupling, permutation, logit_alpha, learn_top,
            num_classes if conditional else 0)
        self.dequantizer = (VariationalDequantizer(self.image_shape[0], dequant_width,
                                                   dequant_steps)
                            if dequantization == "variational" else None)

    @classmethod
    def check_config(cls, model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        super().check_config(model, data)
        size, levels = data.get("image_size"), model.get("levels", 3)
        if isinstance(size, int) and isinstance(levels, int):
            check_levels(levels, model.get("top_checkerboard_steps", 0), (size, size))

    # -- the likelihood ----------------------------------------------------------------------
    def _dequantize(self, u: torch.Tensor, noise: torch.Tensor, watch=None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x = (u + v)/128 - 1 in u's bins and log q(v|u) per image: v = noise for uniform
        dequantization (log q = 0), v = the dequantizer's sample for noise ~ N(0, I) else."""
        if self.dequantizer is None:
            x = to_model_range(u, dequantize=True, noise=noise)
            return x, torch.zeros(len(u), device=u.device, dtype=x.dtype)
        v, log_q = self.dequantizer(to_model_range(u).to(noise.dtype), noise, watch)
        return to_model_range(u, dequantize=True, noise=v), log_q

    def _noise(self, u: torch.Tensor, dtype: torch.dtype,
               generator: torch.Generator | None) -> torch.Tensor:
        draw = torch.rand if self.dequantizer is None else torch.randn
        return draw(u.shape, device=u.device, dtype=dtype, generator=generator)

    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None, samples: int = 1,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Upper bound on -log P(u) in nats per image for the 8-bit images u of x (images in
        [-1, 1], on the grid or dequantized): one dequantization sample, or the
        importance-weighted bound over `samples`, importance_batch images x samples per pass."""
        u = to_uint8(x)
        per_pass = max(1, min(samples, self.importance_batch // len(x)))
        log_weights = []
        for start in range(0, samples, per_pass):
            k = min(per_pass, samples - start)
            repeated = None if labels is None else labels.repeat(k)
            log_weights.append(self._log_weights(u.repeat(k, 1, 1, 1), repeated, generator)
                               .view(k, len(x)))
        return dequantized_bound(torch.cat(log_weights), self.num_dims)

    def _log_weights(self, u: torch.Tensor, labels: torch.Tensor | None,
                     generator: torch.Generator | None) -> torch.Tensor:
        """log p(x) - log q(v|u) per image for one dequantization x of each u."""
        noise = self._noise(u, torch.promote_types(self.dtype, torch.float32), generator)
        x, log_q = self._dequantize(u, noise)
        z, logdet = self.flow(x, labels)
        if not (torch.isfinite(z).all() & torch.isfinite(logdet).all()
                & torch.isfinite(log_q).all()):
            self._raise_non_finite(u, noise, labels)
        return change_of_variables(z, logdet) - log_q

    @torch.no_grad()
    def _raise_non_finite(self, u: torch.Tensor, noise: torch.Tensor,
                          labels: torch.Tensor | None) -> None:
        """Run the same pass again layer by layer and name the first layer whose output or
        log-determinant is not finite."""
        names = {module: name for name, module in self.named_modules()}

        def watch(layer: nn.Module, y: torch.Tensor, logdet: torch.Tensor) -> None:
            for what, value in (("output", y), ("log-determinant", logdet)):
                if not torch.isfinite(value).all():
                    kind = "nan" if torch.isnan(value).any() else "inf"
                    raise GenlabError(
                        f"The flow's {what} became {kind} in layer {names[layer]} "
                        f"({type(layer).__name__}) at training step {self.global_step} (epoch "
                        f"{self.current_epoch}). Lower the learning rate, clip gradients "
                        "(trainer.gradient_clip_val, e.g. 50), use precision=32, or make the "
                        "couplings additive (model.coupling=additive).")

        x_deq, _ = self._dequantize(u, noise, watch)
        self.flow(x_deq, labels, watch)
        raise GenlabError(f"The flow's log-density became non-finite at training step "
                          f"{self.global_step} (epoch {self.current_epoch}), although every "
                          "layer's output is finite on a second pass. Lower the learning rate "
                          "or use precision=32.")

    # -- training and evaluation -------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, labels = batch
        loss = bits_per_dim(self.nll(x, self.condition(labels)).mean(), self.num_dims)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, batch_idx: int, stage: str, samples: int) -> None:
        x, labels = batch
        generator = torch.Generator(device=x.device).manual_seed(batch_idx)
        nll = self.nll(x, self.condition(labels), samples, generator)
        self.log(f"{stage}/loss", bits_per_dim(nll.mean(), self.num_dims), sync_dist=True)
        self.log_nll(stage, nll)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val", 1)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test", self.test_dequant_samples)

    # -- capabilities ------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """A lower bound on log P(u) per image in nats for the 8-bit images u of x: the flow's
        density is exact, the bound comes only from dequantization (importance-weighted over
        test_dequant_samples samples; tight as that number grows)."""
        return -self.nll(x, self.condition(labels), self.test_dequant_samples, generator)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The code z = f(x) of images x in [-1, 1] as given (no dequantization noise), (B, D):
        every level's standardized latent, flattened; decode inverts it exactly."""
        return self.flow(x.to(self.dtype), self.condition(labels))[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images x = f^-1(z) for codes (B, D), clipped to [-1, 1]."""
        return self.flow.inverse(z.to(self.dtype), self.condition(labels)).clamp(-1, 1)

    @torch.no_grad()
    def restore(self, y: torch.Tensor, operator: Operator, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """f^-1 of the MAP code of y under the flow's N(0, I) prior, from the code of A+(y)
        clipped to [-1, 1], the flow's domain (a noisy y leaves it, and its code would not be
        finite) (`genlab.maths.inversion.latent_restoration`)."""
        condition = self.condition(labels)
        return latent_restoration(
            lambda z: self.flow.inverse(z.to(self.dtype), condition).float(), y, operator,
            self.encode(operator.pinv(y).clamp(-1, 1), labels))

    @torch.no_grad()
    def sample_at_temperature(self, n: int, temperature: float,
                              labels: torch.Tensor | None = None,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ N(0, T^2 I): T = 1 is the model's distribution, T < 1
        trades diversity for fidelity (Kingma & Dhariwal 2018, sec. 5), T = 0 the mode of every
        level's conditional prior."""
        z = torch.randn(n, self.num_dims, device=self.device, generator=generator)
        return self.decode(temperature * z, labels)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images at model.temperature."""
        return self.sample_at_temperature(n, self.temperature, labels, generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """decode(encode(x)): x again, up to float rounding."""
        return self.decode(self.encode(x, labels), labels)

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """For pairs of images (B, C, H, W): images along the straight line between their
        codes; (B * steps, C, H, W), one row of `steps` images per pair."""
        b = len(x0)
        pair_labels = None if labels is None else labels.repeat(2)
        z = self.encode(torch.cat([x0, x1]), pair_labels)
        t = torch.linspace(0, 1, steps, device=z.device, dtype=z.dtype)[None, :, None]
        path = (1 - t) * z[:b, None] + t * z[b:, None]
        row_labels = None if labels is None else labels.repeat_interleave(steps)
        return self.decode(path.flatten(0, 1), row_labels)
