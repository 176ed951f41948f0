"""The PixelCNN family: causality by gradients, the blind spot, the heads against hand
computations, the exact likelihood against a slow loop, exact and deterministic sampling, the
cached sampler against the naive one, completion, tasks, errors, and a run through train() and
evaluate()."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers.runs import SMALL_RUN, fake_data_overrides

from genlab.errors import GenlabError
from genlab.maths.autoregressive import (
    PixelHead,
    candidate_log_probs,
    logistic_mixture_log_prob,
    raster_position,
    raster_prefix_length,
)
from genlab.models.pixelcnn import PixelCNN
from genlab.nets.pixelcnn import MaskedConv2d
from genlab.tasks import TaskInputs, offered, run_task

ARCHITECTURES = ("pixelcnn", "gated", "pixelcnn_pp")
# (head, channels): per-channel heads on grey and colour images, the whole-pixel mixture
HEAD_SHAPES = [("softmax", 3), ("bernoulli", 1), ("logistic_mixture", 3)]


def tiny(architecture: str = "gated", head: str = "softmax", image_channels: int = 1,
         shape: tuple[int, int] = (8, 8), **options) -> PixelCNN:
    """A float64 model in eval mode (dropout off) with random weights, on 8x8 images."""
    settings = dict(image_shape=(image_channels, *shape), architecture=architecture, head=head,
                    channels=6, layers=3, resnets=1, num_mixtures=3)
    settings.update(options)
    torch.manual_seed(0)
    return PixelCNN(**settings).double().eval()


def grid_images(n: int, shape: tuple[int, ...], binary: bool = False, seed: int = 0
                ) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if binary:
        return (torch.rand(n, *shape, generator=g) < 0.5).double() * 2 - 1
    return torch.randint(0, 256, (n, *shape), generator=g).double() / 127.5 - 1


def output_groups(model: PixelCNN, c: int) -> list[int]:
    """The network outputs that parameterise channel c (all of them for the mixture)."""
    features = model.head.num_outputs
    if model.head.whole_pixel:
        return list(range(features))
    return [f for f in range(features) if f % model.image_shape[0] == c]


# -- causality -----------------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("head, channels", HEAD_SHAPES)
def test_outputs_depend_only_on_earlier_sub_pixels(architecture, head, channels):
    """d out(i, j, c) / d x(t) is exactly 0 for every t not strictly before (i, j, c) in
    raster-then-channel order (the whole pixel for the mixture); and not 0, at almost every
    position, for the adjacent earlier sub-pixel (so the test is not passed by a dead net)."""
    model = tiny(architecture, head, channels, channels=12)
    c_, h, w = model.image_shape
    x = (torch.rand(1, c_, h, w, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    out = model.net(x)
    order = torch.arange(c_ * h * w).view(h, w, c_).permute(2, 0, 1)  # t of each sub-pixel
    seen_neighbour = []
    for i, j, c in itertools.product(range(h), range(w), range(c_)):
        (grad,) = torch.autograd.grad(out[0, output_groups(model, c), i, j].sum(), x,
                                      retain_graph=True)
        own = not model.head.whole_pixel  # the pixel's earlier channels are seen
        first = (i * w + j) * c_ + (c if own else 0)  # the first unseen t
        assert (grad[0][order >= first] == 0).all(), (i, j, c)
        neighbour = ((c - 1, i, j) if own and c else (c_ - 1, i, j - 1) if j
                     else (c_ - 1, i - 1, j) if i else None)
        if neighbour is not None:
            seen_neighbour.append(bool(grad[0][neighbour] != 0))
    assert sum(seen_neighbour) >= 0.9 * len(seen_neighbour)  # (a dead ReLU may hide one)


def test_mask_a_excludes_the_sub_pixel_itself_and_mask_b_includes_it():
    a = MaskedConv2d(3, 6, 5, "A", colours=3).mask
    b = MaskedConv2d(6, 6, 5, "B", colours=3).mask
    assert (a[:, :, 3:] == 0).all() and (a[:, :, 2, 3:] == 0).all()  # below and right: never
    assert (a[:, :, :2] == 1).all() and (a[:, :, 2, :2] == 1).all()  # above and left: always
    for out, inp in itertools.product(range(6), range(3)):  # centre: channel order
        assert a[out, inp, 2, 2] == (inp < out % 3)
    assert all(a[c, c, 2, 2] == 0 for c in range(3))  # R of the image never predicts R
    for out, inp in itertools.product(range(6), range(6)):
        assert b[out, inp, 2, 2] == (inp % 3 <= out % 3)


def receptive_field(model: PixelCNN, i: int, j: int) -> torch.Tensor:
    """Which pixels the outputs at (i, j) depend on (a bool (H, W) map)."""
    _, h, w = model.image_shape
    x = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model.net(x)[0, :, i, j].sum(), x)
    return grad[0, 0] != 0


def earlier_pixels(i: int, j: int) -> torch.Tensor:
    before = torch.zeros(8, 8, dtype=torch.bool)
    before[:i] = True
    before[i, :j] = True
    return before


def test_gated_pixelcnn_has_no_blind_spot_unlike_pixelcnn():
    """A 7x7 first layer and 3x3 after it. With 6 layers the Gated PixelCNN's last pixel, and
    pixel (7, 2), see every earlier pixel of an 8x8 image. The PixelCNN's pixel (7, 2) misses
    the blind spot above-right, (i - a, j + b) for b > a + 2, however deep it is."""
    for i, j in [(7, 7), (7, 2)]:
        assert torch.equal(receptive_field(tiny("gated", "bernoulli", layers=6), i, j),
                           earlier_pixels(i, j))
    blind = torch.zeros(8, 8, dtype=torch.bool)
    blind[6, 6:] = blind[5, 7] = True
    for layers in (6, 12):
        plain = receptive_field(tiny("pixelcnn", "bernoulli", layers=layers), 7, 2)
        assert torch.equal(plain, earlier_pixels(7, 2) & ~blind)


# -- heads ---------------------------------------------------------------------------------------
def extreme_mixture_params(b: int, k: int, seed: int = 0) -> torch.Tensor:
    """Mixture parameters (b, 10k) with means far outside [-1, 1], log-scales from -7 (and
    below: clamped) to 5, large coefficients and very unequal weights."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, generator=g) * 20
    means = torch.randn(b, 3, k, generator=g) * torch.tensor([0.5, 3.0, 40.0]).view(1, 3, 1)
    log_scales = torch.empty(b, 3, k).uniform_(-9, 5, generator=g)
    log_scales[0] = -7.0  # the narrowest allowed: almost a point mass
    coefficients = torch.randn(b, 3, k, generator=g) * 10
    return torch.cat([logits, torch.cat([means, log_scales, coefficients], 1).flatten(1)], 1)


