"""Helpers shared by the ``epdo`` subcommands: errors, output streams, devices, torch.distributed (with a
timeout and a report of the rank that stalled), seeding and RNG state, data access, evaluation, atomic JSON
files, plots and help text.

Output convention: results and per-epoch metrics go to stdout (so ``epdo train ... > log`` captures them),
progress bars and informational messages to stderr. Images are rotated by :func:`epdo.data.rotate_images`
(the one image rotation of the library) and equivariance is measured by :func:`epdo.check_equivariance`."""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import logging
import os
import platform
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from epdo._io import atomic_write_bytes
from epdo._machine import cpu_model, neural_epdo_kernel

from .tasks import Task, get_task

logger = logging.getLogger("epdo.cli")

#: default of ``--dist-timeout``: seconds a process waits for its peers in a collective before giving up
DEFAULT_DIST_TIMEOUT_S = 300.0



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
    timeout_s: float = DEFAULT_DIST_TIMEOUT_S
    store: Any = field(default=None, repr=False)  # a TCPStore client for heartbeats (None: no heartbeats)
    _where: str = field(default="start", repr=False)
    _beat_thread: Any = field(default=None, repr=False)
    _stop_beats: Any = field(default=None, repr=False)

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

    def heartbeat(self, where: str) -> None:
        """Say where this rank is (e.g. ``"epoch 2, step 7"``): sent with the next heartbeat."""
        self._where = where

    def start_heartbeats(self) -> None:
        """A daemon thread writes ``(time, where)`` to the store every ``interval`` s while the process runs;
        a stopped (SIGSTOP), deadlocked or dead process stops beating, one waiting in a collective does not."""
        if self.store is None or self._beat_thread is not None:
            return
        import threading

        self._stop_beats = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.store.set(f"epdo/heartbeat/{self.rank}", f"{time.time():.3f} {self._where}")
                except RuntimeError:  # the store's host went away: the collective error that follows says why
                    return
                if self._stop_beats.wait(self.heartbeat_interval):
                    return

        self._beat_thread = threading.Thread(target=beat, name=f"epdo-heartbeat-{self.rank}", daemon=True)
        self._beat_thread.start()

    @property
    def heartbeat_interval(self) -> float:
        return min(1.0, self.timeout_s / 10)

    def stall_report(self, error: BaseException) -> str:
        """A one-line message for a collective that failed or timed out, naming the ranks whose heartbeats
        stopped (all other ranks when there are no heartbeats or all of them are alive)."""
        now = time.time()
        seen: dict[int, tuple[float, str]] = {}
        if self.store is not None:
            for r in range(self.world_size):
                key = f"epdo/heartbeat/{r}"
                try:
                    if self.store.check([key]):
                        t, _, where = self.store.get(key).decode().partition(" ")
                        seen[r] = (float(t), where)
                except (RuntimeError, ValueError):
                    break
        others = [r for r in range(self.world_size) if r != self.rank]
        stale = max(3 * self.heartbeat_interval, 2.0)
        # a live rank beats from setup_distributed on, so with heartbeats a rank that never beat is suspect too
        stalled = [r for r in others if (r in seen and now - seen[r][0] > stale) or (seen and r not in seen)]
        if stalled:
            who = "rank" + ("s " if len(stalled) > 1 else " ") + ", ".join(map(str, stalled))
            last = "; ".join(f"last heartbeat of rank {r} {now - seen[r][0]:.0f} s ago, during {seen[r][1]}" if r in seen
                             else f"rank {r} sent no heartbeat" for r in stalled)
            cause = (f"{who} stopped responding ({last}): the process is stopped (SIGSTOP), deadlocked or dead")
        else:
            cause = (f"no heartbeat names a stalled rank; waiting for rank{'s' if len(others) > 1 else ''} "
                     f"{', '.join(map(str, others))} (slower, or failed)")
        what = " ".join(str(error).split())[:200]
        kind = "timed out" if "timed out" in what.lower() or "timeout" in what.lower() else "failed"
        return (f"rank {self.rank}: a collective operation {kind} (--dist-timeout {self.timeout_s:g} s): "
                f"{cause}; check that process, or raise --dist-timeout. ({what})")

    def close(self) -> None:
        if self._stop_beats is not None:
            self._stop_beats.set()
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def is_collective_error(e: BaseException) -> bool:
    """Whether ``e`` comes from torch.distributed (a timeout, a peer that went away), not from the model."""
    import torch.distributed as dist

    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    msg = str(e).lower()
    return any(k in msg for k in ("gloo", "nccl", "timed out", "connection reset", "connection closed", "broken pipe"))


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


