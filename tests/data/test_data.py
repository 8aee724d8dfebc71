import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import torch
from PIL import Image

from torchslim.core.errors import UserError
from torchslim.data import (
    NORMALIZATION,
    ArrayDataset,
    BatchLoader,
    _decode,
    augment_batch,
    get_normalization,
    load_dataset,
    load_digits,
    load_image_folder,
    normalize,
)

LAYOUT = {"train": {"dog": 3, "cat": 2, "bird": 4}, "test": {"dog": 1, "cat": 2, "bird": 1}}


def make_tree(root: Path, layout=None, size=(6, 5), mode="RGB", seed=0) -> dict[Path, np.ndarray]:
    """Write random lossless PNGs in <split>/<class>/ layout; return path -> pixels."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, classes in (layout or LAYOUT).items():
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i:03d}.png")
                written[folder / f"{i:03d}.png"] = pixels
    return written


def make_tar(src: Path, archive: Path, top: str | None = None, extra_dirs=()) -> Path:
    """Pack ``src`` into a .tar.gz with files in shuffled order, optionally under ``top``."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    random.Random(1).shuffle(files)
    prefix = f"{top}/" if top else ""
    with tarfile.open(archive, "w:gz") as tar:
        for name in extra_dirs:
            info = tarfile.TarInfo(prefix + name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for path in files:
            tar.add(path, arcname=prefix + path.relative_to(src).as_posix(), recursive=False)
    return archive


def load(root, split="train", **kwargs):
    kwargs.setdefault("cache_dir", Path(root).parent / "cache")
    return load_image_folder(root, split, progress=False, **kwargs)


# ----------------------------------------------------------------------------- image folders


@pytest.mark.parametrize("top", [None, "mydata"])
def test_directory_and_archive_give_identical_arrays(tmp_path, top):
    written = make_tree(tmp_path / "src")
    # a hidden folder (a notebook's checkpoints) is no class, on disk or in the archive
    make_tree(tmp_path / "hidden", {"train": {"x": 1}})
    (tmp_path / "hidden" / "train" / "x").rename(tmp_path / "src" / "train" / ".ipynb_checkpoints")
    archive = make_tar(tmp_path / "src", tmp_path / "data.tar.gz", top=top)
    for split in ("train", "test"):
        from_dir = load(tmp_path / "src", split)
        from_tar = load(archive, split)
        assert torch.equal(from_dir.images, from_tar.images)
        assert torch.equal(from_dir.labels, from_tar.labels)
        assert from_dir.classes == from_tar.classes == ["bird", "cat", "dog"]
        # pixels are exact (PNG is lossless), ordered by (class, file name)
        expected = [written[p] for p in sorted(written) if p.parts[-3] == split]
        assert np.array_equal(from_tar.images.numpy(), np.stack(expected))


def test_labels_follow_sorted_class_names(tmp_path):
    make_tree(tmp_path / "src", {"train": {"zebra": 1, "apple": 2, "mango": 3}})
    ds = load(tmp_path / "src")
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert ds.num_classes == 3 and ds.image_shape == (3, 6, 5) and ds.images.dtype == torch.uint8


def test_hidden_files_and_other_extensions_are_ignored(tmp_path):
    make_tree(tmp_path / "src", {"train": {"a": 2}})
    (tmp_path / "src" / "train" / "a" / "notes.txt").write_text("x")
    (tmp_path / "src" / "train" / "a" / "._000.png").write_bytes(b"macOS junk")
    Image.new("RGB", (5, 6)).save(tmp_path / "src" / "train" / "a" / "extra.JPEG")
    assert len(load(tmp_path / "src")) == 3


@pytest.mark.parametrize("packed", [False, True])
def test_second_load_uses_the_cache(tmp_path, monkeypatch, packed):
    make_tree(tmp_path / "src")
    source = make_tar(tmp_path / "src", tmp_path / "d.tgz") if packed else tmp_path / "src"
    first = load(source)

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(_decode, "decode_batch", no_decoding)
    second = load(source)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.classes == first.classes


def test_archive_is_read_once_for_all_splits(tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "d.tar.gz")
    load(archive, "train")
    monkeypatch.setattr(_decode, "decode_batch", lambda *a: pytest.fail("archive read twice"))
    assert len(load(archive, "test")) == 4


@pytest.mark.parametrize("packed", [False, True])
def test_cache_is_invalidated_when_the_source_changes(tmp_path, packed):
    make_tree(tmp_path / "src")
    source = make_tar(tmp_path / "src", tmp_path / "d.tar.gz") if packed else tmp_path / "src"
    assert len(load(source)) == 9
    Image.new("RGB", (5, 6), "red").save(tmp_path / "src" / "train" / "cat" / "new.png")
    if packed:
        make_tar(tmp_path / "src", source)
    changed = load(source)
    assert len(changed) == 10
    assert changed.images[changed.labels == 1][-1].float().mean() == pytest.approx(255 / 3)
    # the stale entry of that split was replaced, not kept beside the new one
    cached = [p.name for p in (tmp_path / "cache").rglob("*.train.images.npy")]
    assert len(cached) == 1


def test_cache_depends_on_image_size(tmp_path):
    make_tree(tmp_path / "src")
    assert load(tmp_path / "src").image_shape == (3, 6, 5)
    assert load(tmp_path / "src", image_size=(3, 4)).image_shape == (3, 3, 4)


def test_broken_cache_is_rebuilt(tmp_path):
    make_tree(tmp_path / "src")
    good = load(tmp_path / "src")
    [images] = (tmp_path / "cache").rglob("*.train.images.npy")
    images.write_bytes(b"not an npy file")
    with pytest.warns(UserWarning, match="broken cache"):
        rebuilt = load(tmp_path / "src")
    assert torch.equal(rebuilt.images, good.images)
    assert np.load(images).shape == (9, 6, 5, 3)


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    monkeypatch.setenv("TORCHSLIM_CACHE", str(tmp_path / "envcache"))
    load_image_folder(tmp_path / "src", "test", progress=False)
    assert list((tmp_path / "envcache").rglob("*.test.labels.npy"))


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
    make_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "d.tar.gz")
    serial = load(archive, cache_dir=tmp_path / "c1")
    pools = []

    class CountingPool(_decode.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(_decode, "BATCH", 2)
    monkeypatch.setattr(_decode, "_worker_count", lambda: 2)
    monkeypatch.setattr(_decode, "ProcessPoolExecutor", CountingPool)
    parallel = load(archive, cache_dir=tmp_path / "c2")
    assert len(pools) == 1 and torch.equal(serial.images, parallel.images)


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    make_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "d.tar.gz")
    load_image_folder(archive, "train", cache_dir=tmp_path / "cache", progress=True)
    captured = capsys.readouterr()
    assert "decoding d.tar.gz" in captured.err and captured.out == ""


