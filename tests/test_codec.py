"""The lossless codecs (`genlab.codec`): autoregressive coding with a PixelCNN and bits-back
coding with a VAE: bit-for-bit round trips for every likelihood, the rate against the model's
NLL (PixelCNN) or negative ELBO (VAE), the latent bins, and the refusals (each one paragraph,
no output file)."""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import pytest
import torch

from genlab.codec import bitsback
from genlab.codec.autoregressive import decode, encode
from genlab.codec.cli import main
from genlab.codec.container import HEADER_V1, OVERHEAD_BYTES, Container
from genlab.data.transforms import binarize, to_model_range
from genlab.models.pixelcnn import PixelCNN
from genlab.models.vae import VAE
from tests.helpers.models import small_vae, tiny_flow

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


def test_a_model_the_codec_cannot_code_with_is_refused(tmp_path, capsys):
    flow = tiny_flow()
    node = {"_target_": "genlab.models.flow.Flow", "image_shape": [1, 8, 8], "levels": 2,
            "steps": 2, "width": 8}
    ckpt = save_checkpoint(tmp_path / "flow.ckpt", flow, node)
    source = save_images(tmp_path / "in.npz", torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac"], "Flow",
            "not implemented", "PixelCNN or VAE")
    leaves_nothing(tmp_path, "flow.ckpt", "in.npz")


def test_latent_bits_are_refused_for_a_pixelcnn(tmp_path, capsys):
    model, node = tiny("gated", "bernoulli", 1)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    source = save_images(tmp_path / "in.npz", uint8_images(1, binary=True, n=2))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac", "--latent-bits", "8"],
            "--latent-bits", "Leave --latent-bits out")
    leaves_nothing(tmp_path, "model.ckpt", "in.npz")


def test_a_bernoulli_model_refuses_8_bit_images(tmp_path, capsys):
    model, node = tiny("gated", "bernoulli", 1)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, node)
    source = save_images(tmp_path / "in.npz", uint8_images(1, binary=False, n=3))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac"], "Bernoulli likelihood",
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
    c = Container(b"a" * 32, "bits-back", "logistic", (3, 32, 32), 5, 64, 12, words, b"b" * 32)
    data = c.to_bytes()
    assert len(data) == OVERHEAD_BYTES + 12
    back = Container.from_bytes(data, "x")
    assert (back.coder, back.head, back.shape, back.count, back.batch_size, back.latent_bits) == (
        "bits-back", "logistic", (3, 32, 32), 5, 64, 12)
    assert back.checkpoint_sha256 == b"a" * 32 and back.pixels_sha256 == b"b" * 32
    np.testing.assert_array_equal(back.words, words)


def test_a_format_1_file_is_still_read():
    """Files written before bits-back coding (format 1: no coder field) read as autoregressive."""
    words = np.array([5, 6], dtype=np.uint32)
    header = HEADER_V1.pack(b"GLAC", 1, b"a" * 32, b"softmax", 3, 32, 32, 4, 64, 2, b"b" * 32)
    body = header + words.astype("<u4").tobytes()
    back = Container.from_bytes(body + hashlib.sha256(body).digest(), "old")
    assert (back.coder, back.head, back.count, back.batch_size, back.latent_bits) == (
        "autoregressive", "softmax", 4, 64, 0)
    np.testing.assert_array_equal(back.words, words)
    assert struct.unpack_from("<H", Container(
        b"a" * 32, "autoregressive", "softmax", (3, 32, 32), 4, 64, 0, words,
        b"b" * 32).to_bytes(), 4)[0] == 2


# -- bits-back coding with a VAE --------------------------------------------------------------
VAE_NODE = {"_target_": "genlab.models.vae.VAE", "image_shape": [1, 32, 32], "latent_dim": 4,
            "channels": [8, 16]}


def vae_images(binary: bool, n: int = 5) -> torch.Tensor:
    """n uint8 32x32 images: all 0, all 255, then random ones (binary or 8-bit)."""
    g = torch.Generator().manual_seed(2)
    if binary:
        rest = (torch.rand(n - 2, 1, 32, 32, generator=g) < 0.3).to(torch.uint8) * 255
    else:
        rest = torch.randint(0, 256, (n - 2, 1, 32, 32), generator=g, dtype=torch.uint8)
    return torch.cat([torch.zeros(1, 1, 32, 32, dtype=torch.uint8),
                      torch.full((1, 1, 32, 32), 255, dtype=torch.uint8), rest])