def setup_distributed(device_spec: str, timeout_s: float = DEFAULT_DIST_TIMEOUT_S) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): NCCL on GPUs, gloo on CPU.

    Collectives that wait longer than ``timeout_s`` seconds for a peer raise (torch's default is 30 min);
    every rank writes heartbeats to the launcher's TCP store so that the error can name the rank that stalled.
    """
    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
        raise CLIError(f"--dist-timeout must be a positive number of seconds, got {timeout_s!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device_spec), timeout_s=float(timeout_s))
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    timeout = datetime.timedelta(seconds=float(timeout_s))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        owns = True
    store = None
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        try:
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                  timeout=datetime.timedelta(seconds=min(10.0, float(timeout_s))), wait_for_workers=False)
        except (RuntimeError, ValueError) as e:
            logger.debug("no heartbeat store (%s): a timeout will not name the stalled rank", e)
    ctx = DistContext(device=device, rank=rank, world_size=world, local_rank=local_rank, owns_group=owns,
                      timeout_s=float(timeout_s), store=store)
    ctx.start_heartbeats()
    return ctx


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


def load_split(name: str, split: str, data_dir: str | None, cache_dir: str | None, data_seed: int, **options):
    """``epdo.data.get_dataset`` with its value errors turned into one-line user errors."""
    from epdo.data import get_dataset

    try:
        return get_dataset(name, split, data_dir=data_dir, cache_dir=cache_dir, seed=data_seed, **options)
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise CLIError(str(e)) from None


def dataset_arrays(ds, limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """The in-memory tensors of a dataset in item order (inputs..., target), optionally the first ``limit``.

    Uses ``ds.tensors`` (the registry's contract), else stacks the items. Floating tensors become float32,
    integer ones int64.
    """
    if limit is not None and limit < 1:
        raise CLIError(f"limits must be positive, got {limit}")
    tensors = getattr(ds, "tensors", None)
    if tensors is None:
        n = len(ds) if limit is None else min(limit, len(ds))
        items = [tuple(ds[i]) for i in range(n)]
        if not items:
            raise CLIError(f"dataset {getattr(ds, 'name', type(ds).__name__)} is empty")
        tensors = tuple(torch.stack([torch.as_tensor(it[k]) for it in items]) for k in range(len(items[0])))
    out = []
    for t in tensors:
        t = torch.as_tensor(t)
        t = t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64)
        out.append(t[:limit] if limit is not None else t)
    return tuple(out)


def recalibrate_on_training_samples(model, x_train, n: int, batch: int, device) -> None:
    """A recipe's ``recalibrate_bn`` / ``--recalibrate-bn N``: batch-norm statistics re-estimated in eval mode,
    layer by layer (:func:`epdo.nn.recalibrate_batchnorm`), on the first ``n`` training samples ``x_train`` (a list
    of input tensors; deterministic: no shuffling, no augmentation), in batches of ``batch``."""
    from epdo.nn import recalibrate_batchnorm

    n = min(n, len(x_train[0]))
    batches = [tuple(x[i:min(i + batch, n)].to(device) for x in x_train) for i in range(0, n, batch)]
    recalibrate_batchnorm(model, batches)


def dataset_tensors(ds, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float32 (N, C, H, W), labels int64 (N,))`` of an image classification dataset."""
    arrays = dataset_arrays(ds, limit)
    if len(arrays) != 2:
        raise CLIError(f"expected a dataset of (image, label) items, got items of {len(arrays)} tensors")
    return arrays[0], arrays[1]


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
    """Fetches a whole batch from in-memory tensors: ``ds[list_of_indices] -> (*tensors[idx], idx)``."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"IndexedBatches: tensors of one length expected, got {[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.int64)
        return (*(t[idx] for t in self.tensors), idx)


# ----------------------------------------------------------------------------------------------
# evaluation


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", enabled: bool | None = None, unit: str = "it"):
    """A tqdm bar on stderr; ``enabled=None``: only when stderr is a terminal (``--progress`` / ``--no-progress``)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, unit=unit, file=sys.stderr,
                disable=None if enabled is None else not enabled)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    device: torch.device,
    ctx: DistContext | None = None,
    batch_size: int = 500,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool | None = False,
    desc: str = "evaluate",
    task: Task | None = None,
) -> tuple[float, float, int]:
    """``(mean loss, metric, n)`` of ``model`` (switched to eval mode) on ``model(*inputs) ~ target``.

    ``inputs``: one tensor (images) or a sequence of tensors with the samples on the first axis; ``task``:
    the :class:`~epdo.cli.tasks.Task` (default classification: cross-entropy, error in %). ``transform``
    (e.g. a rotation) is applied to the first input of each batch on the CPU, before it moves to ``device``.
    With a distributed ``ctx`` each rank takes the samples ``rank::world_size`` and the sums are
    all-reduced, so the result equals the single-process one (up to float summation order).
    ``progress``: a bar over the samples on stderr (``None``: when stderr is a terminal).
    """
    task = task or get_task("classification")
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    was_training = model.training
    model.eval()
    idx = torch.arange(len(target))
    if ctx is not None and ctx.distributed:
        idx = idx[ctx.rank :: ctx.world_size]
    loss_sum = torch.zeros((), dtype=torch.float64)
    metric_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    bar = progress_bar(total=len(idx), desc=desc, enabled=progress, unit="sample")
    for k in range(0, len(idx), batch_size):
        b = idx[k : k + batch_size]
        xs = [t[b] for t in inputs]
        if transform is not None:
            xs[0] = transform(xs[0])
        xs = [x.to(device, non_blocking=True) for x in xs]
        y = target[b].to(device, non_blocking=True)
        ls, ms, c = task.batch_sums(model(*xs), y)
        loss_sum += ls
        metric_sum += ms
        count += c
        bar.update(len(b))
    bar.close()
    model.train(was_training)
    if ctx is not None:
        loss_total, metric_total, count, n = ctx.all_reduce_sum([loss_sum, metric_sum, count, len(idx)])
    else:
        loss_total, metric_total, n = float(loss_sum), float(metric_sum), len(idx)
    n, count = int(round(n)), int(round(count))
    if n == 0 or count == 0:
        raise CLIError("cannot evaluate on an empty dataset")
    return loss_total / count, task.scale * metric_total / count, n


