"""Each data set names its default training augmentation; BatchLoader applies names."""

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.data import (
    AUGMENTATIONS,
    ArrayDataset,
    BatchLoader,
    augment,
    augment_batch,
    check_augmentation,
    load_dataset,
    load_digits,
    load_image_folder,
)

from .test_data import make_tar, make_tree


def test_digits_default_to_no_augmentation():
    for split in ("train", "test"):
        assert load_digits(split).augmentation == "none"
    assert load_dataset("digits", "train", image_size=(12, 12)).augmentation == "none"


def test_image_folders_and_archives_default_to_crop_flip(tmp_path):
    make_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "data.tar.gz")
    for source in (tmp_path / "src", archive):
        ds = load_image_folder(source, "train", cache_dir=tmp_path / "c", progress=False)
        assert ds.augmentation == "crop-flip"
        resized = load_dataset(str(source), "train", image_size=(4, 4),
                               cache_dir=tmp_path / "c", progress=False)
        assert resized.augmentation == "crop-flip"


def test_derived_datasets_keep_the_augmentation():
    images = torch.zeros(10, 4, 4, 3, dtype=torch.uint8)
    ds = ArrayDataset(images, torch.arange(10) % 2, ["a", "b"], augmentation="crop-flip")
    assert ds.subset(4).augmentation == "crop-flip"
    assert ArrayDataset(images, torch.arange(10) % 2, ["a", "b"]).augmentation == "none"


def test_unknown_augmentation_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown augmentation 'crop_flip' \(did you mean "
                                        r"'crop-flip'\?\): choose one of none, crop-flip"):
        ArrayDataset(torch.zeros(1, 2, 2, 1, dtype=torch.uint8), torch.tensor([0]), ["a"],
                     augmentation="crop_flip")
    assert check_augmentation("none") == "none" and set(AUGMENTATIONS) == {"none", "crop-flip"}


def _dataset(augmentation):
    images = torch.randint(0, 256, (12, 6, 6, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return ArrayDataset(images, torch.arange(12) % 3, ["a", "b", "c"], augmentation=augmentation)


def _batches(loader, epoch=1):
    loader.set_epoch(epoch)
    return [x for x, _ in loader]


@pytest.mark.parametrize("augmentation", ["none", "crop-flip"])
def test_loader_takes_names_booleans_and_auto(augmentation):
    ds = _dataset(augmentation)
    plain = _batches(BatchLoader(ds, 5, shuffle=True, seed=2, augment=False))
    cropped = _batches(BatchLoader(ds, 5, shuffle=True, seed=2, augment=True))
    assert any(not torch.equal(a, b) for a, b in zip(plain, cropped, strict=True))
    own = cropped if augmentation == "crop-flip" else plain
    for value, expected in [("none", plain), (False, plain), ("crop-flip", cropped),
                            (True, cropped), ("auto", own)]:
        loader = BatchLoader(ds, 5, shuffle=True, seed=2, augment=value)
        got = _batches(loader)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), value
    assert BatchLoader(ds, 5, augment="auto").augmentation == augmentation
    assert BatchLoader(ds, 5, augment=True).augmentation == "crop-flip"
    assert BatchLoader(ds, 5).augmentation == "none"


def test_loader_rejects_unknown_augmentation():
    with pytest.raises(UserError, match="unknown augmentation 'flip'"):
        BatchLoader(_dataset("none"), 4, augment="flip")
    with pytest.raises(UserError, match="augmentation name, 'auto' or a bool"):
        BatchLoader(_dataset("none"), 4, augment=1)


def test_augment_by_name():
    x = torch.rand(4, 1, 6, 6)
    assert augment("none", x, torch.Generator()) is x
    assert torch.equal(augment("crop-flip", x, torch.Generator().manual_seed(5)),
                       augment_batch(x, torch.Generator().manual_seed(5)))
