"""The lossless autoregressive codec (`genlab.codec`): bit-for-bit round trips for every head,
the rate against the model's NLL, and the refusals (each one paragraph, no output file)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.codec.cli import main
from genlab.codec.coder import decode, encode
from genlab.codec.container import OVERHEAD_BYTES, Container
from genlab.data.transforms import binarize, to_model_range
from genlab.models.pixelcnn import PixelCNN
from tests.helpers.models import small_vae

# (architecture, head, channels): each head on the network it is usually paired with
CASES = [("gated", "bernoulli", 1), ("pixelcnn", "softmax", 3),
         ("pixelcnn_pp", "logistic_mixture", 3)]


def tiny(architecture: str, head: str, channels: int, seed: int = 0) -> tuple[PixelCNN, dict]:
    """A float32 PixelCNN with random weights on 8x8 images, and its model config."""
    node = dict(_target_="genlab.models.pixelcnn.PixelCNN", image_shape=[channels, 8, 8],
                architecture=architecture, head=head, channels=6, layers=3, resnets=1,
                num_mixtures=3)
    torch.manual_seed(seed)
    return PixelCNN(**{k: v for k, v in node.items() if k != "_target_"}).eval(), node


def save_checkpoint(path, model: torch.nn.Module, node: dict):
    """A checkpoint as train.py writes it, as far as the codec reads one."""
    torch.save({"genlab_config": {"model": node,
                                  "data": {"_target_": "genlab.data.ImageDataModule"}},
                "state_dict": model.state_dict()}, path)
    return path


def uint8_images(channels: int, binary: bool, n: int = 5) -> torch.Tensor:
    """n uint8 images (n, C, 8, 8): all 0, all 255 (all 1 when binary), then random ones."""
    g = torch.Generator().manual_seed(1)
    if binary:
        rest = (torch.rand(n - 2, channels, 8, 8, generator=g) < 0.5).to(torch.uint8) * 255
    else:
        rest = torch.randint(0, 256, (n - 2, channels, 8, 8), generator=g, dtype=torch.uint8)
    extremes = torch.stack([torch.zeros(channels, 8, 8), torch.full((channels, 8, 8), 255.0)])
    return torch.cat([extremes.to(torch.uint8), rest])


def save_images(path, images: torch.Tensor):
    np.savez(path, images=images.permute(0, 2, 3, 1).numpy())
    return path


@pytest.mark.parametrize("architecture,head,channels", CASES)
def test_round_trip_is_bit_for_bit(tmp_path, architecture, head, channels):
    """compress then decompress through the CLI gives the same uint8 array, for a set with an
    all-0 and an all-255 image, coded in batches of 2 (the last one short)."""
    model, node = tiny(architecture, head, channels)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    images = uint8_images(channels, binary=head == "bernoulli")
    source = save_images(tmp_path / "in.npz", images)
    assert main(["compress", str(ckpt), str(source), str(tmp_path / "x.glac"),
                 "--batch-size", "2"]) == 0
    assert main(["decompress", str(ckpt), str(tmp_path / "x.glac"), str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as data:
        decoded = data["images"]
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, images.permute(0, 2, 3, 1).numpy())


def trained_bernoulli(steps: int = 150) -> tuple[PixelCNN, torch.Tensor]:
    """A gated PixelCNN fitted to 8x8 binary images whose top k rows are white (k uniform):
    confident conditionals, where the quantization to integer frequencies costs the most."""
    model, _ = tiny("gated", "bernoulli", 1)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(8)[None, :, None] < torch.randint(0, 9, (1024, 1, 1), generator=g)
    images = (rows.expand(1024, 8, 8)[:, None].to(torch.uint8) * 255)
    x = to_model_range(images[:256])  # fitted on 256, all 1,024 coded
    optimizer = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nll = -model.head.log_prob(x, model.net(x, None)).sum() / len(x)
        nll.backward()
        optimizer.step()
    return model.eval(), images


def test_the_rate_is_within_two_percent_of_the_models_nll():
    """The coded stream of 1,024 images costs at most 2% more than -log2 p(x) summed over them,
    plus 64 bits for the end of the range coder's stream (the file adds its 140-byte header)."""
    model, images = trained_bernoulli()
    nll_bits = float(-model.log_prob(to_model_range(images)).sum()) / np.log(2)
    assert nll_bits / images.numel() < 0.3  # a confident model, not a uniform one
    words = encode(model, images, batch_size=256)
    stream_bits = 32 * len(words)
    assert nll_bits * 0.98 - 64 <= stream_bits <= nll_bits * 1.02 + 64
    assert torch.equal(decode(model, words, len(images), batch_size=256), images)


def test_an_untrained_softmax_model_codes_about_eight_bits_per_sub_pixel():
    model, _ = tiny("pixelcnn", "softmax", 3)
    images = uint8_images(3, binary=False, n=6)
    nll_bits = float(-model.log_prob(to_model_range(images)).sum()) / np.log(2)
    stream_bits = 32 * len(encode(model, images))
    assert nll_bits * 0.98 - 64 <= stream_bits <= nll_bits * 1.02 + 64