def rotation(angle_deg: float | torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> epdo.data.rotate_images(x, angle)``: counter-clockwise by ``angle_deg`` degrees (a number, or one
    per image) about the image centre, bilinear, zero fill, in the (x right, y up) frame of docs/design.md."""
    from epdo.data import rotate_images

    rad = angle_deg * (torch.pi / 180.0) if torch.is_tensor(angle_deg) else float(angle_deg) * (torch.pi / 180.0)
    return lambda x: rotate_images(x, rad)


# ----------------------------------------------------------------------------------------------
# image masks


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


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int | None = None) -> str:
    """A plain-text table with a rule under the header. With ``max_width``, the last column is wrapped so that
    no line is longer (continuation lines are indented to that column).

    >>> print(format_table(["a", "bb"], [[1, "x y z"]], max_width=6))
    a  bb
    -  ---
    1  x y
       z
    """
    import textwrap

    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if max_width is not None:
        lead = sum(widths[:-1]) + 2 * (len(widths) - 1)
        widths[-1] = max(min(widths[-1], max_width - lead), len(cells[0][-1]))
    lines = []
    for k, r in enumerate(cells):
        last = textwrap.wrap(r[-1], widths[-1]) or [""] if max_width is not None else [r[-1]]
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1] + [last[0]], widths)).rstrip())
        lines.extend((" " * (sum(widths[:-1]) + 2 * (len(widths) - 1)) + more).rstrip() for more in last[1:])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (call it only once the run has started: a command that fails on its
    arguments leaves no empty folder behind)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create output folder {p}: {e.strerror or e}") from None
    return p


def default_run_dir(kind: str, name: str) -> Path:
    """``runs/<kind>-<name>`` under the working directory: where ``evaluate`` and ``equivariance`` write without
    ``--out`` (never beside a checkpoint, which may be a file shipped in the package or the source tree)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
    return Path("runs") / f"{kind}-{safe}"


def plural(n: int, word: str) -> str:
    """``plural(1, "epoch") == "1 epoch"``, ``plural(2, "epoch") == "2 epochs"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def accepted_keywords(name: str) -> list[str]:
    """The keyword arguments model ``name`` accepts: the parameters of its class's ``__init__`` (the registry's
    builders pass ``**kwargs`` through to it)."""
    import epdo.models as models

    model = models.create(name)
    params = inspect.signature(type(model).__init__).parameters.values()
    return sorted(p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def build_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``epdo.models.create(name, **kwargs)``; a keyword the model does not take is a :class:`CLIError` that
    lists the accepted ones, other bad values are a :class:`CLIError` naming the model and the keywords."""
    import epdo.models as models

    models.get_model_info(name)  # an unknown name: UnknownModelError (with close matches)
    try:
        return models.create(name, **kwargs)
    except (TypeError, ValueError) as e:
        accepted = accepted_keywords(name)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise CLIError(f"--model-kw: model {name!r} accepts no keyword {', '.join(map(repr, unknown))}; "
                           f"accepted: {', '.join(accepted)}") from None
        raise CLIError(f"cannot build model {name!r} with --model-kw {kwargs}: {e}") from None


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^>]*>)?`")


def plain_text(text: str) -> str:
    """reStructuredText markup of docstrings as plain text for ``--help``: ``:func:`~a.b``` -> ``a.b``,
    double backticks -> nothing, ``**bold**`` -> ``bold``.

    >>> plain_text("Writes ``metrics.jsonl`` (:func:`~epdo.pde.show.pde_show`), **two** files")
    'Writes metrics.jsonl (epdo.pde.show.pde_show), two files'
    """
    text = _ROLE.sub(r"\1", text)
    text = re.sub(r"``(.+?)``", r"\1", text, flags=re.S)
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text, flags=re.S)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of the descriptions (module docstrings) and strips their reST markup."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action) -> str:
        return plain_text(super()._expand_help(action))


class RunLog:
    """Result lines of a command: to stdout (flushed, so ``epdo train ... > log`` captures them) and, once
    :meth:`attach` names a file, appended to it as well (e.g. ``OUT/train.log``)."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def attach(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __call__(self, line: str = "") -> None:
        print(line, file=sys.stdout, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
