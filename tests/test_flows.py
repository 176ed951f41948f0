"""Normalizing flows: every layer's log-determinant against the autograd Jacobian and its exact
inverse, the dequantization bound against the exact 8-bit likelihood, the density integrating to
one, ActNorm's initialisation (checkpoints, DDP), float32 under bf16, the non-finite guard, and
the capabilities and tasks of the Flow model."""

from __future__ import annotations

import io
import math

import pytest
import torch
from helpers.models import tiny_flow
from helpers.runs import SMALL_RUN, fake_data_overrides
from torch import nn

from genlab.data.transforms import to_model_range, to_uint8
from genlab.errors import GenlabError
from genlab.maths.bpd import bits_per_dim
from genlab.maths.flows import change_of_variables, standardize
from genlab.models.flow import Flow
from genlab.nets.flows import (
    ActNorm,
    ChannelReverse,
    Coupling,
    InvertibleConv1x1,
    Logit,
    MultiScaleFlow,
    SplitPrior,
    Squeeze,
    TopPrior,
    VariationalDequantizer,
)
from genlab.tasks import TaskInputs, offered, run_task


class WithArgs(nn.Module):
    """A layer that takes fixed extra arguments (labels, conditioning features), as a plain
    forward(x) / inverse(y) layer; the arguments' first row is repeated over the batch."""

    def __init__(self, layer: nn.Module, arg: torch.Tensor):
        super().__init__()
        self.layer, self.arg = layer, arg

    def _arg(self, x: torch.Tensor) -> torch.Tensor:
        arg = self.arg.to(x.dtype) if self.arg.is_floating_point() else self.arg
        return arg[:1].expand(len(x), *arg.shape[1:])

    def forward(self, x):
        return self.layer(x, self._arg(x))

    def inverse(self, y):
        return self.layer.inverse(y, self._arg(y))


LAYERS = {
    "squeeze": (lambda: Squeeze(), (2, 4, 4)),
    "channel_reverse": (lambda: ChannelReverse(), (3, 2, 2)),
    "actnorm": (lambda: ActNorm(3), (3, 3, 3)),
    "conv1x1_lu": (lambda: InvertibleConv1x1(4, lu=True), (4, 2, 2)),
    "conv1x1_plain": (lambda: InvertibleConv1x1(4, lu=False), (4, 2, 2)),
    "coupling_channel_affine": (lambda: Coupling(5, "channel", width=8, res_blocks=1), (5, 3, 3)),
    "coupling_channel_additive": (lambda: Coupling(4, "channel", width=8, additive=True),
                                  (4, 3, 3)),
    "coupling_checkerboard_even": (lambda: Coupling(2, "checkerboard", 0, 8, res_blocks=1),
                                   (2, 3, 3)),
    "coupling_checkerboard_odd": (lambda: Coupling(2, "checkerboard", 1, 8), (2, 3, 3)),
    "coupling_checkerboard_additive": (lambda: Coupling(1, "checkerboard", 0, 8, additive=True),
                                       (1, 4, 4)),
    "coupling_conditioned": (lambda: WithArgs(Coupling(2, "checkerboard", 0, 8, cond_channels=3),
                                              torch.randn(1, 3, 3, 3)), (2, 3, 3)),
    "logit": (lambda: Logit(0.05), (2, 3, 3)),
    "split_prior": (lambda: SplitPrior(5), (5, 2, 2)),
    "top_prior_conditional": (lambda: WithArgs(TopPrior((3, 2, 2), True, 4), torch.tensor([2])),
                              (3, 2, 2)),
    "glow": (lambda: MultiScaleFlow((2, 4, 4), levels=2, steps=2, width=8), (2, 4, 4)),
    "realnvp": (lambda: MultiScaleFlow((1, 4, 4), levels=2, steps=2, checkerboard_steps=2,
                                       top_checkerboard_steps=2, width=8, res_blocks=1,
                                       permutation="reverse", logit_alpha=0.05, learn_top=False),
                (1, 4, 4)),
    "glow_conditional_additive_plain_conv": (
        lambda: WithArgs(MultiScaleFlow((3, 4, 4), levels=2, steps=1, width=8, coupling="additive",
                                        permutation="conv", num_classes=3), torch.tensor([1])),
        (3, 4, 4)),
}


