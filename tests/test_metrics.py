"""FID, KID, IS, precision/recall and the FID Inception: the maths against closed forms and
hand-computed values, the image-set readers' bad inputs, the cache, and the CLI.

Tests that need the real Inception weights read GENLAB_INCEPTION_WEIGHTS, else
../shared/weights/pt_inception-2015-12-05-fc-zeroed.pth beside the repository (its classifier
is zeroed, so its logits are 0), and skip with the reason when neither exists.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import REPO, real_weights
from PIL import Image

from genlab.errors import GenlabError
from genlab.files.images import check_image_array, load_npz
from genlab.metrics import inception
from genlab.metrics.classifier import accuracy, cached_classifier
from genlab.metrics.fid import FeatureStats, fid_from_features, frechet_distance
from genlab.metrics.inception import (
    FIDInceptionV3,
    InceptionWeightsError,
    load_inception,
    preprocess,
    resize_bilinear_tf1,
)
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kid import kid, kid_subset_size_for
from genlab.metrics.precision_recall import precision_recall
from genlab.metrics.protocol import classifier_stats, evaluate_samples
from genlab.metrics.reference import InceptionStats, compare, reference_stats
from genlab.metrics.sources import open_images
from genlab.models.base import GenerativeModule


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(0)
    return inception.FeatureExtractor(real_weights(), batch_size=8)


def random_cov(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ----------------------------------------------------------------------------- FID --------

def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 64)) * 3 + 10
    assert abs(fid_from_features(x, x)) < 1e-8


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(1)
    # Diagonal covariances: sum of (sqrt(a_i) - sqrt(b_i))^2 plus the squared mean difference.
    a, b = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected,
                                                                              rel=1e-10)
    # General covariances: the textbook formula with scipy's matrix square root.
    s1, s2 = random_cov(rng, 32), random_cov(rng, 32)
    m1, m2 = rng.normal(size=32), rng.normal(size=32)
    textbook = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(textbook, rel=1e-8)
    # Singular covariances (fewer samples than dimensions) stay finite and non-negative.
    low_rank = rng.normal(size=(32, 3))
    assert frechet_distance(m1, low_rank @ low_rank.T, m1, low_rank @ low_rank.T) < 1e-8


def test_fid_of_gaussian_samples_approaches_the_distance_of_their_distributions():
    rng = np.random.default_rng(2)
    d, n = 8, 200_000
    s1, s2 = random_cov(rng, d), random_cov(rng, d)
    m1, m2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(m1, s1, n)
    y = rng.multivariate_normal(m2, s2, n)
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=0.02)


def test_streamed_moments_equal_numpy_on_large_offsets():
    x = np.random.default_rng(3).normal(size=(1000, 16)) + 1e4
    stats = FeatureStats()
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- KID --------

def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same_mean, same_std = kid(x, y, subsets=20, subset_size=300)
    assert abs(same_mean) < 3 * same_std + 1e-4
    shifted_mean, shifted_std = kid(x, y + 0.5, subsets=20, subset_size=300)
    assert shifted_mean > 10 * max(shifted_std, abs(same_mean))


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) + 1
    k = lambda a, b: (a @ b / 4 + 1) ** 3
    m = 20
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    mean, std = kid(x, y, subsets=3, subset_size=20)  # a subset of all 20 is the whole set
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std < 1e-12


def test_kid_with_fewer_images_than_the_subset_size_shrinks_it_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert kid_subset_size_for(50, 80, 1000) == 50
    assert "larger than the smaller image set" in caplog.text
    with pytest.raises(GenlabError, match="at least 2 images"):
        kid_subset_size_for(1, 80, 1000)


# ------------------------------------------------------------------ IS, precision/recall --

def test_inception_score_of_uniform_and_of_confident_balanced_predictions():
    assert inception_score(torch.zeros(100, 1008)) == pytest.approx((1.0, 0.0))
    confident = 50 * F.one_hot(torch.arange(1000) % 10, 1008).double()
    mean, std = inception_score(confident, shuffle=False)  # each split: 10 classes, 10 each
    assert mean == pytest.approx(10, rel=1e-6) and std < 1e-6
    with pytest.raises(GenlabError, match="at least 10 images"):
        inception_score(torch.zeros(5, 1008))


def brute_force_precision_recall(real, fake, k):
    def radii(x):
        d = torch.cdist(x, x)
        return d.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself

    d = torch.cdist(fake, real)
    precision = (d <= radii(real)[None, :]).any(1).float().mean().item()
    recall = (d <= radii(fake)[:, None]).any(0).float().mean().item()
    return precision, recall


def test_precision_recall_matches_brute_force_and_the_extremes():
    gen = torch.Generator().manual_seed(6)
    real = torch.randn(130, 8, generator=gen)
    fake = torch.randn(110, 8, generator=gen) * 1.5 + 0.3
    expected = brute_force_precision_recall(real.double(), fake.double(), 3)
    assert precision_recall(real, fake, k=3, block=32) == pytest.approx(expected, abs=1e-9)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, fake + 100, k=3) == (0.0, 0.0)


# ------------------------------------------------------------------------ Inception --------

def test_resize_matches_tensorflow1_resize_bilinear_by_hand():
    # TF1 resize_bilinear(align_corners=False, half_pixel_centers=False): output i samples the
    # source at i * in/out; the upper neighbour is clamped to the last pixel.
    # 1x3 -> 1x5: coordinates 0, 0.6, 1.2, 1.8, 2.4 over [0, 10, 40].
    row = torch.tensor([[[[0.0, 10.0, 40.0]]]])
    np.testing.assert_allclose(resize_bilinear_tf1(row, (1, 5))[0, 0, 0],
                               [0, 6, 16, 34, 40], atol=1e-4)
    # 2x2 -> 4x4: coordinates 0, 0.5, 1, 1.5 along both axes.
    image = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    expected = [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]]
    np.testing.assert_allclose(resize_bilinear_tf1(image, (4, 4))[0, 0], expected, atol=1e-5)
    # 3 -> 2 (downscaling, scale 1.5): coordinates 0 and 1.5.
    np.testing.assert_allclose(resize_bilinear_tf1(row, (1, 2))[0, 0, 0], [0, 25], atol=1e-5)
    # PyTorch's own bilinear resize uses half-pixel centres and gives other values.
    torch_resized = F.interpolate(image, size=(4, 4), mode="bilinear", align_corners=False)
    assert not torch.allclose(torch_resized[0, 0], torch.tensor(expected, dtype=torch.float))


def test_preprocess_repeats_a_grey_channel_and_scales_to_minus_one_one():
    grey = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    x = preprocess(grey)
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1 and x.max() <= 127 / 128
    torch.testing.assert_close(x, preprocess(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(GenlabError, match="uint8"):
        preprocess(grey.float())


def test_weights_load_only_with_every_key_matching(tmp_path):
    state = FIDInceptionV3().state_dict()
    full = tmp_path / "full.pth"
    torch.save(state, full)
    model = load_inception(full)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    del state["Mixed_7c.branch_pool.conv.weight"]
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(InceptionWeightsError, match="Missing key"):
        load_inception(partial)


def test_missing_weights_without_network_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(inception.urllib.request, "urlopen", offline)
    with pytest.raises(InceptionWeightsError) as err:
        inception.resolve_weights()
    message = str(err.value)
    assert inception.WEIGHTS_URL in message and inception.WEIGHTS_ENV in message
    assert str(tmp_path / "hub" / "checkpoints" / inception.WEIGHTS_FILENAME) in message
    assert not list((tmp_path / "hub" / "checkpoints").glob("*"))  # no partial file left


def test_real_weights_give_2048_features(extractor):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    pool, logits = extractor.features(images)
    assert pool.shape == (5, 2048) and logits.shape == (5, 1008)
    assert torch.isfinite(pool).all() and (pool >= 0).all() and pool.std() > 0
    unfolded = load_inception(extractor.weights_path)  # BatchNorm kept separate
    with torch.inference_mode():
        reference_pool, _ = unfolded(preprocess(images))
    torch.testing.assert_close(pool, reference_pool, atol=1e-3, rtol=1e-3)
    single, _ = extractor.features(images[:1])  # batch composition does not matter
    torch.testing.assert_close(single[0], pool[0], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------- image sets ----------

def write_pngs(folder, sizes, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_folder_of_images_reads_grey_as_rgb_and_skips_other_files(tmp_path, caplog):
    folder = write_pngs(tmp_path / "set", [(32, 32)] * 3, mode="L")
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        source = open_images(folder)
    assert "skipped 1 files that are not images" in caplog.text
    (batch,) = source.batches(10)
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.uint8
    assert torch.equal(batch[:, 0], batch[:, 2])


def test_bad_image_sets_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="holds no readable images"):
        open_images(tmp_path / "empty")
    with pytest.raises(GenlabError, match="2 different sizes"):
        open_images(write_pngs(tmp_path / "mixed", [(32, 32), (32, 32), (64, 48)]))
    with pytest.raises(GenlabError, match="does not exist"):
        open_images(tmp_path / "nowhere")
    floats = tmp_path / "floats.npz"
    np.savez(floats, images=np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(GenlabError, match="must be uint8"):
        load_npz(floats)
    flat = tmp_path / "flat.npz"
    np.savez(flat, images=np.zeros((4, 3072), np.uint8))
    with pytest.raises(GenlabError, match="must be shaped"):
        load_npz(flat)
    five = tmp_path / "five.npz"
    np.savez(five, images=np.zeros((4, 32, 32, 5), np.uint8))
    with pytest.raises(GenlabError, match="1 or 3 channels"):
        load_npz(five)
    other = tmp_path / "other.npz"
    np.savez(other, pictures=np.zeros((4, 32, 32, 3), np.uint8), masks=np.zeros(4, np.uint8))
    with pytest.raises(GenlabError, match="holds no image array"):
        load_npz(other)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not an npz")
    with pytest.raises(GenlabError, match="Cannot read .* as an .npz"):
        load_npz(garbage)


def test_an_npz_with_one_uint8_array_of_any_name_is_an_image_set(tmp_path):
    path = tmp_path / "mine.npz"
    pictures = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.savez(path, pictures=pictures, labels=np.arange(4))
    images, labels = load_npz(path)
    assert torch.equal(images, torch.from_numpy(pictures).permute(0, 3, 1, 2))
    assert labels.tolist() == [0, 1, 2, 3]
    assert len(open_images(path)) == 4


def test_image_arrays_accept_the_usual_layouts():
    nhwc = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    nchw = check_image_array(nhwc)
    assert nchw.shape == (2, 3, 32, 32)
    assert torch.equal(check_image_array(nchw), nchw)
    assert check_image_array(nhwc[..., 0]).shape == (2, 1, 32, 32)


# ------------------------------------------------------------ cache and streaming --------

class CountingExtractor:
    """A stand-in for the Inception extractor in plumbing tests: 12-d 'features' (the mean pixel
    value plus noise); it counts the images it sees."""

    batch_size, precision, weights_hash = 4, "fp32", "0" * 64

    def __init__(self):
        self.seen = 0

    def iter_features(self, batches, total=None, desc=""):
        for batch in batches:
            self.seen += len(batch)
            pool = batch.float().mean((1, 2, 3))[:, None] + torch.randn(len(batch), 12)
            yield pool, torch.zeros(len(batch), 10)


def test_reference_statistics_are_cached_by_source_size_and_weights(tmp_path):
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    fake = CountingExtractor()
    first = reference_stats(images, extractor=fake, cache_dir=tmp_path)
    again = reference_stats(images, extractor=fake, cache_dir=tmp_path)
    assert fake.seen == 20 and np.array_equal(first.mu, again.mu) and again.n == 20
    reference_stats(images, n=10, extractor=fake, cache_dir=tmp_path)  # another size
    fake.weights_hash = "1" * 64
    reference_stats(images, extractor=fake, cache_dir=tmp_path)  # other weights
    assert fake.seen == 50
    assert len(list((tmp_path / "inception-stats").glob("*.npz"))) == 3
    assert reference_stats(images, n=1000, extractor=fake, cache_dir=tmp_path).n == 20  # at most


class NoiseModel(torch.nn.Module):
    """The part of the model contract evaluate_samples uses."""

    image_shape, conditional, device = (1, 32, 32), False, torch.device("cpu")

    def sample(self, n, labels=None, generator=None):
        return torch.rand((n, *self.image_shape), generator=generator) * 2 - 1


def test_evaluate_samples_streams_and_saves_uint8(tmp_path):
    reference = InceptionStats(mu=np.zeros(12), sigma=np.eye(12), n=30,
                               features=np.random.default_rng(0).normal(size=(30, 12)))
    out = evaluate_samples(NoiseModel(), reference, CountingExtractor(), num_samples=25,
                           batch_size=10, seed=0, npz_path=tmp_path / "s.npz",
                           grid_path=tmp_path / "g.png", kid_subset_size=10)
    assert set(out) >= {"fid", "kid_mean", "kid_std", "precision", "recall", "is_mean", "is_std"}
    assert out["n_a"] == 25 and out["is_mean"] == pytest.approx(1.0)
    saved, _ = load_npz(tmp_path / "s.npz")
    assert saved.shape == (25, 1, 32, 32) and (tmp_path / "g.png").is_file()


def test_classifier_features_separate_real_digits_from_noise(tmp_path):
    from genlab.data.datasets import load_dataset

    images, labels = load_dataset("digits", tmp_path, tmp_path).splits["train"]
    train, held_out = slice(0, 1500), slice(1500, None)
    classifier = cached_classifier("digits", images[train], labels[train], tmp_path,
                                   test=(images[held_out], labels[held_out]))
    assert accuracy(classifier, images[held_out], labels[held_out]) > 0.9
    cached = cached_classifier("digits", images[train], labels[train], tmp_path)
    assert torch.equal(cached.head.weight, classifier.head.weight)
    real, other = classifier_stats(classifier, images[train]), classifier_stats(
        classifier, images[held_out])
    noise = classifier_stats(classifier, torch.randint(0, 256, (300, 1, 32, 32),
                                                        dtype=torch.uint8))
    close = frechet_distance(real.mean, real.cov, other.mean, other.cov)
    far = frechet_distance(real.mean, real.cov, noise.mean, noise.cov)
    assert far > 10 * close


def test_compare_reports_what_the_statistics_allow(caplog):
    rng = np.random.default_rng(7)
    a = InceptionStats(mu=np.zeros(4), sigma=np.eye(4), n=30, features=rng.normal(size=(30, 4)))
    b = InceptionStats(mu=np.ones(4), sigma=np.eye(4), n=40)
    with caplog.at_level(logging.WARNING):
        out = compare(a, b)
    assert out == {"fid": pytest.approx(4.0), "n_a": 30, "n_b": 40}
    assert "only FID is reported" in caplog.text


# ------------------------------------------------------------------------------ CLI --------

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "genlab.metrics", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_cli_compares_two_npz_files(tmp_path):
    weights = real_weights()
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, images=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    np.savez(b, images=rng.integers(0, 256, (7, 32, 32, 1), dtype=np.uint8))
    result = run_cli(str(a), str(b), "--weights", weights, "--batch-size", "7",
                     "--kid-subset-size", "5", "--isc", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert set(out) >= {"fid", "kid_mean", "kid_std", "precision", "recall", "n_a", "n_b",
                        "is_mean", "is_std"}
    assert (out["n_a"], out["n_b"]) == (10, 7) and out["fid"] > 0
    assert out["is_mean"] == pytest.approx(1.0)  # the shared weights' classifier is zeroed


def test_cli_errors_are_one_paragraph(tmp_path):
    missing = run_cli(str(tmp_path), str(tmp_path), "--weights", str(tmp_path / "w.pth"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert inception.WEIGHTS_URL in missing.stderr and inception.WEIGHTS_ENV in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli(str(tmp_path / "empty"), "cifar10:test", "--weights", real_weights())
    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert "holds no readable images" in empty.stderr


def test_cli_refuses_sets_of_different_sizes_as_it_refuses_mixed_sizes_in_one_set(tmp_path):
    from genlab.metrics.cli import check_same_size

    small = open_images(write_pngs(tmp_path / "small", [(32, 32)] * 3))
    large = open_images(write_pngs(tmp_path / "large", [(48, 48)] * 3))
    check_same_size(small, open_images(write_pngs(tmp_path / "same", [(32, 32)] * 2)))
    with pytest.raises(GenlabError, match=r"holds 32x32 images and .*large 48x48 ones"):
        check_same_size(small, large)
    result = run_cli(str(tmp_path / "small"), str(tmp_path / "large"), "--weights",
                     real_weights())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "48x48" in result.stderr and "resize one set" in result.stderr


# ------------------------------------------------------------- training callback ---------

class NoiseGenerator(GenerativeModule):
    """A 'model' whose samples are noise: enough of a LightningModule to train for a step."""

    def __init__(self):
        super().__init__(image_shape=(1, 32, 32), monitor="val/loss")
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.offset - 1) ** 2

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", (self.offset - 1) ** 2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def sample(self, n, labels=None, generator=None):
        return torch.rand((n, *self.image_shape), generator=generator) * 2 - 1


def test_fid_callback_logs_val_fid_and_selects_the_best_checkpoint(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from genlab.callbacks.fid import FIDCallback
    from genlab.data import ImageDataModule

    data = ImageDataModule("digits", str(tmp_path), str(tmp_path), channels=1, val_size=100,
                           batch_size=16)
    fid = FIDCallback(every_n_epochs=2, num_samples=10, reference_num=10, batch_size=4,
                      weights=real_weights(), kid_subsets=3, kid_subset_size=5,
                      cache_dir=str(tmp_path))
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/fid", every_n_epochs=2)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, logger=False,
                        callbacks=[fid, best], enable_progress_bar=False, accelerator="cpu",
                        enable_model_summary=False)
    trainer.fit(NoiseGenerator(), datamodule=data)
    metrics = trainer.callback_metrics
    assert metrics["val/fid"] > 0 and torch.isfinite(metrics["val/kid"])
    assert best.best_model_score == metrics["val/fid"] and "epoch=1" in best.best_model_path
    assert len(list((tmp_path / "inception-stats").glob("*.npz"))) == 1


def test_configs_offer_the_fid_callback_and_evaluation_keys(compose):
    cfg = compose(["callbacks=fid"])
    assert cfg.callbacks.fid._target_ == "genlab.callbacks.fid.FIDCallback"
    assert "model_checkpoint" in cfg.callbacks and "sample_grid" in cfg.callbacks
    assert "fid" not in compose([]).callbacks  # off by default
    fid = compose(["ckpt_path=x.ckpt"], config_name="evaluate").fid
    assert fid.enabled and fid.num_samples == 50000 and fid.reference_split == "train"


class ProjectionExtractor:
    """A deterministic stand-in for the Inception extractor: 12-d features that are a fixed
    random projection of the pixels (so equal images give equal features)."""

    batch_size, precision, weights_hash, device = 8, "fp32", "1" * 64, torch.device("cpu")

    def __init__(self):
        self.projection = torch.randn(32 * 32, 12, generator=torch.Generator().manual_seed(0))

    def iter_features(self, batches, total=None, desc=""):
        for batch in batches:
            pool = batch.float().mean(1).flatten(1) @ self.projection / 1000
            yield pool, torch.zeros(len(batch), 10)


def test_the_fid_callback_and_evaluate_measure_against_the_same_reference(tmp_path,
                                                                          monkeypatch):
    """One protocol: for the same samples, val/fid of the callback equals evaluate.py's fid,
    and both use the whole training split, validation hold-out included."""
    import lightning as L

    from genlab.callbacks import fid as fid_callback
    from genlab.data import ImageDataModule
    from genlab.metrics.protocol import sample_quality

    extractor = ProjectionExtractor()
    monkeypatch.setattr(fid_callback, "FeatureExtractor", lambda *args, **kwargs: extractor)
    monkeypatch.setattr(fid_callback, "resolve_weights", lambda weights: None)
    data = ImageDataModule("digits", str(tmp_path), str(tmp_path), channels=1, val_size=100,
                           test_size=150, batch_size=16)
    callback = fid_callback.FIDCallback(every_n_epochs=1, num_samples=40, batch_size=8,
                                        kid_subsets=3, kid_subset_size=20,
                                        cache_dir=str(tmp_path), seed=5)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                        callbacks=[callback], enable_progress_bar=False, accelerator="cpu",
                        enable_model_summary=False, enable_checkpointing=False)
    model = NoiseGenerator()
    trainer.fit(model, datamodule=data)
    result = sample_quality(model, data, extractor, num_samples=40, batch_size=8, seed=5,
                            classifier=False, kid_subsets=3, kid_subset_size=20,
                            cache_dir=tmp_path)
    assert result["fid"] == pytest.approx(float(trainer.callback_metrics["val/fid"]), rel=1e-6)
    assert result["kid_mean"] == pytest.approx(float(trainer.callback_metrics["val/kid"]),
                                               rel=1e-5)
    assert result["reference"] == "digits:train"
    assert result["n_reference"] == 1797 - 150  # everything but the test hold-out
    assert len(data.splits["train"][0]) == 1797 - 150 - 100