@pytest.mark.parametrize("c", [0, 1, 2])
def test_mixture_conditionals_sum_to_one_over_256_values(c):
    """p(x_c = v | x_<c) over the 256 values sums to 1 for every channel, given random earlier
    channels, with extreme means and scales."""
    head = PixelHead("logistic_mixture", 3, mixtures=4)
    params = extreme_mixture_params(64, 4)
    x = torch.randint(0, 256, (64, 3)).float() / 127.5 - 1
    lp = head.value_log_probs(x, params, c)
    assert torch.isfinite(lp).all()
    assert torch.logsumexp(lp.double(), 1).abs().max() < 1e-5


def logistic_cdf(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_mixture_log_likelihood_by_hand():
    """Two components on one RGB pixel, the likelihood written out term by term in float64."""
    pi_logits, means = [0.3, -0.5], [[0.1, -0.2], [0.4, 0.0], [-0.3, 0.6]]  # [channel][k]
    log_s = [[-2.0, -1.5], [-2.5, -1.0], [-1.8, -2.2]]
    coef = [[0.5, -0.4], [0.2, 0.9], [-0.7, 0.1]]  # pairs (G,R), (B,R), (B,G)
    params = torch.tensor([pi_logits + sum(means + log_s + coef, [])]).view(1, 20, 1, 1)
    pixel = [200, 17, 255]  # B in the open top bin
    x = torch.tensor(pixel).double().view(1, 3, 1, 1) / 127.5 - 1
    xs = [2 * k / 255 - 1 for k in pixel]

    def mass(k: int, mean: float, s: float) -> float:
        centre = 2 * k / 255 - 1
        upper = 1.0 if k == 255 else logistic_cdf((centre + 1 / 255 - mean) / s)
        lower = 0.0 if k == 0 else logistic_cdf((centre - 1 / 255 - mean) / s)
        return upper - lower

    weights = [math.exp(v) for v in pi_logits]
    total = 0.0
    for k in range(2):
        mu = [means[0][k], means[1][k] + math.tanh(coef[0][k]) * xs[0],
              means[2][k] + math.tanh(coef[1][k]) * xs[0] + math.tanh(coef[2][k]) * xs[1]]
        p = 1.0
        for c in range(3):
            p *= mass(pixel[c], mu[c], math.exp(log_s[c][k]))
        total += weights[k] / sum(weights) * p
    got = logistic_mixture_log_prob(x, params, 2).sum()
    assert got.item() == pytest.approx(math.log(total), abs=1e-4)  # float32 inside


@pytest.mark.parametrize("head, channels", HEAD_SHAPES + [("softmax", 1)])
def test_sampling_conditionals_are_the_likelihood_at_every_value(head, channels):
    """What the sampler draws from equals the likelihood evaluated at each value."""
    h = PixelHead(head, channels, mixtures=3)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, h.num_outputs, generator=g) * 3
    x = grid_images(5, (channels,), binary=h.binary)
    for c in range(channels):
        direct = h.value_log_probs(x, out, c)
        assert torch.allclose(direct, candidate_log_probs(h.log_prob, x, out, c, h.values()),
                              atol=1e-5)
        assert torch.logsumexp(direct.double(), 1).abs().max() < 1e-5


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("head, channels", HEAD_SHAPES)
def test_nll_is_the_sum_of_the_conditionals_of_a_slow_loop(architecture, head, channels):
    """log p(x) = sum_t log p(x_t | x_<t), each term from the network run on an image whose
    sub-pixels from t on are replaced by noise."""
    model = tiny(architecture, head, channels)
    shape = model.image_shape
    x = grid_images(2, shape, binary=model.head.binary, seed=1)
    noise = grid_images(2, shape, binary=model.head.binary, seed=2)
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for t in range(math.prod(shape)):
            i, j, c = raster_position(t, shape[0], shape[2])
            seen = torch.arange(math.prod(shape)).view(shape[1], shape[2], shape[0])
            seen = (seen.permute(2, 0, 1) < t)[None]
            out = model.net(torch.where(seen, x, noise))[:, :, i, j]
            values = model.head.values(dtype=x.dtype)
            lp = model.head.value_log_probs(x[:, :, i, j], out, c)
            total += lp[torch.arange(2), (x[:, c, i, j][:, None] - values).abs().argmin(1)]
    assert torch.allclose(model.log_prob(x).double(), total, atol=1e-4)  # heads: float32
    assert torch.allclose(model.log_prob_per_pixel(x).sum((1, 2, 3)), model.log_prob(x))