def perturbed(make, shape, dtype=torch.float64, seed=0, batch=6, noise=0.03):
    """The layer in `dtype`, its ActNorms initialised on a random batch, every parameter then
    moved off its initial value (the zero-initialised convolutions would make couplings
    trivial), in eval mode; and the batch."""
    torch.manual_seed(seed)
    layer = make().to(dtype).train()
    x = torch.rand(batch, *shape, dtype=dtype) * 2 - 1
    layer(x)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(noise * torch.randn_like(p))
    return layer.eval(), x


def jacobian_log_abs_det(fn, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of fn at each image of x, by torch.autograd.functional.jacobian."""
    def flat(v, shape=x.shape[1:]):
        return fn(v.view(1, *shape)).flatten()
    return torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(
        flat, image.flatten()))[1] for image in x])


# -- layers and whole flows: log-determinant and inverse -----------------------------------------
@pytest.mark.parametrize("name", LAYERS)
def test_log_determinant_matches_the_autograd_jacobian_in_float64(name):
    layer, x = perturbed(*LAYERS[name])
    y, logdet = layer(x[:3])
    assert logdet.shape == (3,) and logdet.dtype == torch.float64
    expected = jacobian_log_abs_det(lambda v: layer(v)[0], x[:3])
    assert torch.allclose(logdet, expected, atol=1e-6, rtol=0), (logdet, expected)
    if name not in ("squeeze", "channel_reverse", "coupling_channel_additive",
                    "coupling_checkerboard_additive"):  # volume-preserving by design
        assert logdet.abs().max() > 1e-3  # a real test: the layer does change volume


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_undoes_forward_in_float64_and_float32(name):
    layer, x = perturbed(*LAYERS[name])
    y = layer(x)[0]
    assert (layer.inverse(y) - x).abs().max() < 1e-10
    assert (y - x.reshape(y.shape)).abs().max() > 1e-3 or name in ("squeeze",)
    layer32, x32 = perturbed(*LAYERS[name], dtype=torch.float32)
    assert (layer32.inverse(layer32(x32)[0]) - x32).abs().max() < 1e-4


def test_the_whole_model_log_density_and_inverse_match_autograd():
    """The Flow model's network with variational dequantization and a class-conditional prior:
    change of variables on the code equals log N(z) + log |det J| of the autograd Jacobian."""
    model = tiny_flow(image_shape=(1, 4, 4), num_classes=3, conditional=True,
                      dequantization="variational").double()
    layer, x = perturbed(lambda: WithArgs(model.flow, torch.tensor([2])), (1, 4, 4))
    z, logdet = layer(x[:2])
    assert z.shape == (2, 16)
    expected = jacobian_log_abs_det(lambda v: layer(v)[0], x[:2])
    assert torch.allclose(logdet, expected, atol=1e-6, rtol=0)
    assert torch.allclose(change_of_variables(z, logdet),
                          -0.5 * (z**2).sum(1) - 8 * math.log(2 * math.pi) + expected)
    assert (layer.inverse(z) - x[:2]).abs().max() < 1e-10


def test_lu_convolution_log_determinant_is_hw_times_slogdet_of_its_matrix():
    for lu in (True, False):
        conv, x = perturbed(lambda lu=lu: InvertibleConv1x1(6, lu=lu), (6, 3, 5))
        weight = conv.matrix()
        y, logdet = conv(x)
        assert torch.allclose(logdet, 15 * torch.linalg.slogdet(weight)[1].expand(6), atol=1e-12)
        assert torch.allclose(y, torch.einsum("oc,bchw->bohw", weight, x), atol=1e-12)
    fresh = InvertibleConv1x1(6)  # starts as a rotation: log-det 0, W W^T = I
    assert torch.allclose(fresh.matrix() @ fresh.matrix().T, torch.eye(6), atol=1e-5)
    assert abs(float(fresh.log_abs_det())) < 1e-5


def test_the_variational_dequantizer_density_is_exact():
    """log q(v | u) = log N(eps) - log |det dv/deps| by the autograd Jacobian, and v in (0, 1)."""
    dequantizer, _ = perturbed(lambda: WithArgs(VariationalDequantizer(2, width=8, steps=3),
                                                torch.rand(1, 2, 4, 4) * 2 - 1), (2, 4, 4))
    eps = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    grid = dequantizer.arg.double().expand(3, -1, -1, -1)
    v, log_q = dequantizer.layer(grid, eps)
    assert ((v > 0) & (v < 1)).all()
    log_det = jacobian_log_abs_det(lambda e: dequantizer.layer(grid[:1], e)[0], eps)
    normal = -0.5 * (eps**2).flatten(1).sum(1) - 16 * math.log(2 * math.pi)
    assert torch.allclose(log_q, normal - log_det, atol=1e-8)


def test_standardizing_is_the_gaussian_log_density():
    z, mean, log_std = torch.randn(3, 4, 2, 2).double().unbind(0)
    eps, logdet = standardize(z[None], mean[None], log_std[None])
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).sum()
    assert torch.allclose(change_of_variables(eps, logdet), expected[None])


# -- the likelihood on the 8-bit scale -----------------------------------------------------------
def identity_flow(**options) -> Flow:
    """A flow of one squeeze and the learned top prior (zero-initialised: N(0, I)): the density
    of x is the prior's."""
    return Flow((1, 2, 2), levels=1, steps=0, **options).double()


U = torch.tensor([[[[0, 17], [128, 255]]]], dtype=torch.uint8)


@pytest.mark.parametrize("samples", [1, 2])
def test_bits_per_dim_of_a_standard_normal_by_hand(samples):
    model = identity_flow()
    x = to_model_range(U).double()  # grid values: the model recovers U from them
    nll = model.nll(x, samples=samples, generator=torch.Generator().manual_seed(3))
    noise = torch.rand(samples, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    log_densities = []
    for k in range(samples):  # log N(x; 0, I) of x = (u + U)/128 - 1, by hand
        xs = [(int(u) + float(n)) / 128 - 1 for u, n in zip(U.flatten(), noise[k])]
        log_densities.append(sum(-0.5 * v * v - 0.5 * math.log(2 * math.pi) for v in xs))
    log_mean = math.log(sum(math.exp(d) for d in log_densities) / samples)
    by_hand = -log_mean + 4 * math.log(128)  # + D log 128: bins of width 2/256
    assert nll.item() == pytest.approx(by_hand, abs=1e-9)
    assert float(bits_per_dim(nll, 4)) == pytest.approx(by_hand / (4 * math.log(2)), abs=1e-9)
    dequantized = to_model_range(U, dequantize=True).double()  # data.dequantize=true: the same
    assert model.nll(dequantized, samples=samples,
                     generator=torch.Generator().manual_seed(3)).item() == pytest.approx(by_hand)


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_dequantization_bounds_approach_the_exact_8bit_likelihood(dequantization):
    """A prior N(0, 0.01^2) puts P(u) = Phi(b/s) - Phi(a/s) on the bin [a, b) of u: both
    dequantizations give a bound below it, and K = 4000 importance samples close the gap (for
    the untrained logit-normal q(v|u) the importance weights are heavy-tailed: only most of
    the gap, within Monte Carlo scatter)."""
    torch.manual_seed(0)
    model = identity_flow(dequantization=dequantization, dequant_width=4, dequant_steps=2,
                          test_dequant_samples=4000)
    with torch.no_grad():
        model.flow.top.log_std.fill_(math.log(0.01))
    u = torch.tensor([[[[126, 127], [128, 130]]]], dtype=torch.uint8)
    normal = torch.distributions.Normal(0.0, 0.01)
    a, b = u.double() / 128 - 1, (u.double() + 1) / 128 - 1
    exact = torch.log(normal.cdf(b) - normal.cdf(a)).sum()
    x = to_model_range(u).double()
    single = -model.nll(x.expand(2000, -1, -1, -1)).mean()  # E[one-sample bound]
    weighted = model.log_prob(x)
    if dequantization == "uniform":
        assert single < exact - 0.05  # the plain bound is loose here ...
        assert abs(weighted - exact) < 0.01  # ... the importance-weighted one tight
    else:
        assert single < exact - 1.0
        assert single + 0.7 < weighted < exact + 0.2


def test_dequantized_images_stay_in_their_8bit_bins():
    model = tiny_flow(dequantization="variational").double()
    u = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    noise = model._noise(u, torch.float64, torch.Generator().manual_seed(0))
    x, log_q = model._dequantize(u, noise)
    assert torch.equal(to_uint8(x), u) and torch.isfinite(log_q).all()


def test_the_density_integrates_to_one():
    """A flow on 2x2 images (D = 4): squeeze, two Glow steps, a split with its conditional
    prior, two checkerboard couplings and the learned top prior, integrated by the midpoint
    rule on a 20^4 grid over [-4, 4]^4."""
    model = Flow((1, 2, 2), levels=2, steps=2, top_checkerboard_steps=2, width=4)
    flow, _ = perturbed(lambda: model.flow, (1, 2, 2), seed=1, batch=512)
    n, half_width = 20, 4.0
    h = 2 * half_width / n
    axis = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    grid = torch.cartesian_prod(axis, axis, axis, axis).view(-1, 1, 2, 2)
    with torch.no_grad():
        total = sum(change_of_variables(*flow(chunk)).exp().sum()
                    for chunk in grid.split(40_000)) * h**4
    assert float(total) == pytest.approx(1.0, abs=1e-3)


# -- ActNorm ------------------------------------------------------------------------------------
def test_actnorm_initialises_to_zero_mean_and_unit_variance_once():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + 3
    norm = ActNorm(3).train()
    y, _ = norm(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert bool(norm.initialized)
    before = [p.clone() for p in norm.parameters()]
    norm(x * 10 - 4)  # later batches do not re-initialise
    assert all(torch.equal(a, b) for a, b in zip(before, norm.parameters()))
    assert not bool(ActNorm(3).eval()(x)[0].ne(x).any())  # identity until initialised


def test_actnorm_initialisation_survives_a_checkpoint_round_trip():
    torch.manual_seed(0)
    model = tiny_flow().train()
    model.training_step((torch.rand(8, 1, 8, 8) * 2 - 1, torch.zeros(8, dtype=torch.long)), 0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert any(k.endswith("initialized") for k in model.state_dict())
    other = (torch.rand(8, 1, 8, 8) - 0.9, torch.zeros(8, dtype=torch.long))

    def actnorm_params(m):
        return [p.clone() for mod in m.modules() if isinstance(mod, ActNorm)
                for p in mod.parameters()]

    reloaded = tiny_flow()
    buffer.seek(0)
    reloaded.load_state_dict(torch.load(buffer))
    reloaded.train().training_step(other, 0)
    assert all(torch.equal(a, b) for a, b in zip(actnorm_params(model),
                                                 actnorm_params(reloaded)))
    fresh = tiny_flow()
    fresh.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.endswith("initialized")}, strict=False)
    fresh.train().training_step(other, 0)  # without the flag it would re-initialise
    assert not all(torch.equal(a, b) for a, b in zip(actnorm_params(model),
                                                     actnorm_params(fresh)))


def _actnorm_rank(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                         world_size=2)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(rank)) + 5 * rank
    norm = ActNorm(3).train()
    norm(x)
    torch.save({"x": x, "bias": norm.bias.detach(), "log_scale": norm.log_scale.detach()},
               f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_actnorm_under_ddp_initialises_every_rank_from_all_ranks_data(tmp_path):
    """Two gloo processes with different batches end with the same ActNorm parameters: those
    of the union of their batches."""
    torch.multiprocessing.spawn(_actnorm_rank, args=(str(tmp_path / "store"), str(tmp_path)),
                                nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.equal(ranks[0]["bias"], ranks[1]["bias"])
    assert torch.equal(ranks[0]["log_scale"], ranks[1]["log_scale"])
    union = torch.cat([r["x"] for r in ranks])
    single = ActNorm(3).train()
    single(union)
    assert torch.allclose(ranks[0]["bias"], single.bias, atol=1e-6)
    assert torch.allclose(ranks[0]["log_scale"], single.log_scale, atol=1e-6)


# -- numerics ----------------------------------------------------------------------------------
def test_codes_and_log_determinants_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = tiny_flow(dequantization="variational").train()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    model.nll(x)  # initialise
    model.eval()
    z32, logdet32 = model.flow(x)
    dtypes = set()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, logdet = model.flow(x, watch=lambda layer, y, ld: dtypes.update({y.dtype, ld.dtype}))
        nll = model.nll(x)
    assert dtypes == {torch.float32}  # every layer's output and log-determinant
    assert z.dtype == logdet.dtype == nll.dtype == torch.float32
    assert torch.allclose(logdet, logdet32, rtol=2e-2)
    assert (z - z32).abs().max() < 0.1


@pytest.mark.parametrize("poisoned, name", [
    (lambda flow: flow.levels[1][4].log_scale, r"flow\.levels\.1\.4 \(ActNorm\)"),
    (lambda flow: flow.levels[0][3].net.conv_mid.weight, r"flow\.levels\.0\.3 \(Coupling\)"),
])
def test_a_non_finite_value_names_the_layer_and_the_step(poisoned, name, monkeypatch):
    torch.manual_seed(0)
    model = tiny_flow().train()
    batch = (torch.rand(4, 1, 8, 8) * 2 - 1, torch.zeros(4, dtype=torch.long))
    model.training_step(batch, 0)
    with torch.no_grad():
        poisoned(model.flow).fill_(float("inf"))
    monkeypatch.setattr(Flow, "global_step", property(lambda self: 7))
    with pytest.raises(GenlabError, match=name + r" at training step 7"):
        model.training_step(batch, 0)


# -- capabilities and tasks --------------------------------------------------------------------
def trained_looking(model: Flow) -> Flow:
    """The model with initialised ActNorms and perturbed parameters, in eval mode."""
    model.train().nll(torch.rand(8, *model.image_shape) * 2 - 1,
                      torch.arange(8) % model.num_classes if model.conditional else None)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def test_capabilities_have_the_contract_shapes_and_encode_decode_exactly():
    torch.manual_seed(0)
    model = trained_looking(tiny_flow())
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    z = model.encode(x)
    assert z.shape == (5, 64)
    assert (model.decode(z) - x).abs().max() < 1e-5
    assert (model.reconstruct(x) - x).abs().max() < 1e-5
    rows = model.interpolate(x[:2], x[2:4], 7)
    assert rows.shape == (14, 1, 8, 8)
    assert (rows[0::7] - x[:2]).abs().max() < 1e-5 and (rows[6::7] - x[2:4]).abs().max() < 1e-5
    assert model.log_prob(x).shape == (5,)
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 8, 8) and samples.abs().max() <= 1
    assert torch.equal(samples, model.sample(6, generator=torch.Generator().manual_seed(0)))
    cold = model.sample_at_temperature(3, 0.0)
    assert torch.equal(cold, model.decode(torch.zeros(3, 64))) and torch.equal(cold[0], cold[2])
    assert offered(model) == ["denoise", "edit", "inpaint", "inpaint_half", "inpaint_pixels",
                              "interpolate", "outpaint", "reconstruct", "superres_x2",
                              "superres_x4", "temperature"]


def test_temperature_scales_the_code_and_the_task_shows_one_row_per_temperature():
    torch.manual_seed(0)
    model = trained_looking(tiny_flow(temperature=0.7))
    g = torch.Generator().manual_seed(1)
    expected = model.decode(0.7 * torch.randn(4, 64, generator=g))
    assert torch.equal(model.sample(4, generator=torch.Generator().manual_seed(1)), expected)
    result = run_task("temperature", model, TaskInputs(torch.zeros(2, 1, 8, 8), None,
                                                       torch.Generator().manual_seed(0)))
    rows = result.images.view(5, 8, 1, 8, 8)
    assert result.nrow == 8
    assert torch.equal(rows[0, 0], rows[0, 7])  # T = 0: every column is the mode
    assert not torch.equal(rows[4, 0], rows[4, 7])
    seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(0)))
    noise = torch.randn(8, 64, generator=torch.Generator().manual_seed(seed))
    for row, t in zip(rows, (0.0, 0.5, 0.7, 0.85, 1.0)):  # the same noise, scaled by T
        assert torch.equal(row, model.decode(t * noise))