def test_grayscale_split_has_one_channel(tmp_path):
    written = make_tree(tmp_path / "src", {"train": {"a": 2}}, mode="L")
    ds = load(tmp_path / "src")
    assert ds.image_shape == (1, 6, 5)
    assert np.array_equal(ds.images[0, ..., 0].numpy(), next(iter(written.values())))


def test_mixed_gray_and_color_become_rgb(tmp_path):
    make_tree(tmp_path / "src", {"train": {"a": 1}}, mode="L")
    make_tree(tmp_path / "src", {"train": {"b": 1}}, mode="RGB")
    ds = load(tmp_path / "src")
    assert ds.image_shape == (3, 6, 5)
    gray = ds.images[0]
    assert torch.equal(gray[..., 0], gray[..., 1]) and torch.equal(gray[..., 0], gray[..., 2])


def test_different_sizes_need_image_size(tmp_path):
    make_tree(tmp_path / "src", {"train": {"a": 1}}, size=(6, 5))
    Image.new("RGB", (9, 7)).save(tmp_path / "src" / "train" / "a" / "big.png")
    with pytest.raises(UserError, match=r"big\.png.*pass image_size"):
        load(tmp_path / "src")
    resized = load(tmp_path / "src", image_size=(4, 3))
    assert resized.images.shape == (2, 4, 3, 3)


@pytest.mark.parametrize("bad", [(0, 4), (4,), "32", (4.5, 4)])
def test_bad_image_size_is_a_user_error(tmp_path, bad):
    make_tree(tmp_path / "src")
    with pytest.raises(UserError, match="image_size"):
        load(tmp_path / "src", image_size=bad)


# ----------------------------------------------------------------------------- error cases


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="nowhere.*does not exist"):
        load(tmp_path / "nowhere")


