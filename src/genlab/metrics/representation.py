"""The representation evaluation of every model that encodes (`evaluate.py probe.enabled=true`):
how much of the class structure a frozen model's codes hold, against raw pixels and PCA at the
code's dimension, so that the numbers mean something.

Codes: `model.encode` of the training split (the validation hold-out excluded) and of the
evaluated split (VAE: the posterior mean; autoencoders: the code; a flow: its z, which
`pool` / `max_dim` can shrink). On each set of features (code, pixels, pca):

    linear probe   logistic regression (scikit-learn, L2, C = 1) on standardised features,
                   trained on n training images for each n of `train_sizes` (seeded random
                   subsets, `seeds` of them for n below the whole split: mean and std), accuracy
                   on the evaluated split
    k-NN           k-nearest-neighbour accuracy (Euclidean, on the features as they are: the
                   geometry the model made; k = knn_k)
    k-means        k = number of classes, on the evaluated split's features, `seeds` runs:
                   clustering accuracy (the best one-to-one matching of clusters to classes,
                   Hungarian algorithm), NMI and ARI, mean and std over the runs

Published reference (MNIST, k-means with k = 10, all 70k images): raw pixels about 53%
accuracy, autoencoder features about 82%, DEC 84%, IDEC 88% (Xie et al. 2016; Guo et al. 2017).

Outputs beside metrics.json: `probe_map.png` (the evaluated split's codes in 2-D by PCA and by
t-SNE, coloured by class), `clusters.csv` (each image's cluster of the lowest-inertia k-means
run and the class that cluster is matched to) and `clusters.png` (one row per cluster, in the
order of their matched classes: the images nearest its centre).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from genlab.errors import GenlabError, check_choices
from genlab.files.atomic import atomic_write
from genlab.files.grid import make_grid, save_png
from genlab.models.base import encode_all

log = logging.getLogger(__name__)
BASELINES = ("pixels", "pca")


# -- scores ----------------------------------------------------------------------------------
def match_clusters(labels: np.ndarray, clusters: np.ndarray) -> dict[int, int]:
    """The one-to-one assignment of clusters to classes that maximises the number of images
    whose cluster is assigned their class (Hungarian algorithm on the contingency table)."""
    classes, ids = np.unique(labels), np.unique(clusters)
    table = np.array([[np.sum((clusters == c) & (labels == y)) for y in classes] for c in ids])
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(ids[r]): int(classes[c]) for r, c in zip(rows, cols)}


def clustering_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """The share of images whose cluster is matched to their class (`match_clusters`)."""
    matched = match_clusters(labels, clusters)
    return float(np.mean([matched.get(int(c), -1) == y for c, y in zip(clusters, labels)]))


def cluster_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Clustering accuracy, normalised mutual information (arithmetic mean normalisation) and
    adjusted Rand index of a clustering against the classes."""
    return {"acc": clustering_accuracy(labels, clusters),
            "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters))}


def _summary(name: str, values: list[float]) -> dict[str, float]:
    """{name: mean} and, for more than one value, {name_std: their standard deviation}."""
    out = {name: float(np.mean(values))}
    if len(values) > 1:
        out[f"{name}_std"] = float(np.std(values, ddof=1))
    return out


def linear_probe(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                 test_labels: np.ndarray, sizes: list[int | None], seeds: int = 5,
                 max_iter: int = 1000) -> dict[str, float]:
    """Test accuracy of logistic regression on standardised features, trained on n images for
    each n in `sizes` (None: all): `linear_acc_<n>` (mean over `seeds` random subsets, and
    `_std`, when n is below the training set's size) and `linear_acc_all`."""
    out = {}
    for size in sizes:
        whole = size is None or size >= len(train)
        accuracies = []
        for seed in range(1 if whole else seeds):
            rows = (np.arange(len(train)) if whole else
                    np.random.default_rng(seed).permutation(len(train))[:size])
            probe = make_pipeline(StandardScaler(),
                                  LogisticRegression(max_iter=max_iter, random_state=seed))
            probe.fit(train[rows], train_labels[rows])
            accuracies.append(float(probe.score(test, test_labels)))
        out.update(_summary(f"linear_acc_{'all' if size is None else size}", accuracies))
    return out


def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                 test_labels: np.ndarray, k: int = 10) -> float:
    """Test accuracy of a k-nearest-neighbour vote (Euclidean) among the training features."""
    knn = KNeighborsClassifier(n_neighbors=k).fit(train, train_labels)
    return float(knn.score(test, test_labels))