def test_conditional_flow_uses_the_labels():
    torch.manual_seed(0)
    model = trained_looking(tiny_flow(num_classes=3, conditional=True))
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 2])
    assert not torch.allclose(model.encode(x, labels), model.encode(x, labels.flip(0)))
    assert (model.decode(model.encode(x, labels), labels) - x).abs().max() < 1e-5
    assert model.sample(3, labels).shape == (3, 1, 8, 8)
    with pytest.raises(GenlabError, match="pass labels"):
        model.sample(3)


def test_edit_moves_flow_codes_along_a_class_direction(tmp_path):
    from genlab.data import ImageDataModule

    data = ImageDataModule("digits", str(tmp_path), str(tmp_path), channels=1, val_size=300,
                           test_size=100)
    data.setup()
    torch.manual_seed(0)
    model = trained_looking(tiny_flow(image_shape=(1, 32, 32), levels=3, steps=1))
    x = data.to_model_input(data.splits["test"][0][:4], train=False)
    result = run_task("edit", model, TaskInputs(x, None, None, data, {"attribute": "3",
                                                                       "examples": 300}))
    rows = result.images.view(4, 7, 1, 32, 32)
    assert (rows[:, 3] - x).abs().max() < 1e-4  # strength 0 is the image itself
    assert not torch.allclose(rows[:, 0], rows[:, -1])
    assert result.metrics["direction_norm"] > 0


