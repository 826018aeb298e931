r"""Image-folder and sharded-tar datasets (ImageNet, ImageNet-100, any ``train/<class>/*.jpg`` tree), decoded by
Pillow in the DataLoader's worker processes, with the standard ImageNet transforms as torch ops.

Layouts of ``data_dir`` (the split ``train`` reads ``train/``, ``valid`` reads ``val/``, ``test`` reads ``test/``
if it has class folders, else ``val/``: ImageNet's labelled validation set is the set papers report, as paper 000
does; there is no separate model-selection split):

* folders: ``<split dir>/<class>/<image>`` (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``; any case). The
  classes are the sorted folder names; train and val must have the same class folders (else
  :class:`~epdo.data.DataFormatError` naming the differences). An empty or class-less directory is an error.
* shards (webdataset): ``<split dir>-NNNNNN.tar`` files (e.g. ``train-000000.tar``) of samples ``<key>.jpg`` +
  ``<key>.cls`` (the class index as text), and ``classes.txt`` (one class name per line) beside them;
  :func:`write_shards` makes them from a folder tree. Read by :class:`ImageShards`, an ``IterableDataset``:
  each rank reads every ``world``-th shard and each worker every ``num_workers``-th of those, in a shard order
  and a shuffle buffer seeded by ``(seed, epoch)``; every rank yields exactly ``N // world`` samples per epoch
  (cycling its shards if short) so that no rank waits for a peer at the end of an epoch.

Items are ``(image, label)``: float32 ``(3, S, S)`` in [0, 1] and an int64 class. Transforms
(:class:`ImageTransform`): training ``RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3))``, horizontal flip
with probability 1/2, colour jitter (brightness, contrast, saturation 0.4, in random order) -- the standard
ImageNet augmentation (He et al. 2016 / torchvision's reference recipe); evaluation and ``augment=False``:
resize the shorter side to ``round(S * 256 / 224)`` and crop the centre ``S x S``. Resizing is
``torch.nn.functional.interpolate`` (bilinear, antialiased). torchvision does not import beside the pinned
torch, so these are written with torch ops (the formulas of torchvision's ``RandomResizedCrop.get_params`` and
``ColorJitter``, re-derived, no code copied).

Randomness: the augmentation of sample ``i`` in epoch ``e`` is drawn from a generator seeded by
``(seed, e, i)`` only (:meth:`ImageFolder.set_epoch`), so it does not depend on the worker, the rank, the
batch size or on resuming.

Bad files: an image Pillow cannot decode (truncated, not an image) is skipped with a warning naming the file:
``__getitem__`` returns ``None``, :func:`collate_skip` drops it and counts it in the batch (``epdo train`` sums
the counts and reports them), so training does not die on one bad JPEG.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import math
import os
import random
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .errors import DataFormatError, DataNotFoundError
from .registry import DatasetSpec, register_dataset

__all__ = ["ImageFolder", "ImageShards", "ImageTransform", "BadImageWarning", "collate_skip", "write_shards",
           "load_image_dataset", "imagenet100_classes", "IMAGE_EXTENSIONS", "parse_setting", "write_synthetic_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLIT_DIRS = {"train": ("train",), "valid": ("val",), "test": ("test", "val")}
_CLASS_LIST = Path(__file__).with_name("imagenet100.txt")


class BadImageWarning(UserWarning):
    """An image file that could not be decoded (skipped)."""


def _pil():
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is in the images / test extras
        raise ImportError("epdo.data.imagefolder decodes images with Pillow: pip install 'epdo[images]'") from e
    return Image


# ----------------------------------------------------------------------------------------------
# transforms


class ImageTransform:
    """``uint8 (3, H, W)`` -> float32 ``(3, size, size)`` in [0, 1]; see the module docstring.

    >>> t = ImageTransform(32, train=False)
    >>> t(torch.zeros(3, 40, 60, dtype=torch.uint8), torch.Generator()).shape
    torch.Size([3, 32, 32])
    """

    def __init__(self, size: int = 224, train: bool = True, augment: bool = True, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), jitter: float = 0.4, resize: int | None = None):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"ImageTransform: size must be a positive int, got {size!r}")
        self.size, self.train, self.augment = size, bool(train), bool(augment)
        self.scale, self.ratio, self.jitter = tuple(scale), tuple(ratio), float(jitter)
        self.resize = int(round(size * 256 / 224)) if resize is None else int(resize)

    def __repr__(self) -> str:
        return (f"ImageTransform(size={self.size}, train={self.train}, augment={self.augment}, "
                f"resize={self.resize})")

    @staticmethod
    def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]

    def _crop_box(self, h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
        area = h * w
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            r = math.exp(log_r[0] + u[1] * (log_r[1] - log_r[0]))
            cw, ch = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
            if 0 < cw <= w and 0 < ch <= h:
                i = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                j = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                return i, j, ch, cw
        r = w / h  # fallback: the centre crop of the clamped ratio
        if r < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif r > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def _jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        j = self.jitter
        factors = (1 - j + 2 * j * torch.rand(3, generator=g, dtype=torch.float64)).tolist()
        for k in torch.randperm(3, generator=g).tolist():
            f = factors[k]
            if k == 0:  # brightness: blend with black
                x = x * f
            else:
                gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
                other = gray.mean().expand_as(x) if k == 1 else gray.expand_as(x)  # contrast: mean grey; saturation
                x = f * x + (1 - f) * other
            x = x.clamp(0.0, 1.0)
        return x

    def __call__(self, img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"ImageTransform: expected a (3, H, W) image, got {tuple(img.shape)}")
        x = img.to(torch.float32) / 255.0
        h, w = x.shape[1:]
        if self.train and self.augment:
            i, j, ch, cw = self._crop_box(h, w, g)
            x = self._resize(x[:, i: i + ch, j: j + cw], self.size, self.size)
            if bool(torch.rand((), generator=g) < 0.5):
                x = x.flip(-1)
            return self._jitter(x.clamp(0.0, 1.0), g).contiguous()
        s = self.resize / min(h, w)
        nh, nw = max(self.size, int(round(h * s))), max(self.size, int(round(w * s)))
        x = self._resize(x, nh, nw)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        return x[:, top: top + self.size, left: left + self.size].clamp(0.0, 1.0).contiguous()


def _decode(data: bytes | str | os.PathLike) -> torch.Tensor:
    """Pillow decode (file path or bytes) -> uint8 ``(3, H, W)`` RGB."""
    Image = _pil()
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(src) as im:
        im = im.convert("RGB")  # forces the full decode: a truncated file raises here
        h, w = im.height, im.width
        buf = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return buf.view(h, w, 3).permute(2, 0, 1).contiguous()


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) * 1_000_000_007 + int(index))


def _bad(path: str, err: BaseException) -> None:
    warnings.warn(f"skipping unreadable image {path}: {type(err).__name__}: {err}", BadImageWarning, stacklevel=3)


def collate_skip(items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack ``(image, label)`` items, dropping ``None`` (unreadable images): ``(images, labels, n_skipped)``."""
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.int64), skipped
    return torch.stack([g[0] for g in good]), torch.stack([g[1] for g in good]), skipped