# -- sampling and completion ---------------------------------------------------------------------
def all_binary_images(h: int, w: int) -> torch.Tensor:
    bits = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=h * w)), dtype=torch.float64)
    return bits.view(-1, 1, h, w)


def total_variation_is_sampling_noise(samples: torch.Tensor, probs: torch.Tensor,
                                      codes: torch.Tensor) -> bool:
    """The total variation between the samples' frequencies and `probs` is below 2.5 times
    its expectation under exact sampling, 1/2 sum_v sqrt(2 p_v (1 - p_v) / (pi n))."""
    n = len(samples)
    code = (samples.flatten(1) > 0).long() @ (2 ** torch.arange(samples[0].numel())).flip(0)
    frequencies = torch.bincount(code, minlength=len(probs)).double()[codes] / n
    expected = 0.5 * (2 * probs * (1 - probs) / (math.pi * n)).sqrt().sum()
    return 0.5 * (frequencies - probs).abs().sum() < 2.5 * expected


@pytest.mark.parametrize("architecture", ["pixelcnn", "gated"])
def test_samples_and_completions_follow_the_exact_distribution(architecture):
    """On 2x3 binary images the model's 64 probabilities are enumerated; 20000 samples, and
    20000 completions of a fixed top row, match them and the conditional given the top row up
    to sampling noise; the completions keep the top row."""
    model = tiny(architecture, "bernoulli", shape=(2, 3), layers=2)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.7)  # a distribution far from uniform
    images = all_binary_images(2, 3)
    probs = model.log_prob(images).double().exp()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    codes = (images.flatten(1) > 0).long() @ (2 ** torch.arange(6)).flip(0)
    g = torch.Generator().manual_seed(0)
    assert total_variation_is_sampling_noise(model.sample(20000, generator=g), probs, codes)
    top = images[37:38]
    mask = torch.zeros(1, 1, 2, 3)
    mask[..., 0, :] = 1
    completed = model.complete(top.expand(20000, -1, -1, -1), mask, generator=g)
    assert torch.equal(completed[:, :, 0], top[:, :, 0].expand(20000, -1, -1))
    same_top = (images[:, 0, 0] == top[0, 0, 0]).all(1)
    conditional = torch.where(same_top, probs, 0) / probs[same_top].sum()
    assert total_variation_is_sampling_noise(completed, conditional, codes)
    # a sampler that ignored the earlier pixels would be far off
    assert not total_variation_is_sampling_noise(completed[torch.randperm(20000)].flip(-1),
                                                 conditional, codes)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("head, channels", HEAD_SHAPES)
