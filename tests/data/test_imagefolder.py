"""Image folders and webdataset shards (epdo.data.imagefolder) on a synthetic tree the tests write: shapes and
ranges, the transforms' geometry, determinism per (seed, epoch, index) across workers, the split per rank,
unreadable images skipped and counted, and the clear errors (no classes, class mismatch, missing classes)."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

pytest.importorskip("PIL", reason="the image pipeline decodes with Pillow (pip install 'epdo[images]')")

from epdo.data import DataFormatError, DataNotFoundError, get_dataset  # noqa: E402
from epdo.data.imagefolder import (  # noqa: E402
    BadImageWarning,
    ImageFolder,
    ImageShards,
    ImageTransform,
    collate_skip,
    imagenet100_classes,
    parse_setting,
    write_shards,
    write_synthetic_folder,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=4, size=(40, 48))


def test_items_shapes_and_ranges(tree):
    for split in ("train", "valid", "test"):
        ds = get_dataset("imagefolder", split, data_dir=tree, setting="augment-32")
        assert len(ds) == 12 and ds.num_classes == 3 and ds.classes == ["c0", "c1", "c2"]
        x, y = ds[5]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64 and int(y) == 1
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_eval_transform_geometry():
    """Resize the shorter side to round(S * 256 / 224), crop the centre: a left/right split image keeps its split
    in the middle column; a constant image stays constant."""
    t = ImageTransform(28, train=False)
    assert t.resize == 32
    img = torch.zeros(3, 40, 80, dtype=torch.uint8)
    img[:, :, 40:] = 255
    out = t(img, torch.Generator())
    assert out.shape == (3, 28, 28)
    assert float(out[:, :, :10].max()) < 1e-6 and float(out[:, :, -10:].min()) > 1 - 1e-6
    const = torch.full((3, 50, 30), 128, dtype=torch.uint8)
    assert torch.allclose(t(const, torch.Generator()), torch.full((3, 28, 28), 128 / 255), atol=1e-6)


def test_train_augmentation_is_random_per_sample_but_seeded(tree):
    ds = get_dataset("imagefolder", "train", data_dir=tree, setting="augment-32", seed=3)
    a = ds[0][0]
    assert torch.equal(a, ds[0][0])  # same (seed, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0][0])  # another epoch, another crop / flip / jitter
    ds.set_epoch(0)
    other = get_dataset("imagefolder", "train", data_dir=tree, setting="augment-32", seed=4)
    assert not torch.equal(a, other[0][0])
    plain = get_dataset("imagefolder", "train", data_dir=tree, setting="none-32")
    p0 = plain[0][0]
    plain.set_epoch(5)
    assert torch.equal(p0, plain[0][0])  # no augmentation: the evaluation transform


def _batches(ds, sampler, workers):
    dl = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_skip)
    return [(x, y) for x, y, _ in dl]


def test_deterministic_order_per_epoch_and_rank_and_workers(tree):
    ds = get_dataset("imagefolder", "train", data_dir=tree, setting="augment-24")
    seen = []
    for rank in (0, 1):
        s = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=7)
        s.set_epoch(2)
        ds.set_epoch(2)
        b0 = _batches(ds, s, 0)
        b2 = _batches(ds, s, 2)  # decoded in two worker processes: the same tensors
        assert all(torch.equal(x0, x2) and torch.equal(y0, y2) for (x0, y0), (x2, y2) in zip(b0, b2))
        seen += list(s)
    assert sorted(seen) == list(range(12))  # the ranks split the epoch


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tree, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(tree, root)
    good = (root / "train" / "c1" / "0.jpg").read_bytes()
    (root / "train" / "c1" / "0.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (root / "train" / "c2" / "9.jpg").write_bytes(b"not an image")
    ds = get_dataset("imagefolder", "train", data_dir=root, setting="none-24")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = [collate_skip([ds[i] for i in range(k, min(k + 5, len(ds)))]) for k in range(0, len(ds), 5)]
    names = " ".join(str(x.message) for x in w if issubclass(x.category, BadImageWarning))
    assert "c1/0.jpg" in names and "c2/9.jpg" in names
    assert sum(n for _, _, n in out) == 2 and sum(len(y) for _, y, _ in out) == len(ds) - 2


def test_shards_match_the_folder_and_split_per_rank(tree, tmp_path):
    folder = ImageFolder(tree / "train", ImageTransform(24, train=False))
    paths = write_shards(folder, tmp_path / "train", per_shard=3)
    assert len(paths) == 4
    shards = ImageShards(tmp_path / "train", ImageTransform(24, train=False), folder.classes, shuffle=False)
    items = list(shards)
    ref = [folder[i] for i in range(len(folder))]
    assert all(torch.equal(a[0], b[0]) and int(a[1]) == int(b[1]) for a, b in zip(items, ref))
    train = ImageShards(tmp_path / "train", ImageTransform(24), folder.classes, seed=1)
    labels = []
    for rank in (0, 1):
        train.set_rank(rank, 2)
        train.set_epoch(3)
        run1 = [(x, int(y)) for x, y, _ in DataLoader(train, batch_size=2, num_workers=2, collate_fn=collate_skip)
                for x, y in zip(x, y)]
        run2 = [(x, int(y)) for x, y in train]
        assert len(run1) == len(train) == 6 and len(run2) == 6
        assert sorted(y for _, y in run1) == sorted(y for _, y in run2)
        labels += [y for _, y in run2]
    assert sorted(labels) == sorted(int(y) for _, y in ref)  # balanced shards: every sample once per epoch
    with pytest.raises(DataFormatError, match="cannot be split over 5 ranks"):
        train.set_rank(0, 5)


def test_shards_through_get_dataset(tree, tmp_path):
    folder = ImageFolder(tree / "train", ImageTransform(24, train=False))
    write_shards(folder, tmp_path / "train", per_shard=6)
    write_shards(ImageFolder(tree / "val", ImageTransform(24, train=False)), tmp_path / "val", per_shard=6)
    ds = get_dataset("imagefolder", "train", data_dir=tmp_path, setting="augment-24")
    assert isinstance(ds, ImageShards) and ds.num_classes == 3 and len(ds) == 12
    assert isinstance(get_dataset("imagefolder", "valid", data_dir=tmp_path), ImageShards)


def test_clear_errors(tree, tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="has no class folders"):
        get_dataset("imagefolder", "train", data_dir=tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="needs --data-dir"):
        get_dataset("imagenet", "train")
    mism = tmp_path / "mism"
    shutil.copytree(tree, mism)
    shutil.move(str(mism / "val" / "c2"), str(mism / "val" / "c9"))
    with pytest.raises(DataFormatError, match=r"class folders differ.*only in train: \['c2'\].*only in val: \['c9'\]"):
        get_dataset("imagefolder", "train", data_dir=mism)
    with pytest.raises(DataFormatError, match="100 listed classes have no folder"):
        get_dataset("imagenet100", "train", data_dir=tree)
    with pytest.raises(ValueError, match="setting must be 'augment' or 'none'"):
        parse_setting("flip")
    with pytest.raises(ValueError, match="takes no option 'size'"):
        get_dataset("imagenet", "train", data_dir=tree, size=3)


def test_imagenet100_list():
    ids = imagenet100_classes()
    assert len(ids) == len(set(ids)) == 100 and all(i.startswith("n") and len(i) == 9 for i in ids)
    assert ids[0] == "n02123159" and ids[-1] == "n02093256"
