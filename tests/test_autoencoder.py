"""Autoencoders (plain, denoising, contractive): the contractive penalty against brute-force and
closed-form Jacobians, the corruptions' rates, the walk-back chain, the code Gaussian, the
capabilities; and the representation evaluation's scores against hand-computed values."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from helpers.models import tiny_autoencoder, tiny_gan
from helpers.runs import SMALL_RUN
from omegaconf import OmegaConf
from torch import nn

from genlab.errors import GenlabError
from genlab.maths.autoencoder import corrupt, walkback_chain
from genlab.maths.penalties import jacobian_frobenius_sq, jacobian_frobenius_sq_estimate
from genlab.metrics import representation
from genlab.nets.conv import ConvEncoder
from genlab.tasks import TaskInputs, offered, run_task


def small_encoder(code_dim: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ConvEncoder(1, 8, (4,)), nn.Linear(4 * 4 * 4, code_dim), nn.Tanh())


def brute_force_penalty(fn, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """||J||_F^2 per image from torch.autograd.functional.jacobian, one image at a time."""
    return torch.stack([torch.autograd.functional.jacobian(
        lambda image: fn(image[None])[0], image, create_graph=create_graph).square().sum()
        for image in x])


# -- the contractive penalty -------------------------------------------------------------------
def test_exact_contraction_penalty_is_the_jacobians_frobenius_norm_with_its_gradient():
    encoder = small_encoder()
    x = torch.randn(4, 1, 8, 8)
    exact = jacobian_frobenius_sq(encoder, x)
    reference = brute_force_penalty(encoder, x, create_graph=True)
    assert torch.allclose(exact, reference, rtol=1e-5)
    weight = encoder[1].weight  # the penalty trains the encoder: same gradient as brute force
    (grad,) = torch.autograd.grad(exact.sum(), weight)
    (expected,) = torch.autograd.grad(reference.sum(), weight)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_estimated_contraction_penalty_is_unbiased():
    """The mean of n one-projection estimates is within 4 standard errors of the exact value;
    Var ||J^T v||^2 = 2 ||J J^T||_F^2 for v ~ N(0, I)."""
    encoder = small_encoder()
    x = torch.randn(3, 1, 8, 8)
    n = 4000
    repeated = x.repeat_interleave(n, dim=0)
    estimates = jacobian_frobenius_sq_estimate(encoder, repeated, projections=1,
                                               generator=torch.Generator().manual_seed(0))
    mean = estimates.detach().view(3, n).mean(1)
    exact = brute_force_penalty(encoder, x)
    jacobians = [torch.autograd.functional.jacobian(lambda i: encoder(i[None])[0], image)
                 .flatten(1) for image in x]
    std_error = torch.stack([(2 * (j @ j.T).square().sum()).sqrt() for j in jacobians]) / n**0.5
    assert ((mean - exact).abs() < 4 * std_error).all()
    assert (estimates.view(3, n).std(1) > 0.1 * exact).all()  # an estimate, not the exact value


def test_penalty_of_a_sigmoid_layer_has_rifais_closed_form():
    """f(x) = sigmoid(W x + b): ||J_f(x)||_F^2 = sum_j (h_j (1 - h_j))^2 ||W_j||^2."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 5)
    encoder = nn.Sequential(nn.Flatten(), layer, nn.Sigmoid())
    x = torch.randn(6, 1, 3, 4)
    h = encoder(x)
    closed_form = ((h * (1 - h)).square() * layer.weight.square().sum(1)).sum(1)
    assert torch.allclose(jacobian_frobenius_sq(encoder, x), closed_form, rtol=1e-5)
    estimate = jacobian_frobenius_sq_estimate(encoder, x.repeat(20000, 1, 1, 1),
                                              generator=torch.Generator().manual_seed(1))
    assert torch.allclose(estimate.view(20000, 6).mean(0), closed_form, rtol=0.05)


def test_cae_training_loss_is_reconstruction_plus_weighted_contraction():
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    model = tiny_autoencoder(contraction=0.7, jacobian="exact").train()
    logged = {}
    model.log = lambda name, value, **k: logged.__setitem__(name, value.item())
    model.log_dict = lambda values, **k: logged.update({n: v.item() for n, v in values.items()})
    loss = model.training_step((x, torch.full((3,), -1)), 0)
    recon = -model.pixels.log_prob(x, model.decoder_params(model.code(x))).mean()
    penalty = brute_force_penalty(model.code, x).mean()
    assert logged["train/contraction"] == pytest.approx(penalty.item(), rel=1e-4)
    assert loss.item() == pytest.approx((recon + 0.7 * penalty).item(), rel=1e-5)