def test_the_cached_sampler_gives_the_naive_samples(architecture, head, channels):
    model = tiny(architecture, head, channels, num_classes=3, conditional=True)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    labels = torch.tensor([0, 2, 1])
    naive = model.sample(3, labels, torch.Generator().manual_seed(1), sampler="naive")
    cached = model.sample(3, labels, torch.Generator().manual_seed(1), sampler="cached")
    assert torch.equal(naive, cached) and naive.std() > 0.1
    x = grid_images(3, model.image_shape, binary=model.head.binary)
    mask = torch.zeros(3, 1, 8, 8)  # different known prefixes per image, one ends mid-row
    mask[0, :, :4] = 1
    mask[1, :, :2] = 1
    mask[1, :, 2, :5] = 1
    naive = model.complete(x, mask, labels, torch.Generator().manual_seed(2), sampler="naive")
    cached = model.complete(x, mask, labels, torch.Generator().manual_seed(2), sampler="cached")
    assert torch.equal(naive, cached)
    known = mask.expand_as(x).bool()
    assert torch.equal(cached[known], x[known]) and not torch.equal(cached, x)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_cached_sampler_gives_the_naive_samples_in_float32(architecture):
    model = tiny(architecture, "softmax", 3).float()
    a = model.sample(2, generator=torch.Generator().manual_seed(3), sampler="naive")
    b = model.sample(2, generator=torch.Generator().manual_seed(3), sampler="cached")
    assert torch.equal(a, b)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_fixed_generator_gives_fixed_samples_on_the_pixel_grid(architecture):
    model = tiny(architecture, "logistic_mixture", 3, sample_batch_size=2)
    a = model.sample(3, generator=torch.Generator().manual_seed(5))
    b = model.sample(3, generator=torch.Generator().manual_seed(5))
    c = model.sample(3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isin(a, model.head.values(dtype=a.dtype)).all()  # on the 8-bit grid


def test_completion_of_a_colour_prefix_ending_inside_a_pixel():
    model = tiny("pixelcnn", "softmax", 3)
    x = grid_images(2, (3, 8, 8))
    mask = torch.zeros(1, 3, 8, 8)
    mask[:, :, :3] = 1
    mask[:, 0, 3, 0] = 1  # R of pixel (3, 0) known, G and B not
    assert raster_prefix_length(mask, tuple(x.shape)).tolist() == [3 * 8 * 3 + 1] * 2
    out = model.complete(x, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[mask.expand_as(x).bool()], x[mask.expand_as(x).bool()])


@pytest.mark.parametrize("rows, columns", [
    (slice(2, 6), slice(2, 6)),   # a centre square
    (slice(4, 8), slice(0, 8)),   # the bottom half
    (slice(0, 8), slice(0, 4)),   # the left half
])
def test_masks_that_are_not_a_raster_prefix_are_refused_with_the_reason(rows, columns):
    model = tiny("gated", "bernoulli")
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., rows, columns] = 1
    with pytest.raises(GenlabError, match="exactly only when the known pixels come first"):
        model.complete(torch.ones(2, 1, 8, 8), mask)
    with pytest.raises(GenlabError, match=r"mask has shape \(1, 1, 4, 4\)"):
        model.complete(torch.ones(2, 1, 8, 8), torch.ones(1, 1, 4, 4))


