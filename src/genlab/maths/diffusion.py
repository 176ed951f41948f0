"""Gaussian diffusion (Sohl-Dickstein et al. 2015; Ho et al. 2020): schedules, the forward
process, the reverse-process samplers and the variational bound, all independent of the network.

Timestep indices t = 0 .. T-1 stand for the paper's steps 1 .. T. With alpha_bar_t =
prod_{s<=t} (1 - beta_s):

    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, beta~_t I),
        c0_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t),
        ct_t = sqrt(1 - beta_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t),
        beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)       (Ho et al. eq. 6-7)
with alpha_bar_{-1} = 1 (index -1 is the data). The network predicts eps, x_0 or
v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022); all three convert to
the pair (x_0, eps) through x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

A `ModelFn` maps (x_t, t, labels) to the network's raw prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from genlab.errors import GenlabError, check_choice
from genlab.maths.distributions import discretized_gaussian_log_prob, normal_kl
from genlab.maths.random import randn_like

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("simple", "min_snr")
VARIANCES = ("beta", "posterior")
SAMPLERS = ("ddpm", "ddim")

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def beta_schedule(name: str, timesteps: int, beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> torch.Tensor:
    """betas (float64, length T).

    linear: evenly spaced from beta_start to beta_end (Ho et al. 2020).
    cosine: alpha_bar(t) = f(t) / f(0), f(t) = cos(((t / T + s) / (1 + s)) pi / 2)^2, s = 0.008,
            beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1) clipped at 0.999 (Nichol & Dhariwal 2021,
            eq. 17).
    """
    check_choice("model.schedule", name, SCHEDULES)
    if name == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


class GaussianDiffusion(nn.Module):
    """The schedule's constants as (non-persistent) buffers, so they follow the model's device."""

    def __init__(self, timesteps: int = 1000, schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction: str = "eps"):
        super().__init__()
        self.timesteps = timesteps
        self.prediction = check_choice("model.prediction", prediction, PREDICTIONS)
        betas = beta_schedule(schedule, timesteps, beta_start, beta_end)
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        posterior_var = betas * (1 - alpha_bar_prev) / (1 - alpha_bar)
        constants = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "posterior_var": posterior_var,
            # beta~_0 = 0: the log uses beta~_1 at t = 0, as the decoder's variance
            "posterior_log_var": torch.log(torch.cat([posterior_var[1:2], posterior_var[1:]])),
            "beta_log_var": torch.log(torch.cat([posterior_var[1:2], betas[1:]])),
            "posterior_coef_x0": alpha_bar_prev.sqrt() * betas / (1 - alpha_bar),
            "posterior_coef_xt": (1 - betas).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }
        for name, value in constants.items():
            self.register_buffer(name, value.float(), persistent=False)

    def at(self, name: str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Constant `name` at timesteps t, shaped to broadcast against `like` (B, ...)."""
        values = getattr(self, name)
        if isinstance(t, int):
            t = torch.full((like.shape[0],), t, device=values.device, dtype=torch.long)
        return values[t].view(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t)."""
        alpha_bar = self.alpha_bar[t]
        return alpha_bar / (1 - alpha_bar)

    # -- forward process ---------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor
                 ) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        alpha_bar = self.at("alpha_bar", t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(x_{t-1} | x_t, x_0) (log beta~_1 stands in at t = 0)."""
        mean = self.at("posterior_coef_x0", t, x0) * x0 + self.at("posterior_coef_xt", t, xt) * xt
        return mean, self.at("posterior_log_var", t, xt)

    # -- parameterisations -------------------------------------------------------------------
    def to_x0_eps(self, output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor | int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_0, eps) from the network's prediction of eps, x_0 or v at x_t."""
        a = self.at("alpha_bar", t, xt).sqrt()
        s = (1 - self.at("alpha_bar", t, xt)).sqrt()
        if self.prediction == "eps":
            return (xt - s * output) / a, output
        if self.prediction == "x0":
            return output, (xt - a * output) / s
        return a * xt - s * output, s * xt + a * output

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network regresses: eps, x_0 or v."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        alpha_bar = self.at("alpha_bar", t, x0)
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0

    def loss_weight(self, t: torch.Tensor, weighting: str, gamma: float = 5.0) -> torch.Tensor:
        """Per-example weight of the squared error in the network's own target.

        simple: 1 (L_simple of Ho et al.). min_snr: min(SNR, gamma) expressed as an x_0 loss
        (Hang et al. 2023), i.e. divided by SNR for eps and by SNR + 1 for v targets.
        """
        if weighting == "simple":
            return torch.ones_like(t, dtype=torch.float32)
        snr = self.snr(t)
        clipped = snr.clamp(max=gamma)
        return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[self.prediction]

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None,
                      t: torch.Tensor, noise: torch.Tensor, weighting: str = "simple",
                      gamma: float = 5.0) -> torch.Tensor:
        """Weighted mean squared error of the prediction, per image."""
        output = model_fn(self.q_sample(x0, t, noise), t, labels)
        error = (output.float() - self.target(x0, noise, t)).pow(2).flatten(1).mean(1)
        return self.loss_weight(t, weighting, gamma) * error

    # -- reverse process ---------------------------------------------------------------------
    def p_mean_log_var(self, model_fn: ModelFn, xt: torch.Tensor, t: torch.Tensor | int,
                       labels: torch.Tensor | None, variance: str, clip: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(x_{t-1} | x_t) = N(posterior mean at the predicted x_0, sigma_t^2 I) with
        sigma_t^2 = beta_t ("beta") or beta~_t ("posterior"); returns mean, log sigma^2, x_0."""
        t = t if torch.is_tensor(t) else torch.full((len(xt),), t, device=xt.device)
        x0, _ = self.to_x0_eps(model_fn(xt, t, labels).float(), xt, t)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.q_posterior(x0, xt, t)
        log_var_name = "beta_log_var" if variance == "beta" else "posterior_log_var"
        return mean, self.at(log_var_name, t, xt), x0

    def ddpm_step(self, model_fn: ModelFn, xt: torch.Tensor, t: int,
                  labels: torch.Tensor | None, variance: str = "beta", clip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral step x_t -> x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al. Algorithm 2); the mean
        alone at t = 0."""
        mean, log_var, _ = self.p_mean_log_var(model_fn, xt, t, labels, variance, clip)
        if t == 0:
            return mean
        return mean + (0.5 * log_var).exp() * randn_like(xt, generator)

    def ddim_step(self, model_fn: ModelFn, xt: torch.Tensor, t: int, t_prev: int,
                  labels: torch.Tensor | None, eta: float = 0.0, clip: bool = True,
                  generator: torch.Generator | None = None,
                  project: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> torch.Tensor:
        """x_t -> x_s for any s < t (s = -1: the data), Song et al. 2020 eq. 12:

            x_s = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps + sigma z,
            sigma = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s),   a = alpha_bar.
        eta = 0 is deterministic; eta = 1 with s = t - 1 is the ancestral step with beta~_t.
        `project` maps the predicted x0 before it is used, keeping the network's eps: with
        the null-space projection of a degradation (`Operator.project`) this is DDNM (Wang et
        al. 2023, Algorithm 1 on DDIM steps), and the last step (s = -1) returns the projected
        x0 itself, consistent with the measurements.
        """
        tt = torch.full((len(xt),), t, device=xt.device, dtype=torch.long)
        x0, eps = self.to_x0_eps(model_fn(xt, tt, labels).float(), xt, tt)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (xt - self.at("alpha_bar", t, xt).sqrt() * x0) / (
                1 - self.at("alpha_bar", t, xt)).sqrt()
        if project is not None:
            x0 = project(x0)
        a_t = float(self.alpha_bar[t])
        a_s = float(self.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma ** 2, 0.0)) * eps
        return x + sigma * randn_like(xt, generator) if sigma > 0 else x

    def renoise(self, x: torch.Tensor, t_prev: int, t: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x_s -> x_t ~ q(x_t | x_s) for s < t: N(sqrt(a_t / a_s) x_s, (1 - a_t / a_s) I)."""
        a_t = float(self.alpha_bar[t])
        a_s = float(self.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
        return math.sqrt(a_t / a_s) * x + math.sqrt(1 - a_t / a_s) * randn_like(x, generator)

    def sampling_timesteps(self, sampler: str, steps: int | None = None, start: int | None = None
                           ) -> list[int]:
        """Descending timesteps from `start` (default T-1) to 0: every one for "ddpm", `steps`
        evenly spaced ones (rounded, both ends included) for "ddim"."""
        check_choice("sampler", sampler, SAMPLERS)
        start = self.timesteps - 1 if start is None else start
        if sampler == "ddpm":
            return list(range(start, -1, -1))
        steps = self.timesteps if steps is None else steps
        if not 1 <= steps <= self.timesteps:
            raise GenlabError(f"DDIM needs between 1 and T={self.timesteps} steps; got {steps}.")
        steps = min(steps, start + 1)
        return torch.linspace(start, 0, steps, dtype=torch.float64).round().long().tolist()

    def reverse(self, model_fn: ModelFn, x: torch.Tensor, timesteps: list[int],
                labels: torch.Tensor | None, sampler: str = "ddim", eta: float = 0.0,
                variance: str = "beta", clip: bool = True,
                generator: torch.Generator | None = None,
                known: tuple[torch.Tensor, torch.Tensor] | None = None,
                resample: int = 1,
                project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Run the reverse process from x at timesteps[0] down to the data.

        With `known` = (x_0, mask), pixels where mask = 1 are replaced before every step by
        q(x_t | x_0) of the known image (the replacement method of Song et al. 2021), and each
        step is repeated `resample` times, re-noising x_{t-1} -> x_t in between (RePaint,
        Lugmayr et al. 2022, jump length 1) so the generated region harmonises with the known one.
        `project` (DDIM only) maps each predicted x0, see `ddim_step`.
        """
        if project is not None and sampler != "ddim":
            raise GenlabError(f"The projection sampler runs on DDIM steps; got sampler={sampler}.")
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            repeats = resample if known is not None and t_prev >= 0 else 1
            for r in range(repeats):
                if known is not None:
                    x0, mask = known
                    noisy = self.q_sample(x0, t, randn_like(x0, generator))
                    x = mask * noisy + (1 - mask) * x
                if sampler == "ddpm":
                    x_prev = self.ddpm_step(model_fn, x, t, labels, variance, clip, generator)
                else:
                    x_prev = self.ddim_step(model_fn, x, t, t_prev, labels, eta, clip, generator,
                                            project)
                if r + 1 < repeats:
                    x = self.renoise(x_prev, t_prev, t, generator)
            x = x_prev
        if known is not None:
            x = known[1] * known[0] + (1 - known[1]) * x
        return x

    def ddim_invert(self, model_fn: ModelFn, x0: torch.Tensor, labels: torch.Tensor | None,
                    steps: int) -> torch.Tensor:
        """Deterministic DDIM encoding x_0 -> x_{T-1}: the eta = 0 update run upwards over the
        sampler's timesteps, with eps taken at the current point (Song et al. 2020, sec. 4.3)."""
        ascending = self.sampling_timesteps("ddim", steps)[::-1]
        x = x0
        # step i reads eps at the current level: t = 0 for the data itself, as the sampler's last
        # step from t = 0 to the data does
        for t_here, t_next in zip([0, *ascending], ascending):
            tt = torch.full((len(x),), t_here, device=x.device, dtype=torch.long)
            x0_pred, eps = self.to_x0_eps(model_fn(x, tt, labels).float(), x, tt)
            a_next = float(self.alpha_bar[t_next])
            x = math.sqrt(a_next) * x0_pred + math.sqrt(1 - a_next) * eps
        return x

    # -- the variational bound ---------------------------------------------------------------
    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per image."""
        t = self.timesteps - 1
        alpha_bar = self.at("alpha_bar", t, x0)
        kl = normal_kl(alpha_bar.sqrt() * x0, (1 - alpha_bar).log().expand_as(x0),
                       torch.zeros_like(x0), torch.zeros_like(x0))
        return kl.flatten(1).sum(1)

    def bound_terms(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor,
                    labels: torch.Tensor | None, variance: str, clip: bool,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Per image, in nats: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0
        and the decoder term L_0 = -log p(x_0 | x_1) for t = 0, the discretized Gaussian of
        Ho et al. eq. 13 (x_0 must sit on the 8-bit grid)."""
        xt = self.q_sample(x0, t, randn_like(x0, generator))
        mean, log_var, _ = self.p_mean_log_var(model_fn, xt, t, labels, variance, clip)
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).sum(1)
        decoder_nll = -discretized_gaussian_log_prob(x0, mean, 0.5 * log_var)
        return torch.where(t == 0, decoder_nll, kl)

    def bound_timesteps(self, terms: int | None, images: int, device: torch.device,
                        generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (K, images) at which to evaluate the bound and the weight (K,) of each row.

        All T with weight 1 when `terms` is None or >= T: the exact bound. Otherwise t = 0 and,
        per image, one t drawn uniformly in each of terms - 1 equal strata of 1..T-1, weighted
        by the stratum's size: an unbiased estimate of the sum over all T terms.
        """
        if terms is None or terms >= self.timesteps:
            t = torch.arange(self.timesteps, device=device)[:, None].expand(-1, images)
            return t, torch.ones(self.timesteps, device=device)
        if terms < 2:
            raise GenlabError(f"The bound needs at least 2 terms per image; got {terms}.")
        edges = torch.linspace(1, self.timesteps, terms, device=device).round().long()
        sizes = edges[1:] - edges[:-1]
        u = torch.rand(terms - 1, images, device=device, generator=generator)
        t = torch.cat([torch.zeros(1, images, device=device, dtype=torch.long),
                       edges[:-1, None] + (u * sizes[:, None]).long()])
        return t, torch.cat([torch.ones(1, device=device), sizes.float()])

    def variational_bound(self, model_fn: ModelFn, x0: torch.Tensor,
                          labels: torch.Tensor | None = None, variance: str = "beta",
                          clip: bool = True, terms: int | None = None, batch_size: int = 256,
                          generator: torch.Generator | None = None,
                          progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """-log P(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0 per image, in nats (Ho et al. eq. 5),
        evaluated on `batch_size` (image, timestep) pairs at a time; `progress(n)` is told of
        each network call's n pairs."""
        b = len(x0)
        t_all, weights = self.bound_timesteps(terms, b, x0.device, generator)
        total = self.prior_kl(x0)
        rows = max(1, batch_size // b)
        for start in range(0, len(t_all), rows):
            t = t_all[start:start + rows]
            xs = x0.repeat(len(t), *([1] * (x0.dim() - 1)))
            ys = None if labels is None else labels.repeat(len(t))
            values = self.bound_terms(model_fn, xs, t.reshape(-1), ys, variance, clip, generator)
            total = total + (values.view(len(t), b) * weights[start:start + rows, None]).sum(0)
            if progress is not None:
                progress(t.numel())
        return total

