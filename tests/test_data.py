"""Dataset readers on their canonical formats, the cache, downloads and the datamodule."""

from __future__ import annotations

import io
import tarfile
import urllib.request
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import real_data_dir
from helpers.fake_datasets import N_TEST, N_TRAIN, pattern, png_bytes, write_image_folder_tar

from genlab.data import ImageDataModule, TensorBatches, load_dataset, load_split
from genlab.data import datasets as datasets_module
from genlab.data.transforms import to_model_range, to_uint8
from genlab.errors import GenlabError
from genlab.files.download import RemoteFile, download, ensure_files


def load(name, root, tmp_path, **options):
    return load_dataset(name, root, tmp_path / "cache", download=False, verify=False, **options)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_reader_pads_28_to_32_keeping_pixels(name, fake_root, tmp_path):
    arrays = load(name, fake_root, tmp_path)
    train_x, train_y = arrays.splits["train"]
    assert train_x.shape == (N_TRAIN, 1, 32, 32) and train_x.dtype == torch.uint8
    assert torch.equal(train_x[:, 0, 2:30, 2:30], torch.from_numpy(pattern(N_TRAIN, 1, 28)[:, 0]))
    assert train_x[:, :, :2].sum() == 0 and train_x[:, :, :, 30:].sum() == 0
    assert train_y.tolist() == [i % 10 for i in range(N_TRAIN)]
    assert arrays.splits["test"][0].shape == (N_TEST, 1, 32, 32)