# -- tasks, options, errors ----------------------------------------------------------------------
def test_pixelcnns_offer_complete_and_bits_but_not_the_centre_mask_tasks():
    """inpaint / outpaint need arbitrary masks, which an autoregressive model cannot complete
    exactly: it has no `inpaint` method, so they are not offered; inpaint_half's mask is a
    raster prefix, which `complete` samples exactly."""
    for architecture in ARCHITECTURES:
        assert offered(tiny(architecture)) == ["bits", "complete", "inpaint_half"]
    with pytest.raises(GenlabError, match="offers: bits, complete, inpaint_half"):
        run_task("inpaint", tiny(), TaskInputs(torch.zeros(2, 1, 8, 8)))


def test_complete_and_bits_tasks():
    model = tiny("gated", "softmax", 3).float()
    x = grid_images(3, (3, 8, 8)).float()
    result = run_task("complete", model, TaskInputs(x, None, torch.Generator().manual_seed(0),
                                                    options={"samples": 2, "rows": 3}))
    assert result.images.shape == (3 * 4, 3, 8, 8) and result.nrow == 4
    assert result.metrics == {"known_error": 0.0, "rows_given": 3}
    rows = result.images.view(3, 4, 3, 8, 8)
    assert torch.equal(rows[:, -1], x) and torch.equal(rows[:, 1:3, :, :3], rows[:, -1:, :, :3]
                                                       .expand(-1, 2, -1, -1, -1))
    result = run_task("bits", model, TaskInputs(x))
    assert result.images.shape == (6, 3, 8, 8) and result.nrow == 3
    bpd = -model.log_prob(x).mean() / (3 * 64 * math.log(2))
    assert result.metrics["bpd"] == pytest.approx(float(bpd), rel=1e-5)
    assert result.images[3:].amax((1, 2, 3)).max() == 1.0  # the costliest pixel is white


def test_heads_check_their_pixels():
    model = tiny("gated", "bernoulli")
    eight_bit = grid_images(2, (1, 8, 8))
    with pytest.raises(GenlabError, match="data.binarize=dynamic"):
        model.training_step((eight_bit, torch.full((2,), -1)), 0)
    model = tiny("gated", "softmax")
    dequantized = eight_bit + 0.003
    with pytest.raises(GenlabError, match="data.dequantize=false"):
        model.training_step((dequantized, torch.full((2,), -1)), 0)


