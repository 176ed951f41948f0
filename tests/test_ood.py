"""Out-of-distribution scores: AUROC against scikit-learn and a direct count, the scores each
family offers, and evaluate.py's ood.datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.models import small_vae, tiny_ddpm, tiny_ebm, tiny_gan, tiny_jem
from helpers.runs import SMALL_RUN, fake_data_overrides
from sklearn.metrics import roc_auc_score

from genlab.data import ImageDataModule
from genlab.errors import GenlabError
from genlab.metrics.ood import auroc, check_ood, ood_metrics, score_names, scores
from genlab.run import evaluate, train


def pairwise_auroc(inside: list[float], outside: list[float]) -> float:
    """The share of (in, out) pairs with the in-distribution score higher, ties 1/2."""
    wins = sum((a > b) + 0.5 * (a == b) for a in inside for b in outside)
    return wins / (len(inside) * len(outside))


@pytest.mark.parametrize("inside, outside", [
    ([3.0, 2.0, 5.0], [1.0, 0.0]),                 # perfectly separated: 1
    ([0.0, 1.0], [2.0, 3.0, 4.0]),                 # the other way round: 0
    ([1.0, 2.0, 2.0, 4.0], [2.0, 0.5, 3.0]),       # with ties
])
def test_auroc_matches_a_direct_count_and_scikit_learn(inside, outside):
    value = auroc(np.array(inside), np.array(outside))
    assert value == pytest.approx(pairwise_auroc(inside, outside))
    labels = [1] * len(inside) + [0] * len(outside)
    assert value == pytest.approx(roc_auc_score(labels, inside + outside))


def test_each_family_offers_the_scores_of_its_capabilities():
    assert score_names(tiny_ebm()) == ["neg_energy"]
    assert score_names(tiny_jem()) == ["neg_energy", "max_softmax", "logsumexp"]
    assert score_names(small_vae()) == ["log_prob"]
    assert score_names(tiny_ddpm()) == ["log_prob"]
    assert score_names(tiny_gan()) == []
    assert score_names(small_vae(num_classes=3, conditional=True)) == []


def test_jem_scores_are_its_classifier_read_as_an_energy():
    model = tiny_jem()
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    out = scores(model, x)
    logits = model.classify(x)
    assert torch.allclose(out["neg_energy"], out["logsumexp"])
    assert torch.allclose(out["logsumexp"], torch.logsumexp(logits, 1))
    assert torch.allclose(out["max_softmax"], logits.softmax(1).max(1).values)


def fake_mnist(fake_root, name: str = "mnist") -> ImageDataModule:
    data = ImageDataModule(name, str(fake_root), str(fake_root / "cache"), channels=1,
                           val_size=8, batch_size=8, download=False, verify=False)
    data.setup()
    return data


def test_ood_metrics_score_both_datasets_with_every_score(fake_root):
    model = tiny_jem(image_shape=(1, 32, 32), num_classes=10)
    data = fake_mnist(fake_root)
    metrics = ood_metrics(model, data, datasets=["fashion_mnist", "digits"], num_images=12,
                          batch_size=4, seed=0, root=str(fake_root),
                          cache_dir=str(fake_root / "cache"))
    assert metrics["ood/num_images"] == 12  # the whole fake test split
    for dataset in ("fashion_mnist", "digits"):
        for score in ("neg_energy", "max_softmax", "logsumexp"):
            assert 0 <= metrics[f"ood/{dataset}/{score}/auroc"] <= 1
    # by hand: the same images scored directly
    own = data.to_model_input(data.splits["test"][0], train=False)
    other = fake_mnist(fake_root, "fashion_mnist")
    out = other.to_model_input(other.splits["test"][0], train=False)
    expected = auroc(-model.energy(own).detach().numpy(), -model.energy(out).detach().numpy())
    assert metrics["ood/fashion_mnist/neg_energy/auroc"] == pytest.approx(expected)


def test_a_dataset_of_another_shape_or_a_model_without_scores_is_explained():
    """Checked from the model's class at start-up (test_validate.py has evaluate.py's cases)."""
    from genlab.models.ebm import EBM
    from genlab.models.gan import GAN
    from genlab.models.vae import VAE

    with pytest.raises(GenlabError, match=r"cifar10 images are 3x32x32, but the model's are "
                                          r"1x32x32"):
        check_ood(EBM, (1, 32, 32), ["cifar10"])
    with pytest.raises(GenlabError, match="GAN has no out-of-distribution score"):
        check_ood(GAN, (1, 32, 32), ["fashion_mnist"])
    with pytest.raises(GenlabError, match="VAE has no out-of-distribution score"):
        check_ood(VAE, (1, 32, 32), ["fashion_mnist"], conditional=True)
    with pytest.raises(GenlabError, match="ood.datasets='ood_set' is not valid"):
        check_ood(tiny_ebm(), (1, 16, 16), ["ood_set"])
    check_ood(EBM, (3, 32, 32), ["cifar10", "svhn", "digits", "image_folder"])


def test_evaluate_writes_ood_aurocs_to_metrics_json(compose, fake_root, tmp_path):
    train(compose(["model=ebm", "data=mnist", *SMALL_RUN, "model.buffer_size=16",
                   "model.long_run_steps=2", *fake_data_overrides("mnist", fake_root)]))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    metrics = evaluate(compose([f"ckpt_path={ckpt}", "trainer=cpu", "logger=none",
                                "fid.enabled=false", "sample_grid=0",
                                "ood.datasets=[fashion_mnist]", "ood.num_images=6",
                                f"paths.data_dir={fake_root}",
                                f"paths.cache_dir={fake_root / 'cache'}",
                                "+trainer.enable_progress_bar=false"], config_name="evaluate"))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["ood/fashion_mnist/neg_energy/auroc"] == metrics[
        "ood/fashion_mnist/neg_energy/auroc"]
    assert written["ood/num_images"] == 6 and "test/e_pos" in written