def test_not_a_directory_or_archive(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"data\.zip.*neither a directory nor a \.tar\.gz"):
        load(tmp_path / "data.zip")


@pytest.mark.parametrize("packed", [False, True])
def test_missing_split_lists_the_splits_found(tmp_path, packed):
    make_tree(tmp_path / "src")
    source = make_tar(tmp_path / "src", tmp_path / "d.tar.gz", top="x") if packed else (
        tmp_path / "src")
    with pytest.raises(UserError, match=r"split 'val' not found in .*it has 'test', 'train'"):
        load(source, "val")
    with pytest.raises(UserError, match="did you mean 'train'"):
        load(source, "trian")


def test_split_that_is_not_a_folder_name(tmp_path):
    make_tree(tmp_path / "src")
    with pytest.raises(UserError, match="not a folder name"):
        load(tmp_path / "src", "../src")


@pytest.mark.parametrize("packed", [False, True])
def test_empty_split(tmp_path, packed):
    make_tree(tmp_path / "src", {"test": {"a": 1}})
    (tmp_path / "src" / "train").mkdir()
    source = (make_tar(tmp_path / "src", tmp_path / "d.tar.gz", extra_dirs=["train"]) if packed
              else tmp_path / "src")
    with pytest.raises(UserError, match=r"'.*train' .*has no class folders"):
        load(source)


@pytest.mark.parametrize("packed", [False, True])
def test_class_folder_without_images_is_named(tmp_path, packed):
    make_tree(tmp_path / "src", {"train": {"cat": 2}})
    (tmp_path / "src" / "train" / "bird").mkdir()
    (tmp_path / "src" / "train" / "bird" / "readme.txt").write_text("no images here")
    source = make_tar(tmp_path / "src", tmp_path / "d.tar.gz") if packed else tmp_path / "src"
    with pytest.raises(UserError, match=r"class folder '.*train.bird'.* has no images"):
        load(source)


def test_corrupt_image_in_directory_is_named(tmp_path):
    make_tree(tmp_path / "src")
    (tmp_path / "src" / "train" / "cat" / "001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=r"cannot decode image '.*train/cat/001\.png'"):
        load(tmp_path / "src")


def test_corrupt_image_in_archive_is_named(tmp_path):
    make_tree(tmp_path / "src")
    jpeg = tmp_path / "src" / "test" / "dog" / "bad.jpg"
    Image.new("RGB", (5, 6)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:40])  # truncated
    archive = make_tar(tmp_path / "src", tmp_path / "d.tar.gz", top="top")
    with pytest.raises(UserError, match=r"'top/test/dog/bad\.jpg' in archive '.*d\.tar\.gz'"):
        load(archive, "test")
    # the intact split of the same archive still loads
    assert len(load(archive, "train")) == 9


def test_broken_archive(tmp_path):
    make_tree(tmp_path / "src")
    archive = make_tar(tmp_path / "src", tmp_path / "d.tar.gz")
    archive.write_bytes(archive.read_bytes()[:300])
    with pytest.raises(UserError, match=r"cannot read archive '.*d\.tar\.gz'"):
        load(archive)


# ----------------------------------------------------------------------------- load_dataset


def test_load_dataset_dispatches(tmp_path):
    make_tree(tmp_path / "src")
    assert len(load_dataset("digits", "test")) == 450
    assert load_dataset("digits", "train", image_size=(12, 10)).image_shape == (1, 12, 10)
    ds = load_dataset(str(tmp_path / "src"), "test", cache_dir=tmp_path / "c", progress=False)
    assert ds.classes == ["bird", "cat", "dog"]


def test_load_dataset_unknown_spec():
    with pytest.raises(UserError, match=r"data 'digit' not found \(did you mean 'digits'\?\).*"
                                        r"directory or \.tar\.gz"):
        load_dataset("digit", "train")


# ----------------------------------------------------------------------------- digits


def test_digits_split_is_fixed_stratified_and_a_partition():
    train, test = load_digits("train"), load_digits("test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.classes == [str(d) for d in range(10)] and train.image_shape == (1, 8, 8)
    assert torch.equal(load_digits("test").images, test.images)
    full = sklearn.datasets.load_digits()
    expected = np.round(full.images * 255 / 16).astype(np.uint8).reshape(len(full.images), -1)

    def rows(images, labels):
        return sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels, strict=True))

    got = rows(torch.cat([train.images, test.images]).reshape(1797, -1).numpy(),
               torch.cat([train.labels, test.labels]).tolist())
    assert got == rows(expected, full.target.tolist())  # every sample in exactly one split
    assert torch.bincount(test.labels).tolist() == pytest.approx(
        (np.bincount(full.target) / 4).tolist(), abs=1)
    assert train.images.max() == 255