def kmeans_runs(features: np.ndarray, labels: np.ndarray, k: int, seeds: int = 5
                ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """k-means with k clusters (k-means++ initialisation, one per seed): the mean and std of
    `cluster_scores` over the seeds as `kmeans_acc`, `kmeans_acc_std`, ..., and the
    assignment and centres of the run with the lowest inertia."""
    from sklearn.cluster import KMeans

    runs, best = [], None
    for seed in range(seeds):
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(features)
        runs.append(cluster_scores(labels, km.labels_))
        if best is None or km.inertia_ < best.inertia_:
            best = km
    summary = {}
    for key in runs[0]:
        summary.update(_summary(f"kmeans_{key}", [run[key] for run in runs]))
    return summary, best.labels_, best.cluster_centers_


# -- codes -----------------------------------------------------------------------------------
def check_probe(model, datamodule) -> None:
    """A GenlabError unless the model encodes and the data has classes."""
    if not callable(getattr(model, "encode", None)):
        raise GenlabError(f"probe.enabled=true needs a model that encodes images (an `encode` "
                          f"method: VAE, autoencoders, flows); {type(model).__name__} has none. "
                          "Set probe.enabled=false.")
    if not datamodule.num_classes or not datamodule.labelled:  # (num_classes sets it up)
        raise GenlabError(f"probe.enabled=true scores codes against class labels, and "
                          f"{datamodule.name} has none. Use a labelled dataset (MNIST, "
                          "Fashion-MNIST, CIFAR-10, SVHN, digits, an image folder with class "
                          "sub-folders) or set probe.enabled=false.")


def code_reducer(model, pool: int | None):
    """Per batch: codes flattened to (B, D) on the CPU, average-pooled by `pool` first when
    they have the image's shape (a flow's z: (B, C, H, W) or (B, C*H*W))."""
    def reduce(z: torch.Tensor) -> torch.Tensor:
        z = z.float()
        if pool:
            if z[0].numel() != model.num_dims:
                raise GenlabError(f"probe.pool={pool} pools codes shaped like the images "
                                  f"({model.num_dims} numbers), but this model's codes have "
                                  f"{z[0].numel()}. Set probe.pool=null (or probe.max_dim).")
            z = F.avg_pool2d(z.reshape(len(z), *model.image_shape), pool)
        return z.flatten(1).cpu()
    return reduce


def encode_split(model, datamodule, split: str, n: int | None, batch_size: int, pool: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Codes (N, D) float32 and labels of the first n images of a split (None: all)."""
    images, labels = datamodule.splits[split]
    images, labels = images[:n], labels[:n]
    codes = encode_all(model, images, labels if model.conditional else None, datamodule,
                       batch_size, reduce=code_reducer(model, pool))
    return codes.numpy(), labels.numpy()


def pixels(datamodule, split: str, n: int | None) -> np.ndarray:
    """The images of a split as the model sees them ([-1, 1]), flattened: (N, C*H*W)."""
    images = datamodule.splits[split][0][:n]
    return datamodule.to_model_input(images, train=False).flatten(1).numpy()


def reduce_dim(train: np.ndarray, test: np.ndarray, dim: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Both sets projected on the first `dim` principal components of `train`."""
    pca = PCA(n_components=dim, random_state=seed).fit(train)
    return pca.transform(train).astype(np.float32), pca.transform(test).astype(np.float32)


def score_features(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
                   test_labels: np.ndarray, k: int, cfg) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every score of one set of features (see the module docstring), and the best k-means
    run's assignment and centres."""
    scores = {"dim": float(train.shape[1])}
    scores.update(linear_probe(train, train_labels, test, test_labels, list(cfg.train_sizes),
                               cfg.seeds, cfg.max_iter))
    scores["knn_acc"] = knn_accuracy(train, train_labels, test, test_labels, cfg.knn_k)
    kmeans, assignment, centres = kmeans_runs(test, test_labels, k, cfg.seeds)
    scores.update(kmeans)
    return scores, assignment, centres


# -- pictures --------------------------------------------------------------------------------
def save_map(codes: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path,
             points: int, title: str, seed: int = 0) -> Path:
    """probe_map.png: the codes in 2-D, by PCA (all of them) and by t-SNE (the first `points`;
    codes of more than 50 dimensions are PCA-reduced to 50 first), coloured by class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    pca = PCA(n_components=2, random_state=seed).fit_transform(codes)
    subset = codes[:points]
    if subset.shape[1] > 50:
        subset = PCA(n_components=50, random_state=seed).fit_transform(subset)
    tsne = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(subset)
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, xy, y, name in ((axes[0], pca, labels, f"PCA, {len(pca)} codes"),
                            (axes[1], tsne, labels[:points], f"t-SNE, {len(tsne)} codes")):
        for c, class_name in enumerate(class_names):
            on = y == c
            ax.scatter(xy[on, 0], xy[on, 1], s=3, alpha=0.6, color=cmap(c % cmap.N),
                       label=class_name, rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def save_clusters(datamodule, split: str, codes: np.ndarray, labels: np.ndarray,
                  assignment: np.ndarray, centres: np.ndarray, per_cluster: int,
                  output_dir: Path) -> tuple[Path, Path]:
    """clusters.csv (index in the split, class, cluster, the class the cluster is matched to)
    and clusters.png (per cluster, in the order of the matched classes, the `per_cluster`
    images whose codes are nearest its centre)."""
    matched = match_clusters(labels, assignment)
    csv_path = output_dir / "clusters.csv"
    with atomic_write(csv_path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "cluster", "matched_label"])
        for i, (y, c) in enumerate(zip(labels, assignment)):
            writer.writerow([i, int(y), int(c), matched.get(int(c), -1)])
    order = sorted(range(len(centres)), key=lambda c: matched.get(c, math.inf))
    images = datamodule.splits[split][0]
    rows = [images[np.argsort(((codes - centres[c]) ** 2).sum(1))[:per_cluster]] for c in order]
    grid = datamodule.to_model_input(torch.cat(rows), train=False)
    png_path = save_png(make_grid(grid, nrow=per_cluster), output_dir / "clusters.png")
    return csv_path, png_path


# -- the evaluation --------------------------------------------------------------------------
def probe(model, datamodule, split: str, cfg, output_dir: Path
          ) -> tuple[dict[str, float], dict[str, Path]]:
    """The representation evaluation (module docstring) of `model` on `split` with the options
    of evaluate.py's `probe` block: the numbers as `probe/<features>/<score>` and the pictures
    (name -> PNG path) to log."""
    check_probe(model, datamodule)
    check_choices("probe.baselines", cfg.baselines, BASELINES)
    k = len(datamodule.classes)
    n = cfg.train_images
    train, train_labels = encode_split(model, datamodule, "train", n, cfg.batch_size, cfg.pool)
    test, test_labels = encode_split(model, datamodule, split, None, cfg.batch_size, cfg.pool)
    if cfg.max_dim and train.shape[1] > cfg.max_dim:
        train, test = reduce_dim(train, test, cfg.max_dim)
    features = {"code": (train, test)}
    if cfg.baselines:
        train_pixels, test_pixels = pixels(datamodule, "train", n), pixels(datamodule, split, None)
        if "pixels" in cfg.baselines:
            features["pixels"] = (train_pixels, test_pixels)
        if "pca" in cfg.baselines:
            features["pca"] = reduce_dim(train_pixels, test_pixels, train.shape[1])
    metrics, best = {}, None
    for name, (a, b) in features.items():
        log.info("probe: scoring %s features (%d dimensions)", name, a.shape[1])
        scores, assignment, centres = score_features(a, train_labels, b, test_labels, k, cfg)
        metrics.update({f"probe/{name}/{key}": value for key, value in scores.items()})
        if name == "code":
            best = assignment, centres
    title = (f"{type(model).__name__} codes ({train.shape[1]} dimensions) of "
             f"{datamodule.name}:{split}")
    pictures = {"probe_map": save_map(test, test_labels, datamodule.classes,
                                      output_dir / "probe_map.png", cfg.map_points, title)}
    _, pictures["clusters"] = save_clusters(datamodule, split, test, test_labels, *best,
                                            cfg.grid_per_cluster, output_dir)
    return metrics, pictures