@pytest.mark.parametrize("likelihood", ["bernoulli", "logistic", "gaussian"])
def test_bits_back_round_trip_is_bit_for_bit(tmp_path, likelihood):
    """A VAE's file decodes to the same uint8 images, in chain steps of 2 (the last one
    short), with all-0 and all-255 images among them."""
    torch.manual_seed(0)
    node = dict(VAE_NODE, likelihood=likelihood)
    ckpt = save_checkpoint(tmp_path / "vae.ckpt", small_vae(likelihood=likelihood), node)
    images = vae_images(binary=likelihood == "bernoulli")
    source = save_images(tmp_path / "in.npz", images)
    assert main(["compress", str(ckpt), str(source), str(tmp_path / "x.glac"),
                 "--batch-size", "2", "--latent-bits", "10"]) == 0
    assert Container.read(tmp_path / "x.glac").coder == "bits-back"
    assert main(["decompress", str(ckpt), str(tmp_path / "x.glac"), str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as data:
        np.testing.assert_array_equal(data["images"], images.permute(0, 2, 3, 1).numpy())


def test_latent_bins_have_equal_prior_mass_and_exact_posterior_masses():
    """Each of the 2^P bins holds 1/2^P of N(0, 1); a posterior's coarse masses are its masses
    on groups of 2^b bins (brute force with mpmath, to 1e-15 absolute), and its fine masses,
    normalised, its distribution over the bins of one coarse bin, to 1e-5 relative also deep in
    either tail; the prior itself gets 1/2^P per bin; a coarse bin without mass in float64
    gets uniform fine masses."""
    import mpmath

    mpmath.mp.dps = 400  # masses of 1e-300 next to CDFs near 1
    bins = bitsback.LatentBins(7)  # 2^3 coarse bins of 2^4 fine ones
    edges = bins.edges.numpy()

    def masses(m: float, s: float) -> np.ndarray:
        cdf = [mpmath.ncdf((mpmath.mpf(e) - m) / s) for e in edges]
        return np.array([float(b - a) for a, b in zip(cdf[:-1], cdf[1:], strict=True)])

    np.testing.assert_allclose(masses(0.0, 1.0), 1 / 128, rtol=1e-12)
    assert (np.diff(bins.centres.numpy()) > 0).all()
    mu = torch.tensor([0.0, 1.3, -2.2, 2.4], dtype=torch.float64)
    sigma = torch.tensor([1.0, 0.05, 0.3, 0.01], dtype=torch.float64)
    coarse = bins.coarse_masses(mu, sigma)
    assert coarse.shape == (4, 8)
    for i in range(4):
        full = masses(float(mu[i]), float(sigma[i]))
        np.testing.assert_allclose(coarse[i], full.reshape(8, 16).sum(1), rtol=1e-6, atol=1e-15)
        for c in range(8):
            fine = bins.fine_masses(mu[i:i + 1], sigma[i:i + 1], np.array([c]))[0]
            expected = full[16 * c:16 * c + 16]
            if (fine == 1.0).all():  # no mass in float64: uniform, for a far-tail bin only
                assert expected.sum() < 1e-100
            else:  # the conditional Q(f | c) the coder uses, also deep in either tail
                np.testing.assert_allclose(fine / fine.sum(), expected / expected.sum(),
                                           rtol=1e-5, atol=1e-15)
    np.testing.assert_allclose(coarse[0], 1 / 8, rtol=1e-12)
    np.testing.assert_allclose(bins.fine_masses(mu[:1], sigma[:1], np.array([5])), 1 / 128,
                               rtol=1e-12)


def trained_vae(steps: int = 100) -> tuple[VAE, torch.Tensor]:
    """A Bernoulli VAE fitted to 32x32 binary images whose top k rows are white (k uniform in
    0..32): a posterior far narrower than the prior, so the KL and the bits back matter."""
    torch.manual_seed(0)
    model = small_vae(likelihood="bernoulli")
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(32)[None, :, None] < torch.randint(0, 33, (256, 1, 1), generator=g)
    images = rows.expand(256, 32, 32)[:, None].to(torch.uint8) * 255
    x = to_model_range(images)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = x[torch.randint(0, len(x), (64,), generator=g)]
        optimizer.zero_grad()
        rec, kl = model.negative_elbo(batch, None)
        (rec + kl).mean().backward()
        optimizer.step()
    return model.eval(), images


def test_the_bits_back_rate_is_within_two_percent_of_the_negative_elbo():
    """The stack after coding 256 images, less its initial words, costs within 2% of the sum of
    their negative ELBOs (the KL analytic, the reconstruction term averaged over 64 posterior
    samples), with 2^12 latent bins."""
    model, images = trained_vae()
    x = to_model_range(images)
    with torch.no_grad():
        mu, logvar = model.posterior_params(x)
        kl = float(-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum())
        rec = float(torch.stack([model.negative_elbo(x, None)[0] for _ in range(64)]).mean(0)
                    .sum())
    elbo_bits = (rec + kl) / math.log(2)
    assert kl / math.log(2) > 0.2 * elbo_bits  # the bits back are a large share
    words = bitsback.encode(model, images, batch_size=64, latent_bits=12)
    initial = len(bitsback.initial_words(64, model.latent_dim, 12))
    net_bits = 32 * (len(words) - initial)
    assert elbo_bits * 0.98 <= net_bits <= elbo_bits * 1.02
    assert torch.equal(bitsback.decode(model, words, len(images), 64, 12), images)


def test_different_posteriors_at_decoding_are_detected(tmp_path, capsys, monkeypatch):
    """Should the decoder's posterior differ from the encoder's, the stack does not return to
    its initial words (or the pixels fail the file's SHA-256): an error, no output file."""
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "vae.ckpt", small_vae(likelihood="bernoulli"),
                           dict(VAE_NODE, likelihood="bernoulli"))
    source = save_images(tmp_path / "in.npz", vae_images(binary=True))
    assert main(["compress", str(ckpt), str(source), str(tmp_path / "x.glac")]) == 0
    original = VAE.posterior_params

    def shifted(self, x, labels=None):
        mu, logvar = original(self, x, labels)
        return mu + 0.3, logvar
    monkeypatch.setattr(VAE, "posterior_params", shifted)
    refused(capsys, ["decompress", ckpt, tmp_path / "x.glac", tmp_path / "out.npz"],
            "did not retrace the encoding", "checkpoint, software and machine")
    leaves_nothing(tmp_path, "vae.ckpt", "in.npz", "x.glac")


def test_a_usage_mistake_is_one_paragraph_and_status_1(tmp_path, capsys):
    """A value argparse cannot parse, a missing argument: one paragraph naming the option and
    --help, exit status 1 (not argparse's usage block and status 2)."""
    for args, phrase in ((["compress", "c", "i", "o", "--latent-bits", "abc"],
                          "argument --latent-bits: invalid int value: 'abc'"),
                         (["decompress", "c"], "the following arguments are required")):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 1 and err.startswith("genlab: ") and "\n" not in err
        assert phrase in err and "--help" in err


def test_a_bernoulli_vae_refuses_8_bit_images_and_bad_latent_bits(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "vae.ckpt", small_vae(likelihood="bernoulli"),
                           dict(VAE_NODE, likelihood="bernoulli"))
    source = save_images(tmp_path / "in.npz", vae_images(binary=False))
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac"], "Bernoulli likelihood",
            "--binarize")
    binary = save_images(tmp_path / "bin.npz", vae_images(binary=True))
    refused(capsys, ["compress", ckpt, binary, tmp_path / "x.glac", "--latent-bits", "30"],
            "--latent-bits=30", "2 to 20")
    refused(capsys, ["compress", ckpt, source, tmp_path / "x.glac", "--latent-bits", "1"],
            "--latent-bits=1")  # checked before the images are read
    leaves_nothing(tmp_path, "vae.ckpt", "in.npz", "bin.npz")