@pytest.mark.parametrize("options, message", [
    ({"coupling": "spline"}, "choose one of affine, additive"),
    ({"permutation": "shuffle"}, "choose one of lu, conv, reverse"),
    ({"dequantization": "gaussian"}, "choose one of uniform, variational"),
    ({"levels": 4}, "divisible by 16"),
    ({"conditional": True}, "labelled dataset"),
])
def test_bad_configuration_is_explained(options, message):
    with pytest.raises(GenlabError, match=message):
        tiny_flow(**options)


@pytest.mark.parametrize("override, message", [
    ("model.levels=0", "model.levels=0 is out of range"),
    ("model.width=0", "model.width=0 is out of range"),
    ("model.steps=-1", "model.steps=-1 is out of range"),
    ("model.logit_alpha=0.5", "model.logit_alpha=0.5 is out of range"),
    ("model.test_dequant_samples=0", "model.test_dequant_samples=0 is out of range"),
    ("model.dequant_steps=0", "model.dequant_steps=0 is out of range"),
    ("model.temperature=-1", "model.temperature=-1 is out of range"),
    ("model.levels=6", "model.levels=6 halves the 32x32 images 6 times"),
])
def test_bad_values_are_refused_at_start_up(override, message, compose):
    from genlab.run.validate import validate_train

    with pytest.raises(GenlabError, match=message):
        validate_train(compose(["model=glow", "data=mnist", override]))