# ----------------------------------------------------------------------------------------------
# folders


def _class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataFormatError(f"image folder {root} has no class folders (expected {root}/<class>/<image>.jpg)")
    return classes


def _check_same_classes(a: Path, ca: Sequence[str], b: Path, cb: Sequence[str]) -> None:
    if list(ca) != list(cb):
        only_a, only_b = sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca))
        raise DataFormatError(f"class folders differ between {a} ({len(ca)} classes) and {b} ({len(cb)}): only in "
                              f"{a.name}: {only_a[:10]}{' ...' if len(only_a) > 10 else ''}; only in {b.name}: "
                              f"{only_b[:10]}{' ...' if len(only_b) > 10 else ''}")


class ImageFolder(Dataset):
    """``root/<class>/<image>`` files as ``(image, label)`` items (decoded by Pillow when read).

    ``classes``: the class folders to use, in label order (default: all, sorted); a listed class without a
    folder is an error. ``transform``: an :class:`ImageTransform`; ``seed``: of the augmentation.
    """

    def __init__(self, root: str | os.PathLike, transform: ImageTransform, classes: Sequence[str] | None = None,
                 seed: int = 0, name: str = "imagefolder", split: str = "train"):
        self.root = Path(root)
        found = _class_folders(self.root)
        if classes is None:
            classes = found
        else:
            missing = sorted(set(classes) - set(found))
            if missing:
                raise DataFormatError(f"image folder {self.root}: {len(missing)} of the {len(classes)} listed classes "
                                      f"have no folder: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.samples: list[tuple[str, int]] = []
        for label, c in enumerate(self.classes):
            files = sorted(f for f in os.listdir(self.root / c) if f.lower().endswith(IMAGE_EXTENSIONS))
            self.samples += [(str(self.root / c / f), label) for f in files]
        if not self.samples:
            raise DataFormatError(f"image folder {self.root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its "
                                  f"{len(self.classes)} class folders")
        self.transform, self.seed, self.epoch = transform, int(seed), 0
        self.name, self.split, self.is_replica = name, split, False
        self.description = f"{name} ({self.root}, {len(self.samples):,} images, {self.num_classes} classes)"

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the augmentation draws (call before creating the epoch's DataLoader iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            img = _decode(path)
        except Exception as err:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, ...
            _bad(path, err)
            return None
        x = self.transform(img, _sample_generator(self.seed, self.epoch, index))
        return x, torch.tensor(label, dtype=torch.int64)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n={len(self)}, classes={self.num_classes}, {self.transform})"


# ----------------------------------------------------------------------------------------------
# shards


def _shard_files(prefix: Path) -> list[str]:
    return sorted(glob.glob(f"{glob.escape(str(prefix))}-*.tar"))


def write_shards(folder: ImageFolder | str | os.PathLike, out_prefix: str | os.PathLike,
                 per_shard: int = 1000) -> list[str]:
    """Write the files of an image folder tree as webdataset shards ``<out_prefix>-NNNNNN.tar`` (original bytes,
    ``<key>.<ext>`` + ``<key>.cls``), ``classes.txt`` and ``<out_prefix>-index.json`` (samples per shard) beside
    them. Returns the shard paths."""
    import webdataset as wds

    if not isinstance(folder, ImageFolder):
        folder = ImageFolder(folder, ImageTransform(train=False))
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    paths, counts = [], []
    for s in range(0, len(folder.samples), per_shard):
        path = f"{out_prefix}-{s // per_shard:06d}.tar"
        chunk = folder.samples[s: s + per_shard]
        with wds.TarWriter(path + ".tmp") as sink:
            for k, (file, label) in enumerate(chunk):
                ext = Path(file).suffix.lower().lstrip(".")
                sink.write({"__key__": f"{s + k:09d}", ext: Path(file).read_bytes(), "cls": str(label).encode()})
        os.replace(path + ".tmp", path)
        paths.append(path)
        counts.append(len(chunk))
    (out_prefix.parent / "classes.txt").write_text("\n".join(folder.classes) + "\n")
    Path(f"{out_prefix}-index.json").write_text(json.dumps({"shards": [Path(p).name for p in paths],
                                                            "samples": counts}))
    return paths


class ImageShards(IterableDataset):
    """Webdataset shards ``<prefix>-NNNNNN.tar`` as an ``IterableDataset`` of ``(image, label)`` (see the module
    docstring for the split per rank and worker and the seeded order). ``rank`` / ``world`` default to
    ``torch.distributed``'s when it is initialised."""

    def __init__(self, prefix: str | os.PathLike, transform: ImageTransform, classes: Sequence[str], seed: int = 0,
                 shuffle: bool = True, buffer: int = 256, name: str = "imagefolder", split: str = "train"):
        self.prefix = Path(prefix)
        self.shards = _shard_files(self.prefix)
        if not self.shards:
            raise DataNotFoundError(f"no shards {self.prefix}-*.tar")
        index = Path(f"{self.prefix}-index.json")
        if not index.exists():
            raise DataNotFoundError(f"{index} is missing (samples per shard; written by epdo.data.imagefolder."
                                    "write_shards)")
        info = json.loads(index.read_text())
        if info.get("shards") != [Path(p).name for p in self.shards]:
            raise DataFormatError(f"{index} lists shards {info.get('shards')}, found {[Path(p).name for p in self.shards]}")
        self.counts = [int(c) for c in info["samples"]]
        self.classes, self.num_classes = list(classes), len(classes)
        self.transform, self.seed, self.shuffle, self.buffer = transform, int(seed), bool(shuffle), int(buffer)
        self.epoch, self.rank, self.world = 0, None, None
        self.skip_batches, self.batch_size = 0, 1  # set_start: resume inside an epoch
        self.name, self.split, self.is_replica = name, split, False
        self.description = f"{name} ({len(self.shards)} shards of {self.prefix}, {sum(self.counts):,} images)"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, batches: int, batch_size: int) -> None:
        """Begin the next pass after this rank's first ``batches`` batches of ``batch_size`` (as a DataLoader with
        ``drop_last=True`` would have yielded them, its workers in turn): every worker skips its share without
        decoding, keeping the shuffle buffer, the per-sample seeds and hence the rest of the epoch unchanged."""
        if batches < 0 or batch_size < 1:
            raise ValueError(f"ImageShards.set_start: expected batches >= 0 and batch_size >= 1, got {batches}, "
                             f"{batch_size}")
        self.skip_batches, self.batch_size = int(batches), int(batch_size)

    def _worker_role(self, wid: int, nw: int, quota: int) -> tuple[int, int]:
        """``(logical worker, samples it skips)`` for DataLoader worker ``wid`` of ``nw``. Every worker has the same
        quota, so the DataLoader's turns cycle through the logical workers 0, 1, ..., nw - 1 for the whole epoch;
        after ``skip_batches`` batches the next turn is logical worker ``skip_batches % nw``, which is why the
        DataLoader's worker 0 (its first turn) plays that one when resuming."""
        lw = (wid + self.skip_batches) % nw
        taken = self.skip_batches // nw + (1 if lw < self.skip_batches % nw else 0)
        return lw, min(taken * self.batch_size, quota)

    def set_rank(self, rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"ImageShards: rank must be in [0, {world}), got {rank}")
        if len(self.shards) < world:
            raise DataFormatError(f"{len(self.shards)} shards of {self.prefix} cannot be split over {world} ranks "
                                  "(write at least one shard per rank)")
        self.rank, self.world = int(rank), int(world)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                self.set_rank(torch.distributed.get_rank(), torch.distributed.get_world_size())
            else:
                return 0, 1
        return self.rank, self.world

    def __len__(self) -> int:
        """Samples per rank per epoch: ``N // world``."""
        return sum(self.counts) // self._rank_world()[1]

    def _samples(self, shards: list[str]) -> Iterator[tuple[str, bytes, int]]:
        import tarfile

        for path in shards:
            with tarfile.open(path) as tar:
                group: dict[str, Any] = {}
                key = None
                for m in tar:
                    if not m.isfile():
                        continue
                    k, _, ext = m.name.partition(".")
                    if k != key and group:
                        yield from _complete(group, path)
                        group = {}
                    key = k
                    group[ext.lower()] = tar.extractfile(m).read()
                    group["__name__"] = f"{path}:{k}"
                if group:
                    yield from _complete(group, path)

    def __iter__(self):
        rank, world = self._rank_world()
        order = list(range(len(self.shards)))
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        mine = [self.shards[i] for i in order[rank::world]]
        per_rank = sum(self.counts) // world
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        # every worker the same quota of the rank's per_rank samples (the < nw left over are dropped: equal turns,
        # see _worker_role), its shards (cycled if they hold fewer); resuming: its role and what it skips
        quota = per_rank // nw
        wid, skip = self._worker_role(wid, nw, quota)
        shards = mine[wid::nw] or mine
        wrng = random.Random((self.seed * 1_000_003 + self.epoch) * 7919 + rank * 131 + wid)
        def stream():  # the worker's shards in order, cycled only as far as its quota needs
            while True:
                yield from self._samples(shards)

        buf: list[tuple[str, bytes, int]] = []
        k = 0
        for sample in itertools.islice(stream(), quota):
            if self.shuffle:
                buf.append(sample)
                if len(buf) < self.buffer:
                    continue
                sample = buf.pop(wrng.randrange(len(buf)))
            k += 1
            if k > skip:
                yield self._item(sample, k, rank, wid)
        while buf:
            k += 1
            sample = buf.pop(wrng.randrange(len(buf)))
            if k > skip:
                yield self._item(sample, k, rank, wid)

    def _item(self, sample: tuple[str, bytes, int], k: int, rank: int, wid: int):
        name, data, label = sample
        try:
            img = _decode(data)
        except Exception as err:  # noqa: BLE001
            _bad(name, err)
            return None
        g = _sample_generator(self.seed, self.epoch, (rank * 1009 + wid) * 10_000_019 + k)
        return self.transform(img, g), torch.tensor(label, dtype=torch.int64)


