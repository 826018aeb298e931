"""Helpers shared by the ``epdo`` subcommands: errors, devices, torch.distributed, seeding and RNG
state, data access, evaluation, image rotation, atomic JSON files and plots."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from epdo._io import atomic_write_bytes
from epdo._machine import cpu_model, neural_epdo_kernel

logger = logging.getLogger("epdo.cli")

DATA_NAMES = ("rotmnist-replica", "rotmnist", "mnist", "fashion-mnist", "sample")
SPLITS = ("train", "valid", "test")


class CLIError(Exception):
    """A user error: reported as one line (no traceback), exit status 2."""


# ----------------------------------------------------------------------------------------------
# logging


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* ``sys.stderr`` (which test runners swap)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = True) -> None:
    log = logging.getLogger("epdo")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO if verbose else logging.WARNING)


# ----------------------------------------------------------------------------------------------
# devices and torch.distributed


@dataclass
class DistContext:
    """Process-group facts; ``world_size == 1`` without torchrun."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: Sequence[float | torch.Tensor]) -> list[float]:
        """Sum each value over ranks (float64); identity when not distributed."""
        t = torch.stack([torch.as_tensor(v, dtype=torch.float64).detach().reshape(()).cpu() for v in values])
        if self.distributed:
            import torch.distributed as dist

            t = t.to(self.device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copy rank 0's buffers (batch-norm running statistics) to every rank."""
        if self.distributed:
            import torch.distributed as dist

            for b in module.buffers():
                dist.broadcast(b.data, src=0)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    spec = (spec or "auto").strip()
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise CLIError(f"invalid --device {spec!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {spec}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    elif dev.type != "cpu" and dev.type != "mps":
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return dev


def setup_distributed(device_spec: str) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device_spec))
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(device=device, rank=rank, world_size=world, local_rank=local_rank, owns_group=owns)


def machine_info(ctx: DistContext) -> dict[str, Any]:
    gpu = None
    if ctx.device.type == "cuda":
        gpu = torch.cuda.get_device_name(ctx.device)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": cpu_model(),
        "neural_epdo_kernel": neural_epdo_kernel(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(ctx.device),
        "gpu": gpu,
        "world_size": ctx.world_size,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
    }


# ----------------------------------------------------------------------------------------------
# seeding and RNG states (as tensors, so checkpoints load with weights_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    py = random.getstate()
    npy = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2],
        "numpy_keys": torch.from_numpy(np.asarray(npy[1], dtype=np.int64)),
        "numpy_pos": int(npy[2]),
        "numpy_has_gauss": int(npy[3]),
        "numpy_gauss": float(npy[4]),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"])
    )
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------------------------
# data


def load_split(name: str, split: str, data_dir: str | None, cache_dir: str | None, data_seed: int):
    """``epdo.data.get_dataset`` with its value errors turned into one-line user errors."""
    from epdo.data import get_dataset

    try:
        return get_dataset(name, split, data_dir=data_dir, cache_dir=cache_dir, seed=data_seed)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise CLIError(str(e)) from None


def dataset_tensors(ds, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float32 (N, C, H, W), labels int64 (N,))`` of a dataset, optionally the first ``limit``."""
    images = getattr(ds, "images", None)
    labels = getattr(ds, "labels", None)
    if images is None or labels is None:
        pairs = [ds[i] for i in range(len(ds) if limit is None else min(limit, len(ds)))]
        images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        labels = torch.tensor([int(p[1]) for p in pairs])
    images = torch.as_tensor(images).to(torch.float32)
    labels = torch.as_tensor(labels).to(torch.int64)
    if limit is not None:
        if limit < 1:
            raise CLIError(f"limits must be positive, got {limit}")
        images, labels = images[:limit], labels[:limit]
    return images, labels


def dataset_label(name: str, ds) -> dict[str, Any]:
    is_replica = bool(getattr(ds, "is_replica", False))
    ds_name = str(getattr(ds, "name", name))
    return {
        "name": name,
        "dataset_name": ds_name,
        "is_replica": is_replica,
        "label": f"{ds_name} (replica)" if is_replica else ds_name,
    }


class IndexedBatches(torch.utils.data.Dataset):
    """Fetches a whole batch from in-memory tensors: ``ds[list_of_indices] -> (x, y, idx)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return self.images[idx], self.labels[idx], idx


