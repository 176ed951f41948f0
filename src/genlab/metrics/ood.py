"""Out-of-distribution detection: how well a model's score of an image tells test images of its
own dataset (in-distribution) from images of another dataset of the same shape.

Scores, higher meaning "more like the training data", one for each capability a model has (so
every family that gains a capability gains its score):

    score        needs            what
    neg_energy   energy(x)        -E(x): EBMs (a conditional model's marginal energy); for JEM
                                  it is logsumexp_y f(x)[y] = log p(x) + log Z
    max_softmax  classify(x)      max_y p(y | x) (Hendrycks & Gimpel 2017): JEM
    logsumexp    classify(x)      logsumexp_y f(x)[y]: JEM (equal to neg_energy there)
    log_prob     log_prob(x)      log p(x) in nats, exact or a lower bound: the VAE's IWAE bound,
                                  the DDPM's variational bound, flows, PixelCNNs (unconditional
                                  models; a conditional one needs labels OOD images lack)

AUROC (area under the ROC curve, scikit-learn's `roc_auc_score`, in-distribution as the
positive class) is the probability that a random in-distribution image scores above a random
out-of-distribution one (ties count 1/2): 1 separates them perfectly, 0.5 is chance, and below
0.5 the model prefers the other dataset, as likelihood models trained on Fashion-MNIST do for
MNIST and those trained on CIFAR-10 do for SVHN (Nalisnick et al. 2019).

`python evaluate.py ckpt_path=... ood.datasets=[fashion_mnist]` scores `ood.num_images` test
images of each (a seeded subset; the test split, or the training split of a dataset without
one) and writes `ood/<dataset>/<score>/auroc` to metrics.json.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from genlab.data.datasets import DATASETS, load_dataset
from genlab.data.transforms import binarize
from genlab.errors import GenlabError, check_choice

log = logging.getLogger(__name__)


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """P(score of an in-distribution image > score of an out-of-distribution one), ties 1/2."""
    labels = np.concatenate([np.ones(len(scores_in)), np.zeros(len(scores_out))])
    return float(roc_auc_score(labels, np.concatenate([scores_in, scores_out])))


def score_names(model) -> list[str]:
    """The scores a model (or a model class; conditional models have no log_prob score)
    offers, from its capabilities."""
    names = []
    if callable(getattr(model, "energy", None)):
        names.append("neg_energy")
    if callable(getattr(model, "classify", None)):
        names += ["max_softmax", "logsumexp"]
    if callable(getattr(model, "log_prob", None)) and not getattr(model, "conditional", False):
        names.append("log_prob")
    return names


@torch.no_grad()
def scores(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every score of `model` for images x in [-1, 1], (B,) each."""
    out = {}
    names = score_names(model)
    if "neg_energy" in names:
        out["neg_energy"] = -model.energy(x)
    if "max_softmax" in names:
        logits = model.classify(x)
        out["max_softmax"] = logits.softmax(-1).max(-1).values
        out["logsumexp"] = logits.logsumexp(-1)
    if "log_prob" in names:
        out["log_prob"] = model.log_prob(x)
    return {name: value.float() for name, value in out.items()}


def check_ood(model, image_shape: tuple[int, int, int], datasets: Iterable[str],
              conditional: bool = False) -> None:
    """A GenlabError, before any work, unless `model` (a model or its class, `conditional` as
    configured) has a score and every dataset exists and has images of `image_shape` (datasets
    that are resized on reading take the model's size). Run at start-up by
    `genlab.run.validate`."""
    names = [n for n in score_names(model) if n != "log_prob" or not conditional]
    cls = model if isinstance(model, type) else type(model)
    if not names:
        raise GenlabError(f"ood.datasets is set, but {cls.__name__} has no "
                          "out-of-distribution score: scores come from energy(x) (EBMs), "
                          "classify(x) (JEM) or log_prob(x) (unconditional likelihood models). "
                          "Leave ood.datasets empty for this model.")
    c, h, w = image_shape
    for name in datasets:
        spec = DATASETS[check_choice("ood.datasets", name, DATASETS)]
        if not spec.resizable and (spec.channels, 32, 32) != (c, h, w):
            raise GenlabError(
                f"ood.datasets: {name} images are {spec.channels}x32x32, but the model's are "
                f"{c}x{h}x{w}; out-of-distribution scores compare images of one shape. Choose "
                "datasets with images of that shape (MNIST-like 1x32x32: mnist, fashion_mnist, "
                "digits; 3x32x32: cifar10, svhn, celeba, image_folder).")


def _subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n of the images (all when fewer), a seeded random choice in a fixed order."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images[order[:n].sort().values]


def _score_all(model, images: torch.Tensor, datamodule, batch_size: int, seed: int
               ) -> dict[str, np.ndarray]:
    """Scores of uint8 images, turned into model inputs as the model's test images are."""
    generator = torch.Generator().manual_seed(seed)
    if datamodule.binarize:
        images = binarize(images, generator)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        x = datamodule.to_model_input(images[start:start + batch_size].to(model.device),
                                      train=False)
        for name, value in scores(model, x).items():
            parts.setdefault(name, []).append(value.cpu())
    return {name: torch.cat(values).numpy() for name, values in parts.items()}


def ood_metrics(model, datamodule, *, datasets: Iterable[str], num_images: int = 1000,
                batch_size: int = 250, seed: int = 0, options: dict | None = None,
                root: str, cache_dir: str) -> dict[str, float]:
    """`ood/<dataset>/<score>/auroc` for each dataset and score, `num_images` test images of
    the model's dataset against as many of each other dataset; `options[<dataset>]` are reader
    options (e.g. image_folder's `path`)."""
    datasets = list(datasets)
    check_ood(model, datamodule.image_shape, datasets)
    c, size, _ = datamodule.image_shape
    own = _subset(datamodule.splits["test"][0], num_images, seed)
    log.info("OOD scores: %d %s test images", len(own), datamodule.name)
    scores_in = _score_all(model, own, datamodule, batch_size, seed)
    metrics: dict[str, float] = {"ood/num_images": len(own)}
    for name in datasets:
        arrays = load_dataset(name, root, cache_dir, image_size=size, channels=c,
                              download=datamodule.download, verify=datamodule.verify,
                              **dict((options or {}).get(name) or {}))
        images = arrays.splits.get("test", arrays.splits["train"])[0]
        other = _subset(images, num_images, seed)
        log.info("OOD scores: %d %s images", len(other), name)
        scores_out = _score_all(model, other, datamodule, batch_size, seed + 1)
        for score, values in scores_in.items():
            metrics[f"ood/{name}/{score}/auroc"] = auroc(values, scores_out[score])
    return metrics