@pytest.fixture
def compressed(tmp_path):
    """A bernoulli model's checkpoint, a compressed file of 3 images, and the output path."""
    model, node = tiny("gated", "bernoulli", 1)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    source = save_images(tmp_path / "in.npz", uint8_images(1, binary=True, n=3))
    assert main(["compress", str(ckpt), str(source), str(tmp_path / "x.glac")]) == 0
    return ckpt, tmp_path / "x.glac", tmp_path / "out.npz"


def refused(capsys, args, *phrases):
    """The command exits 1 with one paragraph on stderr holding every phrase, no traceback."""
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: ") and "\n" not in err and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err


def leaves_nothing(folder, *kept):
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_a_corrupted_file_is_refused(compressed, capsys):
    ckpt, file, out = compressed
    data = bytearray(file.read_bytes())
    data[OVERHEAD_BYTES] ^= 1  # a bit of the coded stream
    file.write_bytes(bytes(data))
    refused(capsys, ["decompress", ckpt, file, out], "is corrupted", "intact copy")
    leaves_nothing(file.parent, "model.ckpt", "in.npz", "x.glac")


def test_a_truncated_file_is_refused(compressed, capsys):
    ckpt, file, out = compressed
    file.write_bytes(file.read_bytes()[:-5])
    refused(capsys, ["decompress", ckpt, file, out], "is truncated", "complete")
    file.write_bytes(file.read_bytes()[:10])
    refused(capsys, ["decompress", ckpt, file, out], "is truncated")
    leaves_nothing(file.parent, "model.ckpt", "in.npz", "x.glac")


def test_a_file_made_with_another_checkpoint_is_refused(compressed, capsys):
    ckpt, file, out = compressed
    other, node = tiny("gated", "bernoulli", 1, seed=1)
    other_ckpt = save_checkpoint(file.parent / "other.ckpt", other, node)
    refused(capsys, ["decompress", other_ckpt, file, out], "another checkpoint",
            "compressed with")
    leaves_nothing(file.parent, "model.ckpt", "other.ckpt", "in.npz", "x.glac")


def test_different_probabilities_at_decoding_are_detected(compressed, capsys, monkeypatch):
    """Should the decoder's conditionals differ from the encoder's, the decoded pixels fail the
    file's pixel SHA-256: an error, never silently different images."""
    ckpt, file, out = compressed
    original = PixelCNN.choose_sequentially

    def perturbed(self, n, choose):
        return original(self, n, lambda log_probs, t: choose(log_probs * 0.5, t))
    monkeypatch.setattr(PixelCNN, "choose_sequentially", perturbed)
    refused(capsys, ["decompress", ckpt, file, out], "differ from the ones compressed")
    leaves_nothing(file.parent, "model.ckpt", "in.npz", "x.glac")


def test_a_model_without_per_pixel_likelihoods_is_refused(tmp_path, capsys):
    vae = small_vae()
    node = {"_target_": "genlab.models.vae.VAE", "image_shape": [1, 32, 32], "latent_dim": 4,
            "channels": [8, 16]}
    ckpt = save_checkpoint(tmp_path / "vae.ckpt", vae, node)
    source = save_images(tmp_path / "in.npz", torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac"], "VAE",
            "bits-back", "not implemented", "PixelCNN")
    leaves_nothing(tmp_path, "vae.ckpt", "in.npz")


def test_a_bernoulli_model_refuses_8_bit_images(tmp_path, capsys):
    model, node = tiny("gated", "bernoulli", 1)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    source = save_images(tmp_path / "in.npz", uint8_images(1, binary=False, n=3))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac"], "Bernoulli head",
            "0 or 255")
    leaves_nothing(tmp_path, "model.ckpt", "in.npz")


def test_binarize_codes_the_binarized_images_of_8_bit_input(tmp_path):
    """--binarize --seed k: the file holds binarize(images) drawn with seed k, which decompress
    gives back bit for bit (8-bit input a Bernoulli model would refuse)."""
    model, node = tiny("gated", "bernoulli", 1)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    images = uint8_images(1, binary=False)
    source = save_images(tmp_path / "in.npz", images)
    assert main(["compress", str(ckpt), str(source), str(tmp_path / "x.glac"), "--binarize",
                 "--seed", "3"]) == 0
    assert main(["decompress", str(ckpt), str(tmp_path / "x.glac"), str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as data:
        decoded = data["images"]
    expected = binarize(images, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(decoded, expected.permute(0, 2, 3, 1).numpy())


def test_the_container_reads_back_what_it_wrote():
    words = np.array([1, 2**32 - 1, 7], dtype=np.uint32)
    c = Container(b"a" * 32, "softmax", (3, 32, 32), 5, 64, words, b"b" * 32)
    data = c.to_bytes()
    assert len(data) == OVERHEAD_BYTES + 12
    back = Container.from_bytes(data, "x")
    assert (back.head, back.shape, back.count, back.batch_size) == ("softmax", (3, 32, 32), 5, 64)
    assert back.checkpoint_sha256 == b"a" * 32 and back.pixels_sha256 == b"b" * 32
    np.testing.assert_array_equal(back.words, words)