def test_cifar10_reader_reads_pickled_batches_from_the_archive(fake_root, tmp_path):
    arrays = load("cifar10", fake_root, tmp_path)
    x, y = arrays.splits["train"]
    assert torch.equal(x, torch.from_numpy(pattern(N_TRAIN, 3, 32)))
    assert y.tolist() == [i % 10 for i in range(N_TRAIN // 5)] * 5
    assert torch.equal(arrays.splits["test"][0], torch.from_numpy(pattern(N_TEST, 3, 32, 1000)))
    assert arrays.classes[0] == "airplane"


def test_cifar10_reader_reads_the_extracted_folder(fake_root, tmp_path):
    with tarfile.open(fake_root / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "root", filter="data")
    arrays = load("cifar10", tmp_path / "root", tmp_path)
    assert torch.equal(arrays.splits["train"][0], torch.from_numpy(pattern(N_TRAIN, 3, 32)))


def test_svhn_reader_transposes_and_maps_label_10_to_0(fake_root, tmp_path):
    arrays = load("svhn", fake_root, tmp_path)
    x, y = arrays.splits["train"]
    assert torch.equal(x, torch.from_numpy(pattern(N_TRAIN, 3, 32)))
    assert y.tolist() == [i % 10 for i in range(N_TRAIN)]


def test_celeba_reader_uses_the_partition_file(fake_root, tmp_path):
    arrays = load("celeba", fake_root, tmp_path)
    x, y = arrays.splits["train"]
    assert x.shape == (N_TRAIN, 3, 32, 32)  # train + official valid
    assert arrays.splits["test"][0].shape == (N_TEST, 3, 32, 32)
    assert (y == -1).all() and arrays.classes == []
    assert int(x[3, 0, 0, 0]) == 15  # the 4th face is filled with 3 * 5
    big = load("celeba", fake_root, tmp_path, image_size=64)
    assert big.splits["train"][0].shape == (N_TRAIN, 3, 64, 64)


def test_celeba_attributes_reach_the_datamodule_aligned_with_the_images(fake_root, tmp_path):
    arrays = load("celeba", fake_root, tmp_path)
    assert arrays.attribute_names == ["Smiling", "Young"]
    smiling = arrays.attributes["train"][:, 0]
    assert smiling.tolist() == [i % 2 == 0 for i in range(N_TRAIN)]
    assert arrays.attributes["test"].shape == (N_TEST, 2)
    data = make_datamodule(fake_root, tmp_path, name="celeba", channels=3, val_size=8)
    data.setup()
    for split in ("train", "val", "test"):
        images, _ = data.splits[split]
        faces = images[:, 0, 0, 0].long() // 5  # face i is filled with 5 * i (mod 256)
        assert data.attributes[split][:, 0].tolist() == (faces % 2 == 0).tolist()


def test_image_folder_archive_with_classes(fake_root, tmp_path):
    arrays = load("image_folder", fake_root, tmp_path, path=str(fake_root / "images.tar.gz"))
    x, y = arrays.splits["train"]
    assert x.shape == (20, 3, 32, 32) and arrays.classes == ["cats", "dogs"]
    assert y.tolist() == [0] * 10 + [1] * 10
    assert "test" not in arrays.splits


def test_image_folder_train_test_layout_and_grayscale(tmp_path):
    path = write_image_folder_tar(tmp_path / "split.tar.gz", splits=True, per_class=3)
    arrays = load("image_folder", tmp_path, tmp_path, path=str(path), channels=1, image_size=16)
    assert arrays.splits["train"][0].shape == (6, 1, 16, 16)
    assert arrays.splits["test"][0].shape == (6, 1, 16, 16)


def test_image_folder_flat_directory_is_unlabelled_and_zip_works(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(png_bytes(pattern(1, 3, 32, offset=i)[0]))
    arrays = load("image_folder", tmp_path, tmp_path, path=str(folder))
    assert torch.equal(arrays.splits["train"][0], torch.from_numpy(pattern(4, 3, 32)))
    assert (arrays.splits["train"][1] == -1).all()
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"flat/{file.name}")
    zipped = load("image_folder", tmp_path, tmp_path, path=str(tmp_path / "flat.zip"))
    assert torch.equal(zipped.splits["train"][0], arrays.splits["train"][0])


def test_image_folder_errors_are_clear(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load("image_folder", tmp_path, tmp_path, path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenlabError, match="holds no images"):
        load("image_folder", tmp_path, tmp_path, path=str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    (mixed / "loose.png").write_bytes(png_bytes(pattern(1, 3, 8)[0]))
    (mixed / "a" / "x.png").write_bytes(png_bytes(pattern(1, 3, 8)[0]))
    with pytest.raises(GenlabError, match="mixes images in class folders"):
        load("image_folder", tmp_path, tmp_path, path=str(mixed))


def test_digits_needs_no_download(tmp_path):
    x = load_split("digits", "train", root=tmp_path, cache_dir=tmp_path)
    assert x.shape == (1797, 1, 32, 32) and x.max() == 255


def test_decoded_dataset_is_cached(fake_root, tmp_path, monkeypatch):
    first = load("cifar10", fake_root, tmp_path)
    spec = datasets_module.DATASETS["cifar10"]
    monkeypatch.setitem(datasets_module.DATASETS, "cifar10", replace(spec, read=None))  # unused
    second = load("cifar10", fake_root, tmp_path)
    assert torch.equal(first.splits["train"][0], second.splits["train"][0])
    assert len(list((tmp_path / "cache").glob("cifar10-*.pt"))) == 1


def test_unknown_dataset_and_options_list_the_valid_ones(tmp_path):
    with pytest.raises(GenlabError, match="choose one of mnist, fashion_mnist, cifar10"):
        load_dataset("imagenet", tmp_path, tmp_path)
    with pytest.raises(GenlabError, match="options are: none"):
        load_dataset("mnist", tmp_path, tmp_path, crop=3)
    with pytest.raises(GenlabError, match="image_size=64"):
        load_dataset("mnist", tmp_path, tmp_path, image_size=64)


def test_missing_files_name_the_folder_and_the_url(tmp_path):
    with pytest.raises(GenlabError) as err:
        load_dataset("svhn", tmp_path, tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "svhn") in message and "http://ufldl.stanford.edu" in message


def test_checksum_mismatch_is_refused(fake_root, tmp_path):
    with pytest.raises(GenlabError, match="md5"):
        load_dataset("mnist", fake_root, tmp_path, download=False, verify=True)
    assert not list(tmp_path.glob("mnist-*.pt"))  # nothing cached from a bad file


class _Response(io.BytesIO):
    def __init__(self, data: bytes, fail_after: int | None = None):
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection lost")
        return super().read(min(size, 10) if size > 0 else size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_and_never_leaves_a_half_file(tmp_path, monkeypatch):
    payload = b"0123456789" * 10
    import hashlib

    good_md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "file.bin"

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Response(payload, 50))
    with pytest.raises(ConnectionResetError):
        download("http://example.invalid/file.bin", dest, good_md5)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Response(payload))
    with pytest.raises(GenlabError, match="discarded"):
        download("http://example.invalid/file.bin", dest, "0" * 32)
    assert list(tmp_path.iterdir()) == []

    remote = RemoteFile("file.bin", "http://example.invalid/file.bin", good_md5)
    (path,) = ensure_files("test", tmp_path, [remote], allow_download=True, verify=True)
    assert path.read_bytes() == payload


def test_failed_download_names_the_url(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(GenlabError, match="the download failed") as err:
        load_dataset("cifar10", tmp_path, tmp_path)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(err.value)
    assert not any(tmp_path.glob("*.part"))


def test_real_mnist_matches_the_canonical_files():
    root = real_data_dir("MNIST")
    x = load_split("mnist", "test", root=root)
    assert x.shape == (10000, 1, 32, 32)
    assert 33.0 < x[:, :, 2:30, 2:30].float().mean() < 34.5  # MNIST test mean is 0.1325 * 255
    assert x[:, :, :2].sum() == 0


# -- datamodule -----------------------------------------------------------------------------
def make_datamodule(root, tmp_path, **kwargs) -> ImageDataModule:
    options = dict(name="cifar10", root=str(root), cache_dir=str(tmp_path / "cache"),
                   batch_size=8, val_size=8, download=False, verify=False)
    options.update(kwargs)
    dm = ImageDataModule(**options)
    dm.setup()
    return dm


def test_validation_is_a_seeded_disjoint_hold_out(fake_root, tmp_path):
    dm = make_datamodule(fake_root, tmp_path)
    again = make_datamodule(fake_root, tmp_path)
    val, train = dm.splits["val"][0], dm.splits["train"][0]
    assert len(val) == 8 and len(train) == N_TRAIN - 8
    assert torch.equal(val, again.splits["val"][0])
    train_rows = {bytes(img.numpy()) for img in train}
    assert not any(bytes(img.numpy()) in train_rows for img in val)
    other = make_datamodule(fake_root, tmp_path, seed=1)
    assert not torch.equal(val, other.splits["val"][0])


def test_datasets_without_test_split_hold_one_out(tmp_path):
    dm = ImageDataModule("digits", str(tmp_path), str(tmp_path), val_size=100, test_size=200)
    dm.setup()
    sizes = {k: len(v[0]) for k, v in dm.splits.items()}
    assert sizes == {"train": 1497, "val": 100, "test": 200}


def test_batches_are_scaled_to_minus_one_one(fake_root, tmp_path):
    dm = make_datamodule(fake_root, tmp_path)
    images, labels = next(iter(dm.val_dataloader()))
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_uint8(x), images)  # exactly invertible at the bin centres
    assert torch.equal(y, labels)


def test_flips_are_training_only_and_per_image(fake_root, tmp_path):
    dm = make_datamodule(fake_root, tmp_path, flip=True)
    images = dm.splits["train"][0][:64]
    torch.manual_seed(0)
    flipped = dm.to_model_input(images, train=True)
    plain = to_model_range(images)
    same = (flipped == plain).flatten(1).all(1)
    mirrored = (flipped == plain.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    assert torch.equal(dm.to_model_input(images, train=False), plain)


def test_dequantization_stays_in_the_pixel_bins():
    images = torch.tensor([0, 1, 254, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    x = to_model_range(images, dequantize=True)
    low, high = (images.float() * 2 / 256 - 1), ((images.float() + 1) * 2 / 256 - 1)
    assert (x >= low).all() and (x < high).all()


@pytest.mark.parametrize("noise", ["random", 0.0, 1 - 2 ** -24])
def test_every_value_survives_dequantize_then_requantize_bit_for_bit(noise, monkeypatch):
    """One convention both ways: dequantized or grid images return to their exact 8 bits,
    also at the extremes of the dequantization noise (U = 0 and the largest float32 U < 1)."""
    if noise != "random":
        monkeypatch.setattr(torch, "rand", lambda shape, **kwargs: torch.full(shape, noise))
    values = torch.arange(256, dtype=torch.uint8).repeat(4000).view(1000, 1, 32, 32)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(to_uint8(to_model_range(values, True, generator)), values)
    assert torch.equal(to_uint8(to_model_range(values)), values)


def test_requantization_is_the_bin_of_each_value():
    x = torch.tensor([-1.5, -1.0, -1 + 1 / 128 - 1e-6, -1 + 1 / 128, 0.0, 1 - 1e-7, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 1, 128, 255, 255, 255]


def test_binarization_modes(fake_root, tmp_path):
    dynamic = make_datamodule(fake_root, tmp_path, name="mnist", binarize="dynamic")
    assert set(dynamic.splits["val"][0].unique().tolist()) <= {0, 255}  # val fixed once
    assert dynamic.splits["train"][0].unique().numel() > 2  # train re-drawn per batch
    images = dynamic.splits["train"][0][:16]
    first, second = (dynamic.to_model_input(images, train=True) for _ in range(2))
    assert set(first.unique().tolist()) <= {-1.0, 1.0} and not torch.equal(first, second)
    static = make_datamodule(fake_root, tmp_path, name="mnist", binarize="static")
    assert set(static.splits["train"][0].unique().tolist()) <= {0, 255}
    with pytest.raises(GenlabError, match="dynamic, static, false"):
        make_datamodule(fake_root, tmp_path, name="mnist", binarize="always")


def test_tensor_batches_shard_ranks_and_reshuffle_per_epoch():
    images, labels = torch.arange(103).view(103, 1, 1, 1), torch.arange(103)
    epoch = [0]
    ranks = [TensorBatches(images, labels, 10, shuffle=True, drop_last=True, seed=3,
                           epoch_fn=lambda: epoch[0], rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert [len(loader) for loader in ranks] == [5, 5] and all(len(s) == 50 for s in seen)
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    epoch[0] = 1
    assert not torch.equal(torch.cat([y for _, y in ranks[0]]), seen[0])
    full = TensorBatches(images, labels, 10)
    assert len(full) == 11 and torch.equal(torch.cat([y for _, y in full]), labels)


def test_wrong_num_classes_in_config_is_reported(fake_root, tmp_path):
    with pytest.raises(GenlabError, match="has 10 classes"):
        make_datamodule(fake_root, tmp_path, num_classes=5)


def test_hold_outs_of_null_size_suit_folders_of_any_size(tmp_path):
    from genlab.data.datamodule import auto_hold_out

    assert [auto_hold_out(n) for n in (5, 60, 1797, 50_000)] == [1, 6, 179, 1000]
    np.savez(tmp_path / "sixty.npz", images=pattern(60, 3, 32).transpose(0, 2, 3, 1))
    dm = ImageDataModule("image_folder", str(tmp_path), str(tmp_path / "cache"), batch_size=16,
                         val_size=None, test_size=None, path=str(tmp_path / "sixty.npz"))
    dm.setup()
    assert {k: len(v[0]) for k, v in dm.splits.items()} == {"train": 48, "val": 6, "test": 6}


def test_hold_outs_too_large_for_the_images_name_both_keys(tmp_path):
    dm = ImageDataModule("digits", str(tmp_path), str(tmp_path), val_size=1000, test_size=1000)
    with pytest.raises(GenlabError, match=r"data=digits has 1797 training images: too few for "
                                          r"hold-outs of data.val_size=1000 and "
                                          r"data.test_size=1000 .* Set smaller data.val_size and "
                                          r"data.test_size, e.g. data.val_size=179 "
                                          r"data.test_size=179"):
        dm.setup()


def test_a_batch_larger_than_the_training_images_is_an_error_not_an_empty_epoch(tmp_path):
    dm = ImageDataModule("digits", str(tmp_path), str(tmp_path), val_size=100, test_size=100,
                         batch_size=2000)
    with pytest.raises(GenlabError, match=r"data.batch_size=2000 is more than the 1597 training "
                                          r"images of data=digits .* Set data.batch_size=1597"):
        dm.setup()
    dm = ImageDataModule("digits", str(tmp_path), str(tmp_path), val_size=100, test_size=100,
                         batch_size=1000)
    dm.setup()

    class TwoRanks:  # under DDP each process needs a batch of its own
        world_size, global_rank, current_epoch = 2, 0, 0

    dm.trainer = TwoRanks()
    with pytest.raises(GenlabError, match=r"\(798 for each of 2 processes\)"):
        dm.train_dataloader()


def test_a_corrupt_canonical_file_is_one_paragraph_also_unverified(fake_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(fake_root / "MNIST", root / "MNIST")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[-6] ^= 0xFF  # the CRC
    path.write_bytes(bytes(data))
    with pytest.raises(GenlabError, match=r"Cannot decode mnist from .* With data.verify=false "
                                          "their checksums were not checked"):
        load_dataset("mnist", root, tmp_path / "cache", download=False, verify=False)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_crafted_cifar10_batch_cannot_run_code(tmp_path):
    """data.verify=false skips the checksum of cifar-10-python.tar.gz; its pickles are still
    read by an unpickler that allows only what a CIFAR-10 batch holds."""
    import pickle

    target = tmp_path / "written-by-the-batch"

    class Payload:
        def __reduce__(self):
            return open, (str(target), "w")

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(GenlabError, match="Cannot decode cifar10 .* is not part of a CIFAR-10 "
                                          "batch"):
        load_dataset("cifar10", tmp_path / "data", tmp_path / "cache", download=False,
                     verify=False)
    assert not target.exists()


def test_a_missing_image_folder_is_reported_before_decoding_is_announced(tmp_path, caplog):
    with pytest.raises(GenlabError, match="does not exist"):
        load_dataset("image_folder", tmp_path, tmp_path / "cache",
                     path=str(tmp_path / "nowhere"))
    assert "Decoding" not in caplog.text


def test_an_unwritable_cache_is_reported_before_decoding(tmp_path, monkeypatch):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(
        str(tmp_path / "ro")) else real_access(path, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(GenlabError, match=r"data.cache_dir=.*ro/cache cannot be created: .*ro is "
                                          "not writable"):
        load_dataset("digits", tmp_path, tmp_path / "ro" / "cache")