# ----------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    ctx: DistContext | None = None,
    batch_size: int = 500,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float, int]:
    """``(mean cross-entropy, error in %, n)`` of ``model`` (switched to eval mode).

    With a distributed ``ctx`` each rank takes the samples ``rank::world_size`` and the sums are
    all-reduced, so the result equals the single-process one (up to float summation order).
    """
    was_training = model.training
    model.eval()
    idx = torch.arange(len(labels))
    if ctx is not None and ctx.distributed:
        idx = idx[ctx.rank :: ctx.world_size]
    loss_sum = torch.zeros((), dtype=torch.float64)
    wrong = torch.zeros((), dtype=torch.int64)
    for k in range(0, len(idx), batch_size):
        b = idx[k : k + batch_size]
        x = images[b].to(device, non_blocking=True)
        y = labels[b].to(device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
        wrong += (logits.argmax(dim=1) != y).sum().cpu()
    model.train(was_training)
    if ctx is not None:
        loss_total, wrong_total, n = ctx.all_reduce_sum([loss_sum, wrong, len(idx)])
    else:
        loss_total, wrong_total, n = float(loss_sum), float(wrong), len(idx)
    n = int(round(n))
    if n == 0:
        raise CLIError("cannot evaluate on an empty dataset")
    return loss_total / n, 100.0 * wrong_total / n, n


# ----------------------------------------------------------------------------------------------
# image rotation (counter-clockwise in the x-right, y-up frame of docs/design.md)


def rotate(x: torch.Tensor, angle_deg: float | torch.Tensor) -> torch.Tensor:
    """Rotate ``(B, C, H, W)`` images counter-clockwise about the centre by ``angle_deg`` degrees.

    A scalar multiple of 90 degrees uses ``torch.rot90`` (exact); otherwise bilinear
    ``grid_sample`` with zero fill. ``angle_deg`` may be a ``(B,)`` tensor (one angle per image).
    """
    if not torch.is_tensor(angle_deg) or angle_deg.dim() == 0:
        a = float(angle_deg) % 360.0
        if a % 90.0 == 0.0 and x.shape[-1] == x.shape[-2]:
            return torch.rot90(x, k=int(a // 90), dims=(-2, -1))
        angle_deg = torch.full((x.shape[0],), a, dtype=torch.float64)
    theta_rad = angle_deg.to(torch.float64).reshape(-1) * (math.pi / 180.0)
    c, s = torch.cos(theta_rad), torch.sin(theta_rad)
    # output pixel p samples the input at R(-theta) p; the y axis of the sampling grid points down
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], 1), torch.stack([s, c, torch.zeros_like(c)], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def disk_mask(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 on the disk inscribed in the image (radius ``min(h, w) / 2 - 1`` about the centre), 0 outside."""
    i = torch.arange(h, dtype=torch.float64).view(-1, 1) - (h - 1) / 2
    j = torch.arange(w, dtype=torch.float64).view(1, -1) - (w - 1) / 2
    r = min(h, w) / 2 - 1
    return ((i**2 + j**2) <= r**2).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# files


def write_json(path: str | os.PathLike, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    """A matplotlib Figure without pyplot (no GUI backend), or ``None`` if matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.info("matplotlib is not installed: skipping the PNG (pip install 'epdo[plot]')")
        return None
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    fig.subplots(1, ncols, squeeze=False)
    return fig


def save_figure(fig, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    logger.info("wrote %s", path)


def parse_model_kwargs(items: Sequence[str] | None) -> dict[str, Any]:
    """``["dropout=0", "channels=[8, 16]", "activation=elu"]`` -> dict (Python literals, else strings)."""
    import ast

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CLIError(f"--model-kw expects KEY=VALUE with KEY a Python identifier, got {item!r}")
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def format_count(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def out_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create output folder {p}: {e.strerror or e}") from None
    return p