def test_bf16_training_testing_and_evaluation_with_tasks(compose, fake_root, tmp_path):
    from genlab.run import evaluate, train

    small = ["model=glow", "data=mnist", "precision=bf16", *SMALL_RUN, "test=true",
             "+trainer.limit_test_batches=1", "model.steps=2", "model.width=16",
             "model.dequantization=variational", "model.test_dequant_samples=2",
             "trainer.gradient_clip_val=50", *fake_data_overrides("mnist", fake_root)]
    assert 0 < train(compose(small)) < 20  # val/bpd
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(state[k] for k in state if k.endswith("initialized"))
    out = tmp_path / "evaluate"
    metrics = evaluate(compose(
        [f"ckpt_path={ckpt}", f"paths.output_dir={out}", f"paths.data_dir={fake_root}",
         f"paths.cache_dir={fake_root / 'cache'}", "trainer=cpu", "logger=none",
         "precision=bf16", "fid.enabled=false", "sample_grid=4",
         "tasks=[reconstruct,interpolate,temperature]", "+trainer.limit_test_batches=1",
         "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    assert 0 < metrics["test/bpd"] < 20 and metrics["bpd"] == metrics["test/bpd"]
    assert metrics["task/reconstruct/psnr"] > 40  # exact up to float (and bf16) rounding
    for name in ("samples", "reconstruct", "interpolate", "temperature"):
        assert (out / f"{name}.png").is_file()
