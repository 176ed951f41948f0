"""Agreement with torch-fidelity (the reference implementation of the FID protocol), run by
`make parity` in its own environment: torch-fidelity needs torchvision, which cannot be
imported next to this project's CPU torch. Skipped wherever torch-fidelity does not import.

On the same 300 + 300 real images (MNIST test digits, repeated to three channels) and the same
weight file: the TF1 resize, the 2048-d features, FID and KID must agree. With the shared
weights of our build machines the classifier layer is zeroed, so the logits (and the Inception
Score) are all zero on both sides and prove nothing: they are compared only with real weights.
"""

from __future__ import annotations

import pytest
import torch
from conftest import real_data_dir, real_weights

from genlab.data import load_split
from genlab.metrics import inception
from genlab.metrics.fid import FeatureStats, frechet_distance
from genlab.metrics.kid import kid

pytestmark = pytest.mark.parity

try:
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )
except Exception as err:  # not installed, or installed without a working torchvision
    pytest.skip(f"torch-fidelity is not importable here ({type(err).__name__}: {err}); run "
                "`make parity`, which builds an environment where it is", allow_module_level=True)

N = 300


class Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) images, the input torch-fidelity's calculate_metrics takes."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    root = real_data_dir("MNIST")
    digits = load_split("mnist", "test", root=root, cache_dir=tmp_path_factory.mktemp("cache"))
    rgb = digits[: 2 * N].expand(-1, 3, -1, -1).contiguous()
    return rgb[:N], rgb[N:]


def test_the_resize_and_features_match_torch_fidelity(image_sets):
    x = torch.rand(2, 3, 32, 32) * 255
    torch.testing.assert_close(
        inception.resize_bilinear_tf1(x, (299, 299)),
        interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False))
    weights = real_weights()
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=weights).eval()
    ours = inception.FeatureExtractor(weights, batch_size=16)
    images = image_sets[0][:32]
    with torch.inference_mode():
        their_pool, their_logits = theirs(images)
    pool, logits = ours.features(images)
    torch.testing.assert_close(pool, their_pool, atol=1e-3, rtol=1e-3)
    fc = torch.load(weights, map_location="cpu", weights_only=True)["fc.weight"]
    if fc.abs().sum() > 0:  # real weights: the logits (and so the IS) must agree too
        torch.testing.assert_close(logits, their_logits, atol=1e-3, rtol=1e-3)
    else:
        assert their_logits.abs().max() == 0 and logits.abs().max() == 0


def test_fid_and_kid_match_torch_fidelity(image_sets):
    a, b = image_sets
    weights = real_weights()
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(a), input2=Images(b), fid=True, kid=True, kid_subsets=1,
        kid_subset_size=N, feature_extractor_weights_path=weights, cuda=False,
        batch_size=50, verbose=False, cache=False)
    ours = inception.FeatureExtractor(weights, batch_size=16)
    features = [torch.cat([pool for pool, _ in ours.iter_features(s.split(50))]) for s in (a, b)]
    stats = [FeatureStats().update(f) for f in features]
    fid = frechet_distance(stats[0].mean, stats[0].cov, stats[1].mean, stats[1].cov)
    kid_mean, _ = kid(features[0].numpy(), features[1].numpy(), subsets=1, subset_size=N)
    print(f"FID ours {fid:.6f} torch-fidelity {theirs['frechet_inception_distance']:.6f}; "
          f"KID ours {kid_mean:.8f} torch-fidelity "
          f"{theirs['kernel_inception_distance_mean']:.8f}")
    assert fid == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert kid_mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3,
                                     abs=1e-6)