@pytest.mark.parametrize("options, message", [
    ({"architecture": "transformer"}, "choose one of pixelcnn, gated, pixelcnn_pp"),
    ({"head": "gaussian"}, "choose one of softmax, bernoulli, logistic_mixture"),
    ({"sampler": "fast"}, "choose one of naive, cached"),
    ({"channels": 8, "image_shape": (3, 8, 8)}, "multiple of 3"),
    ({"dropout": 0.5}, "only model.architecture=pixelcnn_pp"),
    ({"architecture": "pixelcnn_pp", "image_shape": (1, 10, 10)}, "multiples of 4"),
    ({"first_kernel_size": 6}, "model.first_kernel_size=6: .* must be odd"),
    ({"conditional": True}, "needs a labelled dataset"),
])
def test_bad_options_are_explained(options, message):
    with pytest.raises(GenlabError, match=message):
        PixelCNN(**{"image_shape": (1, 8, 8), **options})


# -- EMA, and through train() and evaluate() ------------------------------------------------------
def test_pixelcnn_pp_validates_tests_and_samples_with_its_ema():
    model = tiny("pixelcnn_pp", "logistic_mixture", 3, dropout=0.5, ema_decay=0.9)
    model.train()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1)  # the trained weights move away from their average
    x = grid_images(2, (3, 8, 8))
    model.eval()
    assert model.network is model.ema.averaged and not model.network.training
    logged = {}
    model.log_nll = lambda stage, nll: logged.update({stage: nll})
    model.validation_step((x, torch.full((2,), -1)), 0)
    model.test_step((x, torch.full((2,), -1)), 0)
    from_ema = -model.head.log_prob(x, model.ema.averaged(x)).sum((1, 2, 3))
    from_net = -model.head.log_prob(x, model.net(x)).sum((1, 2, 3))
    assert torch.allclose(logged["val"], from_ema) and torch.allclose(logged["test"], from_ema)
    assert not torch.allclose(from_ema, from_net)
    assert torch.allclose(model.log_prob(x), -from_ema)
    before = [p.clone() for p in model.ema.averaged.parameters()]
    model.ema.update(model.net)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.ema.averaged.parameters()))


def test_gated_pixelcnn_trains_tests_and_evaluates_with_complete_and_bits(
        compose, fake_root, tmp_path):
    from genlab.run import evaluate, train

    run = ["model=gated_pixelcnn", "data=mnist", "data.binarize=dynamic", "model.head=bernoulli",
           *SMALL_RUN, "test=true", "+trainer.limit_test_batches=1",
           *fake_data_overrides("mnist", fake_root)]
    assert math.isfinite(train(compose(run)))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    out = tmp_path / "evaluate"
    metrics = evaluate(compose(
        [f"ckpt_path={ckpt}", f"paths.output_dir={out}", f"paths.data_dir={fake_root}",
         f"paths.cache_dir={fake_root / 'cache'}", "trainer=cpu", "logger=none",
         "fid.enabled=false", "sample_grid=4", "tasks=[complete,bits]",
         "task_options.complete.samples=2", "+trainer.limit_test_batches=1",
         "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    assert metrics["test/bpd"] > 0 and metrics["task/complete/known_error"] == 0
    assert math.isfinite(metrics["task/bits/bpd"])
    for name in ("samples", "complete", "bits"):
        assert (out / f"{name}.png").is_file()

    # evaluate.py may change the sampling settings only, and checks the task options
    from genlab.run.validate import validate_evaluate

    def evaluate_cfg(*overrides):
        return compose([f"ckpt_path={ckpt}", f"paths.data_dir={fake_root}", *overrides],
                       config_name="evaluate")

    _, merged = validate_evaluate(evaluate_cfg("+model.sampler=naive",
                                               "+model.sample_batch_size=8"))
    assert (merged.model.sampler, merged.model.sample_batch_size) == ("naive", 8)
    for overrides, message in [
            (["+model.channels=64"], r"\+model.channels is not accepted by evaluate.py: it shapes"),
            (["+model.sampler=fast"], "model.sampler='fast' is not valid: it must be one of"),
            (["task_options.complete.samples=0"], "task_options.complete.samples=0 is out of "
                                                  "range"),
            (["+task_options.complete.mask=centre"], "task_options.complete.mask is not a key")]:
        with pytest.raises(GenlabError, match=message):
            validate_evaluate(evaluate_cfg(*overrides))
