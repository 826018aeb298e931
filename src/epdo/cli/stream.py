"""``epdo train`` on streaming datasets (no ``.tensors``: image folders, webdataset shards): DataLoader workers
with pinned memory, steps instead of whole in-memory epochs, and the features of large runs.

* **Batches.** ``--batch-size`` is the global batch B per optimizer step. Map-style datasets: the epoch's order is
  a permutation seeded by ``(seed, epoch)``; global batch b is split into ``world x K`` equal parts
  (``--accumulate K``), part ``p`` = elements ``p::(world K)``, rank r's micro-batch k = part ``k world + r``.
  So one process with ``--accumulate world K`` computes exactly the micro-batches (and the gradient, up to
  summation order) of ``world`` ranks with ``--accumulate K``. The last incomplete global batch is dropped.
  B must be divisible by ``world x K`` (a clear error otherwise). Shards (``IterableDataset``): each rank reads
  its shards (``ImageShards.set_rank``) in micro-batches of ``B / (world K)``.
* **Precision and layout.** ``--amp bf16|fp16``: ``torch.autocast`` on the device; fp16 with a
  ``torch.amp.GradScaler`` (its state is checkpointed). ``--channels-last``: model and inputs in
  ``torch.channels_last``.
* **Schedule.** Per step: linear warmup over ``--warmup-epochs`` (fractional allowed), then the recipe's
  schedule (cosine: over the remaining steps; others: per epoch). ``--label-smoothing`` in the cross-entropy.
* **Batch norm.** ``--sync-bn`` makes epdo's ``FieldBatchNorm`` pool its statistics over the ranks
  (:func:`epdo.nn.convert_sync_batchnorm`, any backend) and converts ``torch.nn.BatchNorm*`` to ``SyncBatchNorm``
  (CUDA only, as torch's): on the CPU a model with torch batch norms is refused with a message.
* **Checkpoints.** ``last.pt`` every ``--checkpoint-every`` steps and at the end of each epoch (atomic, verified,
  rank 0 only), ``best.pt`` by validation error. They hold the position inside the epoch (batches done), the
  optimizer, scheduler, GradScaler and RNG states, so ``--resume`` continues mid-epoch and, on the CPU, gives
  the same weights bit for bit as an uninterrupted run (tested, for folders and for shards: ``ImageShards``
  skips the batches already done without decoding them, each DataLoader worker its own share).
* **Metrics.** ``steps.jsonl`` every ``--log-every`` steps (loss, lr, images/s, skipped images) and
  ``metrics.jsonl`` per epoch (train/valid loss and error, images/s, epoch time, skipped images); images/s count
  the images of all ranks.
* **Bad images** are skipped by the dataset (a warning naming the file) and counted per epoch.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

import epdo.models as models
from epdo.data.imagefolder import collate_skip
from epdo.models.registry import TrainDefaults, _epdo_version, load_state, read_checkpoint, save_checkpoint

from .common import CLIError, DistContext, append_jsonl, dataset_arrays, format_count, get_rng_state, machine_info, \
    out_dir, plural, recalibrate_on_training_samples, set_rng_state, write_json, write_jsonl

__all__ = ["add_arguments", "train", "STREAM_OPTIONS", "FAIL_AFTER_STEP_ENV", "global_batch_parts"]

#: Set to a step number to make training raise SimulatedFailure right after that step's checkpoint (tests).
FAIL_AFTER_STEP_ENV = "EPDO_FAIL_AFTER_STEP"
#: the options of this path (refused for in-memory datasets, which run the original loop)
STREAM_OPTIONS = ("amp", "channels_last", "accumulate", "sync_bn", "warmup_epochs", "label_smoothing",
                  "checkpoint_every", "log_every")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming datasets (imagefolder, imagenet, imagenet100)")
    g.add_argument("--amp", choices=("bf16", "fp16"), help="mixed precision (fp16 with a GradScaler)")
    g.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    g.add_argument("--accumulate", type=int, help="gradient accumulation: micro-batches per optimizer step (default 1)")
    g.add_argument("--sync-bn", action="store_true", default=None, help="batch statistics over all ranks: FieldBatchNorm on any backend, torch batch norms on CUDA")
    g.add_argument("--warmup-epochs", type=float, help="linear learning-rate warmup, in epochs (default 0)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the cross-entropy (default 0)")
    g.add_argument("--checkpoint-every", type=int, help="write last.pt every N optimizer steps (default: per epoch)")
    g.add_argument("--log-every", type=int, help="a steps.jsonl line every N steps (default 10)")


def stream_settings(args: argparse.Namespace, ckpt: dict | None) -> dict[str, Any]:
    """The streaming options of the run (checkpoint's when resuming; a different value on the command line is an
    error, as for the recipe)."""
    given = {k: getattr(args, k, None) for k in STREAM_OPTIONS}
    defaults = dict(amp=None, channels_last=False, accumulate=1, sync_bn=False, warmup_epochs=0.0,
                    label_smoothing=0.0, checkpoint_every=None, log_every=10)
    if ckpt is not None and "stream" in ckpt.get("config", {}):
        old = dict(ckpt["config"]["stream"])
        for k, v in given.items():
            if v is not None and v != old.get(k) and k not in ("checkpoint_every", "log_every"):
                raise CLIError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {old.get(k)!r}; resume "
                               "with the same settings or use another --out")
        return {**defaults, **old, **{k: v for k, v in given.items() if v is not None and k in ("checkpoint_every",
                                                                                                 "log_every")}}
    s = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if s["accumulate"] < 1:
        raise CLIError(f"--accumulate must be a positive integer, got {s['accumulate']}")
    if not 0.0 <= s["label_smoothing"] < 1.0:
        raise CLIError(f"--label-smoothing must be in [0, 1), got {s['label_smoothing']}")
    if s["warmup_epochs"] < 0:
        raise CLIError(f"--warmup-epochs must be >= 0, got {s['warmup_epochs']}")
    for k in ("checkpoint_every", "log_every"):
        if s[k] is not None and s[k] < 1:
            raise CLIError(f"--{k.replace('_', '-')} must be a positive integer, got {s[k]}")
    return s


def global_batch_parts(n: int, batch: int, parts: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[list[int]]]:
    """The epoch's global batches, each as ``parts`` index lists (part p = elements ``p::parts``); the last
    incomplete batch is dropped."""
    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
             if shuffle else torch.arange(n)).tolist()
    return [[order[b * batch + p: (b + 1) * batch: parts] for p in range(parts)] for b in range(n // batch)]


class _Batches(torch.utils.data.Sampler):
    """This rank's micro-batches of an epoch, from global batch ``start`` on (resume)."""

    def __init__(self, n: int, batch: int, world: int, rank: int, accumulate: int, seed: int, epoch: int, start: int):
        self.plan = global_batch_parts(n, batch, world * accumulate, seed, epoch)
        self.rank, self.world, self.accumulate, self.start = rank, world, accumulate, start

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.plan[self.start:]:
            for k in range(self.accumulate):
                yield b[k * self.world + self.rank]

    def __len__(self) -> int:
        return (len(self.plan) - self.start) * self.accumulate