def test_digits_unknown_split():
    with pytest.raises(UserError, match="no split 'tset'.*did you mean 'test'"):
        load_digits("tset")


# ----------------------------------------------------------------------------- ArrayDataset


def test_array_dataset_items():
    images = torch.arange(2 * 3 * 4 * 3, dtype=torch.uint8).view(2, 3, 4, 3)
    ds = ArrayDataset(images, torch.tensor([1, 0]), ["a", "b"])
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, 3, 4) and y == 0 and isinstance(y, int)
    assert torch.allclose(x, images[1].permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("images, labels, classes, message", [
    (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2).long(), ["a"], "uint8 tensor"),
    (torch.zeros(2, 4, 4, 1), torch.zeros(2).long(), ["a"], "uint8 tensor"),
    (torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.zeros(3).long(), ["a"], "3 labels"),
    (torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.zeros(2), ["a"], "integer tensor"),
    (torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"], "0..1"),
    (torch.zeros(2, 4, 4, 1, dtype=torch.uint8), torch.zeros(2).long(), [], "non-empty"),
])
def test_array_dataset_validates(images, labels, classes, message):
    with pytest.raises(UserError, match=message):
        ArrayDataset(images, labels, classes)


# ----------------------------------------------------------------------------- transforms


def distinct_batch(n=16, c=3, h=8, w=8):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(7)) + 1  # never 0