def test_relative_contraction_is_the_penalty_of_the_standardised_code_and_scale_free():
    """With an untied decoder the raw penalty can be bought down by shrinking the code (the
    decoder scales it back up); the relative one, ||diag(1/s) J||_F^2, cannot."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    model = tiny_autoencoder(contraction=1.0, jacobian="exact", relative_contraction=True)
    spread = model.code(x).std(0)
    expected = brute_force_penalty(lambda images: model.code(images) / spread, x)
    relative = model.contraction_penalty(x)
    assert torch.allclose(relative, expected, rtol=1e-4)
    raw = tiny_autoencoder(contraction=1.0, jacobian="exact")
    raw.load_state_dict(model.state_dict())
    raw_before = raw.contraction_penalty(x)
    with torch.no_grad():
        for m in (model, raw):
            m.to_code.weight.mul_(0.1)
            m.to_code.bias.mul_(0.1)
    assert torch.allclose(model.contraction_penalty(x), relative, rtol=1e-4)
    assert torch.allclose(raw.contraction_penalty(x), 0.01 * raw_before, rtol=1e-4)


# -- corruptions and the walk-back chain ------------------------------------------------------
@pytest.mark.parametrize("kind", ["masking", "salt_and_pepper"])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_each_corruption_corrupts_the_stated_fraction_of_pixels(kind, p):
    x = torch.full((64, 1, 32, 32), 0.3)  # no pixel is already at -1 or 1
    y = corrupt(x, kind, p, torch.Generator().manual_seed(0))
    hit = y != x
    n = hit.numel()
    assert abs(hit.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial
    if kind == "masking":
        assert (y[hit] == -1).all()
    else:
        assert set(y[hit].unique().tolist()) == {-1.0, 1.0}
        salt = (y[hit] == 1).float().mean().item()
        assert abs(salt - 0.5) < 4 * math.sqrt(0.25 / hit.sum().item())


def test_gaussian_corruption_adds_noise_of_the_stated_deviation():
    x = torch.rand(64, 1, 32, 32) * 2 - 1
    noise = corrupt(x, "gaussian", 0.3, torch.Generator().manual_seed(0)) - x
    n = noise.numel()
    assert (noise != 0).all()
    assert abs(noise.std().item() / 0.3 - 1) < 4 / math.sqrt(2 * n)  # std of the sample std
    assert abs(noise.mean().item()) < 4 * 0.3 / math.sqrt(n)


@pytest.mark.parametrize("kind, level", [("gaussian", 0.5), ("masking", 0.3),
                                         ("salt_and_pepper", 0.3)])
def test_corruption_is_on_in_training_and_off_at_evaluation(kind, level):
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    model = tiny_autoencoder(corruption=kind, corruption_level=level).train()
    model.log = model.log_dict = lambda *a, **k: None
    torch.manual_seed(3)
    loss = model.training_step((x, torch.full((4,), -1)), 0)
    torch.manual_seed(3)
    noisy = model.corrupt(x)
    assert not torch.equal(noisy, x)
    expected = -model.pixels.log_prob(x, model.decoder_params(model.code(noisy))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    model.eval()
    clean = model.decode(model.code(x))
    assert torch.equal(model.encode(x), model.code(x)) and torch.equal(model.reconstruct(x), clean)
    logged = {}
    model.log_dict = lambda values, **k: logged.update({n: float(v) for n, v in values.items()})
    model.validation_step((x, torch.full((4,), -1)), 0)
    nll = -model.pixels.log_prob(x, model.decoder_params(model.code(x))).mean()
    assert logged["val/recon_nll"] == pytest.approx(nll.item(), rel=1e-6)
    assert logged["val/mse"] == pytest.approx((clean - x).square().mean().item(), rel=1e-5)


def test_walkback_chain_alternates_corruption_and_resampling():
    states = list(walkback_chain(torch.zeros(2), lambda x: x + 1, lambda x: 10 * x, 3))
    assert [s.tolist() for s in states] == [[1, 1], [11, 11], [111, 111]]


def test_walkback_training_reconstructs_the_original_from_every_state(monkeypatch):
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    model = tiny_autoencoder(corruption="gaussian", corruption_level=0.2,
                             walkback_steps=3).train()
    model.log = model.log_dict = lambda *a, **k: None
    seen = []
    real_log_prob = model.pixels.log_prob
    monkeypatch.setattr(model.pixels, "log_prob",
                        lambda target, params: seen.append(target) or real_log_prob(target,
                                                                                    params))
    model.training_step((x, torch.full((2,), -1)), 0)
    assert torch.equal(seen[-1], x.repeat(3, 1, 1, 1))  # three states, each aimed at x


# -- the autoencoder's capabilities -----------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"corruption": "masking", "corruption_level": 0.25,
                                          "sampler": "walkback"},
                                     {"contraction": 0.1}])
def test_capabilities_have_the_contract_shapes(options):
    torch.manual_seed(0)
    model = tiny_autoencoder(**options)
    x = torch.rand(5, 1, 16, 16) * 2 - 1
    model.fit_code_distribution(model.encode(x))
    generator = torch.Generator().manual_seed(0)
    assert model.encode(x).shape == (5, 3)
    for images in (model.sample(6, generator=generator), model.reconstruct(x),
                   model.interpolate(x[:2], x[2:4], 7), model.denoise(x, 0.3)):
        assert images.min() >= -1 and images.max() <= 1
    assert model.sample(6).shape == (6, 1, 16, 16)
    assert model.interpolate(x[:2], x[2:4], 7).shape == (14, 1, 16, 16)
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(1)))
    assert offered(model) == ["denoise", "edit", "inpaint", "inpaint_half", "inpaint_pixels",
                              "interpolate", "outpaint", "reconstruct", "superres_x2",
                              "superres_x4"]


def test_interpolation_ends_at_the_reconstructions():
    torch.manual_seed(0)
    model = tiny_autoencoder()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    rows = model.interpolate(x[:2], x[2:], 5).view(2, 5, 1, 16, 16)
    assert torch.allclose(rows[:, 0], model.reconstruct(x[:2]), atol=1e-6)
    assert torch.allclose(rows[:, -1], model.reconstruct(x[2:]), atol=1e-6)


def test_code_gaussian_is_fitted_to_the_codes_and_kept_in_the_checkpoint(monkeypatch):
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [-1.0, 0.3, 0.2]])
    mean = torch.tensor([3.0, -1.0, 0.5])
    codes = mean + torch.randn(50000, 3, generator=g) @ mixing.T
    model = tiny_autoencoder()
    with pytest.raises(GenlabError, match="no fitted code distribution"):
        model.sample(2)
    model.fit_code_distribution(codes)
    assert torch.allclose(model.code_mean, mean, atol=0.05)
    covariance = model.code_scale_tril @ model.code_scale_tril.T
    assert torch.allclose(covariance, mixing @ mixing.T, atol=0.1)

    restored = tiny_autoencoder()
    restored.load_state_dict(model.state_dict())
    decoded = []
    monkeypatch.setattr(restored, "decode", lambda z, labels=None: decoded.append(z) or z)
    restored.sample(50000, generator=g)
    z = decoded[0]
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), mixing @ mixing.T, atol=0.1)


def test_denoise_task_reports_the_gain_of_a_denoising_autoencoder():
    torch.manual_seed(0)
    model = tiny_autoencoder(corruption="gaussian", corruption_level=0.3)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    result = run_task("denoise", model, TaskInputs(x, None, torch.Generator().manual_seed(0)))
    assert result.images.shape == (32, 1, 16, 16)  # noisy, denoised, Gaussian filter, clean
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.images[8:16], model.reconstruct(noisy))  # one pass of the network
    assert {"noisy_psnr", "noisy_ssim", "psnr", "ssim", "baseline_psnr"} <= set(result.metrics)


def test_conditional_autoencoder_decodes_with_the_label_and_encodes_without():
    torch.manual_seed(0)
    model = tiny_autoencoder(num_classes=3, conditional=True)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(model.encode(x, torch.tensor([0, 1])), model.encode(x))
    z = model.encode(x)
    assert not torch.allclose(model.decode(z, torch.tensor([0, 0])),
                              model.decode(z, torch.tensor([2, 2])))
    with pytest.raises(GenlabError, match="pass labels"):
        model.decode(z)


@pytest.mark.parametrize("options, match", [
    ({"corruption": "blur", "corruption_level": 0.1}, "gaussian, masking, salt_and_pepper"),
    ({"corruption": "gaussian", "corruption_level": 0.0}, "must be positive"),
    ({"corruption": "masking", "corruption_level": 1.5}, r"in \(0, 1\]"),
    ({"sampler": "walkback"}, "needs a corruption"),
    ({"walkback_steps": 2}, "needs a corruption"),
    ({"contraction": -1.0}, ">= 0"),
    ({"jacobian": "approximate"}, "exact, estimate"),
    ({"code_dim": 0}, "positive count"),
    ({"likelihood": "poisson"}, "bernoulli, gaussian, logistic"),
])
def test_bad_configuration_is_explained(options, match):
    with pytest.raises(GenlabError, match=match):
        tiny_autoencoder(**options)


# -- the representation evaluation ------------------------------------------------------------
def test_clustering_scores_on_hand_made_labellings():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    permuted = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1])  # a perfect clustering, other names
    assert representation.cluster_scores(labels, permuted) == pytest.approx(
        {"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    one_off = np.array([1, 1, 0, 0, 0, 0, 2, 2, 2])  # cluster 1 -> 0, 0 -> 1, 2 -> 2
    assert representation.match_clusters(labels, one_off) == {0: 1, 1: 0, 2: 2}
    assert representation.clustering_accuracy(labels, one_off) == pytest.approx(8 / 9)

    # two classes split evenly by two clusters: no information, worse than chance agreement
    crossed = representation.cluster_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert crossed == pytest.approx({"acc": 0.5, "nmi": 0.0, "ari": -0.5})
    # NMI by hand: MI / mean(H(Y), H(C)) with Y = [0, 0, 1, 1], C = [0, 0, 0, 1]
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_y, h_c = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # ARI by hand: index sum(C(n_ij, 2)) = 1, rows sum 2, columns sum 3, C(4, 2) = 6
    expected_index = 2 * 3 / 6
    ari = (1 - expected_index) / ((2 + 3) / 2 - expected_index)
    assert representation.cluster_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
                                         ) == pytest.approx({"acc": 0.75,
                                                             "nmi": mi / ((h_y + h_c) / 2),
                                                             "ari": ari})


def test_hungarian_accuracy_is_the_best_of_all_matchings():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels, clusters = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
        best = max(np.mean(np.array(perm)[clusters] == labels)
                   for perm in itertools.permutations(range(5)))
        assert representation.clustering_accuracy(labels, clusters) == pytest.approx(best)


def blobs(n: int, classes: int = 10, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (classes, dim))
    labels = rng.integers(0, classes, n)
    return (centres[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32), labels


def test_probe_is_near_perfect_on_separable_codes_and_at_chance_on_random_labels():
    train, train_labels = blobs(5000)
    test, test_labels = train[3000:], train_labels[3000:]
    train, train_labels = train[:3000], train_labels[:3000]
    scores = representation.linear_probe(train, train_labels, test, test_labels, [100, None],
                                         seeds=3)
    assert scores["linear_acc_all"] > 0.99 and scores["linear_acc_100"] > 0.95
    assert "linear_acc_100_std" in scores and "linear_acc_all_std" not in scores
    assert representation.knn_accuracy(train, train_labels, test, test_labels) > 0.99
    kmeans, assignment, centres = representation.kmeans_runs(test, test_labels, 10, seeds=3)
    assert kmeans["kmeans_acc"] > 0.9 and kmeans["kmeans_nmi"] > 0.9
    assert assignment.shape == (2000,) and centres.shape == (10, 8)

    rng = np.random.default_rng(5)
    random_train, random_test = rng.integers(0, 10, 3000), rng.integers(0, 10, 2000)
    chance = representation.linear_probe(train, random_train, test, random_test, [None])
    tolerance = 4 * math.sqrt(0.1 * 0.9 / 2000)
    assert abs(chance["linear_acc_all"] - 0.1) < tolerance
    assert abs(representation.knn_accuracy(train, random_train, test, random_test) - 0.1
               ) < tolerance
    assert representation.kmeans_runs(test, random_test, 10, seeds=2)[0]["kmeans_nmi"] < 0.02


PROBE = OmegaConf.create({"train_sizes": [20, None], "train_images": None, "seeds": 2,
                          "knn_k": 5, "max_iter": 200, "baselines": ["pixels", "pca"],
                          "pool": None, "max_dim": None, "map_points": 200,
                          "grid_per_cluster": 4, "batch_size": 64})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from genlab.data import ImageDataModule

    root = tmp_path_factory.mktemp("digits")
    data = ImageDataModule("digits", str(root), str(root), channels=1, val_size=100,
                           test_size=300)
    data.setup()
    return data


def test_probe_writes_numbers_map_and_clusters(digits, tmp_path):
    torch.manual_seed(0)
    model = tiny_autoencoder(image_shape=(1, 32, 32))
    metrics, pictures = representation.probe(model, digits, "test", PROBE, tmp_path)
    for features, dim in (("code", 3), ("pixels", 1024), ("pca", 3)):
        assert metrics[f"probe/{features}/dim"] == dim
        for score in ("linear_acc_20", "linear_acc_20_std", "linear_acc_all", "knn_acc",
                      "kmeans_acc", "kmeans_acc_std", "kmeans_nmi", "kmeans_ari"):
            assert 0 <= abs(metrics[f"probe/{features}/{score}"]) <= 1
    assert metrics["probe/pixels/linear_acc_all"] > 0.9  # digits are easy from pixels
    assert set(pictures) == {"probe_map", "clusters"} and all(p.is_file() for p in
                                                              pictures.values())
    rows = (tmp_path / "clusters.csv").read_text().splitlines()
    assert rows[0] == "index,label,cluster,matched_label" and len(rows) == 301
    from PIL import Image
    assert Image.open(pictures["clusters"]).size == (4 * 34 + 2, 10 * 34 + 2)


def test_probe_pools_or_reduces_large_codes(digits, tmp_path, monkeypatch):
    """A flow-like model whose code is the image itself: pooled by 4 it has 64 numbers, and
    max_dim PCA-reduces it further."""
    model = tiny_autoencoder(image_shape=(1, 32, 32))
    monkeypatch.setattr(model, "encode", lambda x, labels=None: x.flatten(1))
    options = OmegaConf.merge(PROBE, {"baselines": [], "pool": 4})
    metrics, _ = representation.probe(model, digits, "test", options, tmp_path)
    assert metrics["probe/code/dim"] == 64 and "probe/pixels/dim" not in metrics
    options = OmegaConf.merge(options, {"max_dim": 10})
    assert representation.probe(model, digits, "test", options, tmp_path)[0][
        "probe/code/dim"] == 10
    monkeypatch.setattr(model, "encode", lambda x, labels=None: x.flatten(1)[:, :5])
    with pytest.raises(GenlabError, match="probe.pool"):
        representation.probe(model, digits, "test", options, tmp_path)


def test_probe_needs_an_encoder_and_labels(digits, fake_root):
    with pytest.raises(GenlabError, match="encodes images"):
        representation.check_probe(tiny_gan(), digits)
    from genlab.data import ImageDataModule

    celeba = ImageDataModule("celeba", str(fake_root), str(fake_root / "cache"), channels=3,
                             download=False, verify=False, val_size=4, batch_size=8)
    with pytest.raises(GenlabError, match="class labels"):
        representation.check_probe(tiny_autoencoder(), celeba)


def test_evaluate_runs_the_probe_and_the_tasks_of_a_trained_autoencoder(compose, tmp_path):
    """train.py's checkpoint (with its code Gaussian) through evaluate.py: test metrics,
    samples, the four tasks and the probe, whose numbers and pictures land in the run folder."""
    from genlab.run import evaluate, train

    run_dir = tmp_path / "train"
    train(compose(["model=dae", "data=digits", "model.channels=[8,16]", "model.code_dim=4",
                   "model.chain_steps=2", *SMALL_RUN, "data.val_size=16",
                   f"paths.output_dir={run_dir}"]))
    probe = [f"probe.{key}={value}" for key, value in (
        ("enabled", "true"), ("train_sizes", "[50,null]"), ("seeds", 2), ("map_points", 100),
        ("max_iter", 200))]
    metrics = evaluate(compose([f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                "trainer=cpu", "logger=none", "fid.enabled=false",
                                "sample_grid=4", "tasks=[reconstruct,interpolate,denoise,edit]",
                                "task_options.edit.examples=16", "task_options.denoise.images=4",
                                "+trainer.limit_test_batches=1",
                                "+trainer.enable_progress_bar=false", *probe],
                               config_name="evaluate"))
    assert metrics["test/recon_nll"] > 0 and "task/denoise/psnr" in metrics
    assert metrics["probe/code/dim"] == 4 and 0 <= metrics["probe/pca/kmeans_acc"] <= 1
    for name in ("samples.png", "reconstruct.png", "denoise.png", "edit.png", "probe_map.png",
                 "clusters.png", "clusters.csv", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