def _loader(ds, cfg, s, ctx: DistContext, epoch: int, start: int, workers: int, pin: bool) -> tuple[DataLoader, int]:
    """``(loader, steps in this epoch from start)``."""
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    B, K, W = cfg["train"]["batch_size"], s["accumulate"], ctx.world_size
    common = dict(num_workers=workers, pin_memory=pin, collate_fn=collate_skip,
                  persistent_workers=False, prefetch_factor=2 if workers else None)
    if isinstance(ds, IterableDataset):
        if hasattr(ds, "set_rank"):
            ds.set_rank(ctx.rank, W)
        if start and not hasattr(ds, "set_start"):
            raise CLIError(f"--resume inside an epoch needs a dataset that can skip its first batches; "
                           f"{type(ds).__name__} cannot: resume at an epoch boundary")
        if hasattr(ds, "set_start"):  # the rank's first start * K micro-batches of B / (W K) are skipped
            ds.set_start(start * K, B // (W * K))
        steps = len(ds) // (B // W)
        return DataLoader(ds, batch_size=B // (W * K), drop_last=True, **common), steps
    n = len(ds) if cfg.get("limit_train") is None else min(len(ds), cfg["limit_train"])
    sampler = _Batches(n, B, W, ctx.rank, K, cfg["seed"], epoch, start)
    return DataLoader(ds, batch_sampler=sampler, **common), len(sampler.plan)


def _lr_factor(recipe: TrainDefaults, step: float, steps_per_epoch: int, epochs: int, warmup_epochs: float) -> float:
    warm = warmup_epochs * steps_per_epoch
    f = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    total = epochs * steps_per_epoch
    if recipe.schedule == "cosine":
        t = min(max(step - warm, 0.0) / max(total - warm, 1.0), 1.0)
        return f * 0.5 * (1.0 + math.cos(math.pi * t))
    return f * recipe.lr_factor(int(step // steps_per_epoch), epochs)


def _check_bn(model: nn.Module, sync: bool, ctx: DistContext) -> nn.Module:
    if not sync:
        return model
    from epdo.nn import convert_sync_batchnorm

    model = convert_sync_batchnorm(model)  # FieldBatchNorm: all-reduced statistics on any backend
    torch_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if torch_bn and ctx.device.type != "cuda":
        raise CLIError("--sync-bn: this model has torch.nn batch norms, and torch's SyncBatchNorm runs on GPUs "
                       "only (epdo's FieldBatchNorm synchronises on CPU too); train on CUDA or without --sync-bn")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if torch_bn else model


@torch.no_grad()
def _evaluate(model, ds, cfg, ctx: DistContext, s, workers: int, batch: int, task, limit) -> tuple[float, float, int]:
    """Loss, error (%) and count on ``ds``; each rank the samples ``rank::world`` (map-style) or its shards."""
    model.eval()
    pin = ctx.device.type == "cuda"
    if isinstance(ds, IterableDataset):
        if hasattr(ds, "set_rank"):
            ds.set_rank(ctx.rank, ctx.world_size)
        dl = DataLoader(ds, batch_size=batch, num_workers=workers, pin_memory=pin, collate_fn=collate_skip)
    else:
        n = len(ds) if limit is None else min(limit, len(ds))
        idx = list(range(n))[ctx.rank:: ctx.world_size]
        dl = DataLoader(ds, batch_sampler=[idx[k: k + batch] for k in range(0, len(idx), batch)],
                        num_workers=workers, pin_memory=pin, collate_fn=collate_skip)
    loss_sum = torch.zeros((), dtype=torch.float64)
    wrong = torch.zeros((), dtype=torch.float64)
    count = 0
    for x, y, _ in dl:
        if len(y) == 0:
            continue
        x = _to(x, ctx.device, s)
        y = y.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, s["amp"]):
            out = model(x)
        ls, ms, c = task.batch_sums(out.float(), y)
        loss_sum += ls
        wrong += ms
        count += c
    loss_total, wrong_total, count = ctx.all_reduce_sum([loss_sum, wrong, count])
    model.train()
    count = int(round(count))
    if count == 0:
        raise CLIError("cannot evaluate on an empty dataset")
    return loss_total / count, task.scale * wrong_total / count, count


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _to(x: torch.Tensor, device: torch.device, s) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if s["channels_last"] else x


class SimulatedStepFailure(RuntimeError):
    """Raised after step ``$EPDO_FAIL_AFTER_STEP`` (resume tests)."""


def train(args, ctx: DistContext, cfg: dict, ckpt: dict | None, model: nn.Module, task, train_ds, load_split_fn,
          say, t_session: float) -> int:
    """The streaming training run (called by ``epdo.cli.train`` for datasets without ``.tensors``)."""
    out = Path(args.out)
    last_path, best_path = out / "last.pt", out / "best.pt"
    metrics_path, steps_path = out / "metrics.jsonl", out / "steps.jsonl"
    s = cfg["stream"]
    recipe = TrainDefaults(**{**cfg["train"], "milestones": tuple(cfg["train"]["milestones"])})
    epochs = int(cfg["epochs"])
    B, K, W = recipe.batch_size, s["accumulate"], ctx.world_size
    if B % (W * K):
        raise CLIError(f"--batch-size {B} is not divisible by {W} process{'es' if W > 1 else ''} x --accumulate {K} "
                       f"= {W * K}: each optimizer step splits the global batch into {W * K} equal micro-batches")
    if task.name != "classification":
        raise CLIError(f"streaming datasets are classification datasets here, got a {task.name} task")
    valid_ds = load_split_fn("valid")
    recal_x = None
    if recipe.recalibrate_bn:
        if isinstance(train_ds, IterableDataset):
            raise CLIError(f"--recalibrate-bn / the recipe's recalibrate_bn needs a map-style training set; "
                           f"{cfg['data']} streams shards: pass --recalibrate-bn 0")
        recal_x = list(dataset_arrays(train_ds, recipe.recalibrate_bn)[:-1])
    n_params = models.count_parameters(model)
    model = _check_bn(model, bool(s["sync_bn"]), ctx)
    model.to(ctx.device)
    if s["channels_last"]:
        model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None)
    from epdo.optim import build_optimizer

    optimizer = build_optimizer(model, recipe)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=s["amp"] == "fp16")
    workers = int(args.num_workers)
    pin = ctx.device.type == "cuda"
    _, steps_per_epoch = _loader(train_ds, cfg, s, ctx, 0, 0, 0, False)
    if steps_per_epoch < 1:
        raise CLIError(f"the training set ({len(train_ds)} images) is smaller than one global batch ({B})")
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    if ctx.is_main:
        out_dir(out)
        say.attach(out / "train.log")
    ctx.barrier()
    history: list[dict] = []
    epoch, start, step = 0, 0, 0
    best = {"epoch": None, "valid_error": float("inf")}
    train_time = 0.0
    if ckpt is not None:
        load_state(model, ckpt, last_path, expected_model=cfg["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        epoch, start, step = int(ckpt["epoch"]), int(ckpt["batch_in_epoch"]), int(ckpt["step"])
        history, best, train_time = [dict(h) for h in ckpt["history"]], dict(ckpt["best"]), float(ckpt["train_time_s"])
        if ctx.is_main:
            write_jsonl(metrics_path, history)
        say(f"resuming {last_path} at epoch {epoch + 1}, step {step} ({start} of {steps_per_epoch} batches done)")
    elif ctx.is_main:
        write_jsonl(metrics_path, [])
        write_jsonl(steps_path, [])
    say(f"{cfg['model']}: {format_count(n_params)} parameters; {getattr(train_ds, 'description', cfg['data'])}; "
        f"{recipe.optimizer} lr {recipe.lr:g}, {recipe.schedule}, warmup {s['warmup_epochs']:g} epochs, "
        f"{plural(epochs, 'epoch')} of {steps_per_epoch} steps, batch {B} = {W} x {K} x {B // (W * K)}"
        f"{', amp ' + s['amp'] if s['amp'] else ''}{', channels_last' if s['channels_last'] else ''}; "
        f"{ctx.device} x{W}")
    fail_after = os.environ.get(FAIL_AFTER_STEP_ENV)

    def checkpoint(path: Path, batch_in_epoch: int, ep: int) -> None:
        if ctx.is_main:
            save_checkpoint(path, model, config=cfg, epoch=ep, batch_in_epoch=batch_in_epoch, step=step,
                            history=history, best=best, train_time_s=train_time, optimizer=optimizer.state_dict(),
                            scaler=scaler.state_dict(), rng=get_rng_state())
        ctx.barrier()

    while epoch < epochs:
        t0 = time.perf_counter()
        net.train()
        loader, _ = _loader(train_ds, cfg, s, ctx, epoch, start, workers, pin)
        sums = torch.zeros(3, dtype=torch.float64)  # loss sum, wrong, count (this rank)
        skipped, micro, batch_in_epoch = 0, 0, start
        t_log, img_log = time.perf_counter(), 0
        optimizer.zero_grad(set_to_none=True)
        for x, y, n_bad in loader:
            ctx.heartbeat(f"epoch {epoch + 1}, step {step + 1}")
            skipped += int(n_bad)
            if len(y):
                x, y = _to(x, ctx.device, s), y.to(ctx.device, non_blocking=True)
                last_micro = micro == K - 1
                sync = net.no_sync() if ctx.distributed and not last_micro else _null()
                with sync:
                    with _autocast(ctx.device, s["amp"]):
                        output = net(x)
                        loss = nn.functional.cross_entropy(output.float(), y, label_smoothing=s["label_smoothing"])
                    if not torch.isfinite(loss):
                        raise CLIError(f"training diverged: non-finite loss at epoch {epoch + 1}, step {step + 1}; "
                                       "try a lower --lr")
                    scaler.scale(loss / K).backward()
                ls, ms, c = task.batch_sums(output.detach().float(), y)
                sums += torch.stack([ls, ms, torch.tensor(float(c), dtype=torch.float64)])
                img_log += c
            micro += 1
            if micro < K:
                continue
            micro = 0
            f = _lr_factor(recipe, step, steps_per_epoch, epochs, s["warmup_epochs"])
            for g, lr0 in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr0 * f
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batch_in_epoch += 1
            if step % s["log_every"] == 0:
                dt = time.perf_counter() - t_log
                tot_img, loss_sum, cnt = ctx.all_reduce_sum([img_log, sums[0], sums[2]])
                if ctx.is_main:
                    append_jsonl(steps_path, {"step": step, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                                              "train_loss": loss_sum / max(cnt, 1), "images_per_s": tot_img / dt,
                                              "skipped_images": skipped})
                t_log, img_log = time.perf_counter(), 0
            if s["checkpoint_every"] and step % s["checkpoint_every"] == 0 and batch_in_epoch < steps_per_epoch:
                train_time += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint(last_path, batch_in_epoch, epoch)
            if fail_after is not None and step == int(fail_after):
                raise SimulatedStepFailure(f"{FAIL_AFTER_STEP_ENV}={fail_after}: simulated failure after step {step}")
        start = 0
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        loss_sum, wrong, cnt, bad = ctx.all_reduce_sum([sums[0], sums[1], sums[2], skipped])
        ctx.broadcast_buffers(model)
        if recipe.recalibrate_bn:  # the same first samples on every rank: identical statistics
            ctx.heartbeat(f"epoch {epoch + 1}, batch-norm recalibration")
            recalibrate_on_training_samples(model, recal_x, recipe.recalibrate_bn, args.eval_batch_size, ctx.device)
        ctx.heartbeat(f"epoch {epoch + 1}, validation")
        va_loss, va_err, _ = _evaluate(model, valid_ds, cfg, ctx, s, workers, args.eval_batch_size, task,
                                       cfg.get("limit_eval"))
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": loss_sum / max(cnt, 1), "train_acc": 100.0 * (1 - wrong / max(cnt, 1)),
               "valid_loss": va_loss, "valid_error": va_err, "epoch_time_s": epoch_time,
               "images_per_s": cnt / max(epoch_time, 1e-9), "skipped_images": int(bad)}
        history.append(row)
        improved = va_err < best["valid_error"]
        if improved:
            best = {"epoch": epoch + 1, "valid_error": va_err}
        epoch += 1
        if ctx.is_main:
            append_jsonl(metrics_path, row)
        checkpoint(last_path, 0, epoch)
        if improved and ctx.is_main:
            save_checkpoint(best_path, model, config=cfg, epoch=epoch, batch_in_epoch=0, step=step, history=history,
                            best=best, train_time_s=train_time, optimizer=optimizer.state_dict(),
                            scaler=scaler.state_dict(), rng=get_rng_state())
        say(f"epoch {epoch}/{epochs}  step {step}  lr {row['lr']:.3g}  train loss {row['train_loss']:.4f} acc "
            f"{row['train_acc']:.2f}%  valid loss {va_loss:.4f} error {va_err:.2f}%  {row['images_per_s']:.1f} img/s"
            f"{f'  ({int(bad)} unreadable images skipped)' if bad else ''}{'  *best*' if improved else ''}")
        ctx.barrier()

    ctx.heartbeat("test")
    test_ds = load_split_fn("test")
    best_ckpt = read_checkpoint(best_path)
    load_state(model, best_ckpt, best_path, expected_model=cfg["model"])
    te_loss, te_err, te_n = _evaluate(model, test_ds, cfg, ctx, s, workers, args.eval_batch_size, task,
                                      cfg.get("limit_eval"))
    say(f"test error {te_err:.2f}% (best epoch {best['epoch']}, valid error {best['valid_error']:.2f}%, n={te_n:,})")
    if ctx.is_main:
        import shlex

        argv = getattr(args, "argv", None)
        write_json(out / "results.json", {
            "command": "epdo " + shlex.join(argv) if argv is not None else None, "model": cfg["model"],
            "model_kwargs": cfg["model_kwargs"], "params": n_params, "paper_params": models.get_model_info(
                cfg["model"]).paper_params, "dataset": cfg["data"], "setting": cfg.get("setting"), "seed": cfg["seed"],
            "epochs": epochs, "steps": step, "train": cfg["train"], "stream": s, "best_epoch": best["epoch"],
            "best_valid_error": best["valid_error"], "test_error": te_err, "test_loss": te_loss, "n_test": te_n,
            "final": history[-1] if history else None, "wall_time_s": train_time,
            "session_wall_time_s": time.perf_counter() - t_session, "machine": machine_info(ctx),
            "epdo_version": _epdo_version(), "world_size": W,
        })
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