def test_augment_keeps_shape_and_is_deterministic():
    x = distinct_batch()
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    c = augment_batch(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_augment_crops_are_shifts_of_the_padded_image():
    x, pad = distinct_batch(), 2
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    seen = set()
    for i in range(len(x)):
        matches = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   for flip in (False, True)
                   if torch.equal(out[i], (lambda crop: crop.flip(-1) if flip else crop)(
                       padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert len(matches) == 1, f"image {i} is not a crop of its padded original"
        seen.add(matches[0])
    assert len(seen) > 4 and {flip for *_, flip in seen} == {False, True}


def test_augment_without_flip_or_padding():
    x = distinct_batch()
    assert torch.equal(augment_batch(x, torch.Generator(), padding=0, flip=False), x)
    flipped = augment_batch(x, torch.Generator().manual_seed(1), padding=0)
    same = [torch.equal(f, o) for f, o in zip(flipped, x, strict=True)]
    mirrored = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and any(same) and any(mirrored)
    with pytest.raises(UserError, match="padding"):
        augment_batch(x, torch.Generator(), padding=-1)


def test_normalization_presets():
    assert NORMALIZATION["cifar"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert NORMALIZATION["imagenet"] == NORMALIZATION["cifar"]
    x = torch.full((2, 3, 2, 2), 0.485)
    assert torch.allclose(normalize(x, *get_normalization("cifar"))[:, 0], torch.zeros(2, 2, 2))
    assert torch.equal(normalize(x, *get_normalization("none")), x)
    with pytest.raises(UserError, match="did you mean 'cifar'"):
        get_normalization("cifra")
    with pytest.raises(UserError, match="1 channel"):
        normalize(torch.zeros(1, 1, 2, 2), *get_normalization("cifar"))


# ----------------------------------------------------------------------------- BatchLoader


def indexed_dataset(n=23, h=4, w=4):
    images = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    return ArrayDataset(images, torch.arange(n), [str(i) for i in range(n)])


def epoch(loader, e):
    loader.set_epoch(e)
    return list(loader)


def test_loader_covers_every_sample_once_per_epoch():
    ds = indexed_dataset()
    loader = BatchLoader(ds, 5, shuffle=True, augment=True, seed=3)
    batches = epoch(loader, 2)
    assert len(loader) == len(batches) == 5 and [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    order = torch.cat([y for _, y in batches])
    assert sorted(order.tolist()) == list(range(23)) and order.tolist() != list(range(23))
    assert all(x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4) for x, _ in batches)


def test_loader_same_seed_and_epoch_give_same_batches():
    ds = indexed_dataset()
    run = epoch(BatchLoader(ds, 4, shuffle=True, augment=True, seed=1), 5)
    resumed = epoch(BatchLoader(ds, 4, shuffle=True, augment=True, seed=1), 5)
    for (xa, ya), (xb, yb) in zip(run, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader = BatchLoader(ds, 4, shuffle=True, seed=1)
    orders = [torch.cat([y for _, y in epoch(loader, e)]).tolist() for e in (0, 1, 0)]
    assert orders[0] != orders[1] and orders[0] == orders[2]
    other_seed = torch.cat([y for _, y in epoch(BatchLoader(ds, 4, shuffle=True, seed=2), 0)])
    assert other_seed.tolist() != orders[0]


def test_loader_without_shuffle_normalises_in_order():
    ds = indexed_dataset()
    loader = BatchLoader(ds, 10, normalization="cifar")
    x, y = next(iter(loader))
    assert y.tolist() == list(range(10)) and y.dtype == torch.int64
    expected = normalize(ds.images[:10].permute(0, 3, 1, 2).float() / 255, *NORMALIZATION["cifar"])
    assert torch.allclose(x, expected)
    plain = next(iter(BatchLoader(ds, 10, normalization=((0.5,), (0.5,)))))[0]
    assert torch.allclose(plain, ds.images[:10].permute(0, 3, 1, 2).float() / 127.5 - 1)
    assert loader.dataset is ds and loader.batch_size == 10


def test_loader_drop_last_and_validation():
    ds = indexed_dataset()
    assert len(BatchLoader(ds, 5, drop_last=True)) == 4
    assert sum(len(y) for _, y in BatchLoader(ds, 5, drop_last=True)) == 20
    for bad in (0, -1, 2.5):
        with pytest.raises(UserError, match="batch size"):
            BatchLoader(ds, bad)
    with pytest.raises(UserError, match="channel"):
        BatchLoader(ds, 4, normalization=((0.1, 0.2), (1.0, 1.0)))
    with pytest.raises(UserError, match="did you mean"):
        BatchLoader(ds, 4, normalization="imagenett")


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_cifar10_test_split(shared_dir, session_cache):
    archive = shared_dir / "data" / "cifar10-jpeg.tar.gz"
    ds = load_image_folder(archive, "test", cache_dir=session_cache, progress=False)
    assert len(ds) == 10_000 and ds.images.shape[1:] == (32, 32, 3)
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                          "horse", "ship", "truck"]
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert os.listdir(session_cache)


def test_subset_is_a_seeded_sample_in_original_order_not_the_first_images():
    images = torch.zeros(100, 2, 2, 1, dtype=torch.uint8)
    labels = torch.arange(10).repeat_interleave(10)  # stored class by class, like image folders
    dataset = ArrayDataset(images, labels, [str(i) for i in range(10)])
    sample = dataset.subset(30)
    assert len(sample) == 30 and len(set(sample.labels.tolist())) >= 8
    assert sample.labels.tolist() == sorted(sample.labels.tolist())
    assert torch.equal(dataset.subset(30).labels, sample.labels)
    assert not torch.equal(dataset.subset(30, seed=1).labels, sample.labels)
    assert dataset.subset(500) is dataset


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped():
    import io

    from torchslim.data._decode import decode_one

    ramp = (np.arange(256).reshape(16, 16) * 257).astype(np.uint16)  # 0 ... 65535
    blob = io.BytesIO()
    Image.fromarray(ramp).save(blob, format="PNG")
    decoded = decode_one(blob.getvalue(), None)
    assert decoded.shape == (16, 16) and decoded.dtype == np.uint8
    assert decoded.flatten().tolist() == list(range(256))  # was 0 then 255 everywhere


def test_the_digits_normalization_comes_from_the_training_split():
    from torchslim.data import load_digits
    from torchslim.data.transforms import get_normalization

    pixels = load_digits("train").images.float() / 255
    assert get_normalization("digits") == ((round(float(pixels.mean()), 3),),
                                           (round(float(pixels.std()), 3),))


def test_a_32_bit_container_holding_8_bit_values_keeps_them():
    import io

    from torchslim.data._decode import decode_one

    blob = io.BytesIO()
    Image.fromarray(np.array([[0, 64, 128, 255]], dtype=np.int32), "I").save(blob, format="TIFF")
    assert decode_one(blob.getvalue(), None).tolist() == [[0, 64, 128, 255]]