def _complete(group: dict[str, Any], path: str) -> Iterator[tuple[str, bytes, int]]:
    img = next((group[e.lstrip(".")] for e in IMAGE_EXTENSIONS if e.lstrip(".") in group), None)
    if img is None or "cls" not in group:
        warnings.warn(f"skipping incomplete sample {group.get('__name__')} (needs an image and a .cls)",
                      BadImageWarning, stacklevel=2)
        return
    yield group["__name__"], img, int(group["cls"].decode().strip())


def write_synthetic_folder(root: str | os.PathLike, classes: int = 3, per_class: int = 4, size=(40, 48),
                           splits=("train", "val"), seed: int = 0, fmt: str = "JPEG") -> Path:
    """A small ``<root>/<split>/c<k>/<i>.jpg`` tree (tests, benchmarks): class ``k``'s images are noise around a
    colour that depends on ``k`` (learnable, and invariant to rotations). Returns ``root``."""
    Image = _pil()
    root = Path(root)
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [40, 200, 200],
                            [200, 40, 200], [120, 120, 120], [230, 140, 60]], dtype=torch.float32)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for split in splits:
        for k in range(classes):
            d = root / split / f"c{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = palette[k % len(palette)] * (0.7 + 0.3 * (k // len(palette) + 1) / (classes // len(palette) + 1))
                img = (base + 40 * torch.randn(size[0], size[1], 3, generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(img.numpy(), "RGB").save(d / f"{i}.{ext}", fmt)
    return root


# ----------------------------------------------------------------------------------------------
# the registered datasets


def imagenet100_classes() -> list[str]:
    """The 100 WordNet ids of ImageNet-100 (``imagenet100.txt``; see the file's header for its source)."""
    if not _CLASS_LIST.exists():
        raise DataNotFoundError(f"{_CLASS_LIST} is missing")
    ids = [ln.strip() for ln in _CLASS_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return ids


def parse_setting(setting: str | None) -> tuple[bool, int]:
    """``"augment"`` (default) / ``"none"``, optionally ``"-<size>"`` (e.g. ``"none-64"``): (augment, image size)."""
    text = "augment" if setting is None else str(setting)
    kind, _, size = text.partition("-")
    if kind not in ("augment", "none") or (size and not size.isdigit()) or (size and int(size) < 8):
        raise ValueError(f"setting must be 'augment' or 'none', optionally with '-<image size >= 8>' "
                         f"(e.g. 'none-128'), got {setting!r}")
    return kind == "augment", int(size) if size else 224


def load_image_dataset(name: str, split: str, data_dir: str | os.PathLike | None, seed: int = 0,
                       setting: str | None = None, classes: Sequence[str] | None = None):
    """One split of an image folder / shard tree under ``data_dir`` (module docstring)."""
    if split not in _SPLIT_DIRS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_DIRS)}, got {split!r}")
    if data_dir is None:
        raise DataNotFoundError(f"dataset {name!r} needs --data-dir: a folder with train/ and val/ class folders "
                                "(train/<class>/<image>.jpg) or train-NNNNNN.tar / val-NNNNNN.tar shards")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"dataset {name!r}: --data-dir {root} does not exist")
    augment, size = parse_setting(setting)
    transform = ImageTransform(size, train=split == "train", augment=augment)
    if classes is None and (root / "train").is_dir() and (root / "val").is_dir():
        _check_same_classes(root / "train", _class_folders(root / "train"), root / "val", _class_folders(root / "val"))
    for sub in _SPLIT_DIRS[split]:
        d = root / sub
        if d.is_dir():
            return ImageFolder(d, transform, classes=classes, seed=seed, name=name, split=split)
        if _shard_files(d):
            listed = root / "classes.txt"
            if not listed.exists():
                raise DataNotFoundError(f"{listed} is missing (the class names of the shards, one per line)")
            all_classes = [ln.strip() for ln in listed.read_text().splitlines() if ln.strip()]
            if classes is not None and list(classes) != all_classes:
                raise DataFormatError(f"the shards under {root} hold {len(all_classes)} classes ({listed}), not the "
                                      f"{len(classes)} of {name}; write shards of exactly those classes")
            return ImageShards(d, transform, all_classes, seed=seed, shuffle=split == "train", name=name, split=split)
    want = " or ".join(f"{root / s}/<class>/ or {root / s}-NNNNNN.tar" for s in _SPLIT_DIRS[split])
    raise DataNotFoundError(f"dataset {name!r}, split {split!r}: found neither {want}")


def _loader(name: str, classes_fn=None):
    def load(split, *, data_dir=None, cache_dir=None, seed=0, setting=None):
        return load_image_dataset(name, split, data_dir, seed=seed, setting=setting,
                                  classes=None if classes_fn is None else classes_fn())
    return load


_HELP = ("--data-dir with train/ and val/ (class folders or webdataset shards); --setting augment|none[-SIZE] "
         "(default augment, 224)")
register_dataset(DatasetSpec("imagefolder", _loader("imagefolder"), options=("setting",),
                             description=f"any image folder tree, all its classes; {_HELP}"))
register_dataset(DatasetSpec("imagenet", _loader("imagenet"), options=("setting",),
                             description=f"ImageNet-1k (ILSVRC 2012), 1000 classes; {_HELP}"))
register_dataset(DatasetSpec("imagenet100", _loader("imagenet100", imagenet100_classes), options=("setting",),
                             description=f"ImageNet-100 (Hou et al. 2019's 100 classes, imagenet100.txt); {_HELP}"))
