"""A classifier-feature Fréchet distance for MNIST-like data (``fid_classifier``).

Inception features are made for 299x299 natural photographs; on 28x28 digits and clothing they
are a poor embedding. A common complement is the Fréchet distance computed on the penultimate
features of a small classifier trained on the dataset itself (e.g. the "FID with a LeNet"
reported for MNIST GANs):

    fid_classifier = ||mu_s - mu_r||^2 + tr(S_s + S_r - 2 (S_s S_r)^(1/2))

with the moments of the classifier's 128-d features on the samples (s) and the reference split
(r). The numbers are only comparable between runs that use the same classifier, so the
classifier is trained once per dataset (seeded, fixed recipe) and cached in
``<cache_dir>/classifiers/``, keyed by the dataset name, a hash of its training images and
labels, and the recipe version.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import GenlabError
from genlab.files.atomic import atomic_write

log = logging.getLogger(__name__)
RECIPE_VERSION = 1
FEATURE_DIM = 128


class SmallClassifier(nn.Module):
    """Three stride-2 convolutions and a 128-d feature layer: uint8 (B, C, 32, 32) images in,
    features (:meth:`embed`) or class logits (:meth:`forward`) out."""

    def __init__(self, channels: int = 1, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * (image_size // 8) ** 2, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float() / 127.5 - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 2,
                     min_steps: int = 150, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0) -> SmallClassifier:
    """Fit a :class:`SmallClassifier` to uint8 images (N, C, H, W) and labels 0..K-1: Adam with
    a cosine learning-rate decay for ``epochs`` epochs, or ``min_steps`` steps for small
    datasets (a fixed recipe, so every run gets the same network)."""
    torch.manual_seed(seed)
    model = SmallClassifier(images.shape[1], int(labels.max()) + 1, images.shape[-1])
    steps = max(epochs * -(-len(images) // batch_size), min_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:  # a fresh permutation per epoch
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        batch, order = order[:batch_size], order[batch_size:]
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def accuracy(model: SmallClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = sum((model(images[i:i + 1000]).argmax(1) == labels[i:i + 1000]).sum().item()
                  for i in range(0, len(images), 1000))
    return correct / len(images)


def _data_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{RECIPE_VERSION}|{tuple(images.shape)}".encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_classifier(dataset: str, images: torch.Tensor, labels: torch.Tensor,
                      cache_dir: str | Path, test: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> SmallClassifier:
    """The dataset's classifier: loaded from ``cache_dir/classifiers/`` when it was trained on
    these images before, otherwise trained now (logging its test accuracy) and cached."""
    if labels.min() < 0:
        raise GenlabError(f"fid_classifier needs a labelled dataset; {dataset} has unlabelled "
                          "images. Turn it off with fid.classifier=false.")
    path = (Path(cache_dir) / "classifiers"
            / f"{dataset}-{_data_hash(images, labels)[:16]}-v{RECIPE_VERSION}.pt")
    model = SmallClassifier(images.shape[1], int(labels.max()) + 1, images.shape[-1])
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval().requires_grad_(False)
    log.info("Training the %s feature classifier for fid_classifier once (%d images)", dataset,
             len(images))
    model = train_classifier(images, labels)
    if test is not None:
        log.info("%s classifier test accuracy: %.4f", dataset, accuracy(model, *test))
    with atomic_write(path) as f:
        torch.save(model.state_dict(), f)
    return model
