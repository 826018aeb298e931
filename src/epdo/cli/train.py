"""``epdo train``: seeded, resumable training with the registry's per-model recipe.

Files in ``--out`` (created once the model and data are ready): ``metrics.jsonl`` (one line per epoch),
``train.log`` (the lines printed to stdout), ``last.pt`` and ``best.pt`` (lowest validation error; written
atomically), ``results.json`` and ``curves.png`` at the end. Per-epoch metrics go to stdout, progress bars
to stderr. Ctrl-C prints the command that resumes the run from ``last.pt``.
Under ``torchrun`` the model is wrapped in DDP (NCCL on GPUs, gloo on CPU), batches come from a
``DistributedSampler``, only rank 0 writes files or prints, and a rank that waits longer than
``--dist-timeout`` seconds for its peers stops with a message naming the rank that stalled.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import epdo.models as models
from epdo.data import DATASETS, dataset_spec
from epdo.models.registry import TrainDefaults, _epdo_version, load_state, read_checkpoint, save_checkpoint
from epdo.optim import OPTIMIZERS, SCHEDULES, build_optimizer

from . import stream
from .tasks import get_task
from .common import (
    DEFAULT_DIST_TIMEOUT_S,
    CLIError,
    DistContext,
    IndexedBatches,
    RunLog,
    append_jsonl,
    build_model,
    dataset_label,
    dataset_arrays,
    evaluate,
    format_count,
    is_collective_error,
    get_rng_state,
    load_split,
    recalibrate_on_training_samples,
    machine_info,
    new_figure,
    out_dir,
    parse_model_kwargs,
    plural,
    progress_bar,
    rotation,
    save_figure,
    seed_everything,
    set_rng_state,
    setup_distributed,
    write_json,
    write_jsonl,
)

__all__ = ["add_arguments", "run", "build_optimizer", "SimulatedFailure"]

logger = logging.getLogger("epdo.cli.train")

#: Set to an epoch number to make training raise :class:`SimulatedFailure` right after that
#: epoch's files are written (used by the resume tests to simulate a crash).
FAIL_AFTER_EPOCH_ENV = "EPDO_FAIL_AFTER_EPOCH"

# options whose value must not change when resuming (None: not given on the command line)
_RECIPE_OPTIONS = ("optimizer", "lr", "weight_decay", "schedule", "batch_size", "augment_rotation", "recalibrate_bn")
_RUN_OPTIONS = ("model", "data", "setting", "data_seed", "seed", "limit_train", "limit_eval")


class SimulatedFailure(RuntimeError):
    """Raised after epoch ``$EPDO_FAIL_AFTER_EPOCH`` (tests of ``--resume``)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name (see `epdo models`)")
    p.add_argument("--model-kw", action="append", metavar="KEY=VALUE", help="model keyword argument (repeatable; Python literal)")
    p.add_argument("--data", choices=DATASETS, help="dataset (default rotmnist-replica)")
    p.add_argument("--setting", help="the dataset's setting, for datasets that have one (e.g. spherical-mnist N/R)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, results.json)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the model's paper recipe)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over processes (default: recipe)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: recipe)")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help="optimizer (default: recipe)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: recipe)")
    p.add_argument("--schedule", choices=SCHEDULES, help="lr schedule (default: recipe)")
    p.add_argument("--augment-rotation", action=argparse.BooleanOptionalAction, default=None, help="random rotations of training images")
    p.add_argument("--recalibrate-bn", type=int, metavar="N",
                   help="before each validation, re-estimate the batch-norm statistics layer by layer in eval mode "
                        "on the first N training samples (epdo.nn.recalibrate_batchnorm; 0: off; default: recipe)")
    p.add_argument("--seed", type=int, help="seed of initialisation, shuffling, augmentation, dropout (default 0)")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")
    p.add_argument("--data-seed", type=int, help="seed of the dataset (replica generation, validation split; default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (starts afresh if there is none)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--limit-train", type=int, help="use only the first N training images (tests)")
    p.add_argument("--limit-eval", type=int, help="use only the first N validation and test images (tests)")
    p.add_argument("--eval-batch-size", type=int, default=500, help="batch size of evaluation (default 500)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars on stderr (default: when stderr is a terminal)")
    p.add_argument("--dist-timeout", type=float, default=DEFAULT_DIST_TIMEOUT_S, metavar="SECONDS",
                   help=f"under torchrun: how long a process waits for its peers before it stops and names the rank "
                        f"that stalled (default {DEFAULT_DIST_TIMEOUT_S:g})")
    stream.add_arguments(p)


# ----------------------------------------------------------------------------------------------
# configuration


def _resolve_config(args: argparse.Namespace, ckpt: dict | None, last_path: Path) -> dict[str, Any]:
    """Run configuration: command line > checkpoint (when resuming) > model recipe."""
    given = {k: getattr(args, k) for k in _RUN_OPTIONS + _RECIPE_OPTIONS}
    kw = parse_model_kwargs(args.model_kw) if args.model_kw is not None else None
    if ckpt is not None:
        cfg = dict(ckpt["config"])
        recipe = dict(cfg["train"])
        for k, v in given.items():
            old = recipe[k] if k in _RECIPE_OPTIONS else cfg.get(k)
            if v is not None and v != old:
                raise CLIError(f"{last_path}: --{k.replace('_', '-')} {v} differs from the checkpoint's {old!r}; "
                               "resume with the same settings or use another --out")
        if kw is not None and kw != cfg["model_kwargs"]:
            raise CLIError(f"{last_path}: --model-kw {kw} differs from the checkpoint's {cfg['model_kwargs']}")
        if args.epochs is not None:
            cfg["epochs"] = args.epochs
        return cfg
    if args.model is None:
        raise CLIError("--model is required (unless resuming a run with --resume)")
    info = models.get_model_info(args.model)
    try:
        recipe = info.train.replace(
            optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
            batch_size=args.batch_size, augment_rotation=args.augment_rotation, epochs=args.epochs,
            recalibrate_bn=args.recalibrate_bn,
        )
    except ValueError as e:
        raise CLIError(str(e)) from None
    return {
        "model": args.model,
        "model_kwargs": kw or {},
        "data": args.data or "rotmnist-replica",
        "setting": args.setting,
        "data_seed": 0 if args.data_seed is None else args.data_seed,
        "seed": 0 if args.seed is None else args.seed,
        "limit_train": args.limit_train,
        "limit_eval": args.limit_eval,
        "epochs": recipe.epochs,
        "train": recipe.as_dict(),
    }


def data_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The dataset keyword options of a run configuration (``--setting``)."""
    return {} if cfg.get("setting") is None else {"setting": cfg["setting"]}


def _check_task(data: str, info) -> Any:
    """The dataset's :class:`~epdo.cli.tasks.Task`, after checking that the model is made for it."""
    try:
        spec = dataset_spec(data)
    except ValueError as e:
        raise CLIError(str(e)) from None
    model_task = getattr(info, "task", "classification")
    if model_task != spec.task:
        raise CLIError(f"model {info.name} is a {model_task} model, dataset {data} is a {spec.task} dataset")
    return get_task(spec.task)


def _augment_angles(seed: int, epoch: int, n: int) -> torch.Tensor:
    """One angle per training sample for this epoch: a function of (seed, epoch, sample index) only,
    so single-process and DDP runs, and resumed runs, see the same rotations."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919)
    return torch.rand(n, generator=g, dtype=torch.float64) * 360.0


# ----------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace) -> int:
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    ctx = setup_distributed(args.device, args.dist_timeout)
    epdo_log = logging.getLogger("epdo")
    prev_level = epdo_log.level
    if not ctx.is_main:  # only rank 0 reports progress
        epdo_log.setLevel(logging.WARNING)
    try:
        if ctx.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        # CPU kernels are deterministic; on GPUs some (e.g. max-pool backward) only warn
        torch.use_deterministic_algorithms(True, warn_only=ctx.device.type != "cpu")
        try:
            return _train(args, ctx)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_resume_hint(args)) from None
        except RuntimeError as e:
            if ctx.distributed and is_collective_error(e):
                raise CLIError(ctx.stall_report(e)) from e
            raise
    finally:
        torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        epdo_log.setLevel(prev_level)
        ctx.close()


def _resume_hint(args: argparse.Namespace) -> str:
    """What Ctrl-C prints: where the run stands and the exact command that continues it."""
    last = Path(args.out) / "last.pt"
    if not last.exists():
        return "no epoch finished yet, nothing to resume"
    argv = list(getattr(args, "argv", None) or ["train", "--out", str(args.out)])
    if "--resume" not in argv:
        argv.append("--resume")
    return f"{last} holds the last finished epoch; resume with: epdo {shlex.join(argv)}"


def _train(args: argparse.Namespace, ctx: DistContext) -> int:
    t_session = time.perf_counter()
    out = Path(args.out)
    last_path, best_path, metrics_path = out / "last.pt", out / "best.pt", out / "metrics.jsonl"
    say = RunLog() if ctx.is_main else (lambda line="": None)
    ckpt = None
    if args.resume and last_path.exists():
        ckpt = read_checkpoint(last_path)
        if "config" not in ckpt or "epoch" not in ckpt:
            raise models.CheckpointError(f"{last_path}: not a training checkpoint of `epdo train` (no config/epoch)")
    elif args.resume:
        logger.info("--resume: no %s yet, starting a new run", last_path)
    elif last_path.exists():
        raise CLIError(f"{out} already holds a run ({last_path.name}); pass --resume to continue it or choose another --out")
    cfg = _resolve_config(args, ckpt, last_path)
    recipe = TrainDefaults(**{**cfg["train"], "milestones": tuple(cfg["train"]["milestones"])})
    epochs = int(cfg["epochs"])
    if epochs < 1:
        raise CLIError(f"--epochs must be positive, got {epochs}")
    if recipe.batch_size % ctx.world_size:
        raise CLIError(f"--batch-size {recipe.batch_size} is not divisible by the {ctx.world_size} processes")
    info = models.get_model_info(cfg["model"])

    # model first (cheap to check), then data (train/valid for model selection; test only at the end, with the
    # best checkpoint); everything seeded (the data sets draw from their own seeded generators)
    seed_everything(cfg["seed"])
    model = build_model(cfg["model"], cfg["model_kwargs"])
    task = _check_task(cfg["data"], info)
    data_args = (args.data_dir, args.cache_dir, cfg["data_seed"])
    data_kw = data_options(cfg)
    train_ds = load_split(cfg["data"], "train", *data_args, **data_kw)
    if getattr(train_ds, "tensors", None) is None:  # a streaming dataset (image folders, shards): epdo.cli.stream
        cfg["stream"] = stream.stream_settings(args, ckpt)
        return stream.train(args, ctx, cfg, ckpt, model, task, train_ds,
                            lambda split: load_split(cfg["data"], split, *data_args, **data_kw), say, t_session)
    given = [k for k in stream.STREAM_OPTIONS if getattr(args, k, None) is not None]
    if given:
        raise CLIError(f"--{given[0].replace('_', '-')} is implemented for streaming datasets (imagefolder, imagenet, "
                       f"imagenet100), not for the in-memory dataset {cfg['data']}")
    valid_ds = load_split(cfg["data"], "valid", *data_args, **data_kw)
    *x_train, y_train = dataset_arrays(train_ds, cfg["limit_train"])
    *x_valid, y_valid = dataset_arrays(valid_ds, cfg["limit_eval"])
    if recipe.augment_rotation and x_train[0].dim() != 4:
        raise CLIError(f"rotation augmentation needs image inputs (B, C, H, W); {cfg['data']} gives {tuple(x_train[0].shape)}")
    n_params = models.count_parameters(model)
    model.to(ctx.device)
    net: nn.Module = model
    if ctx.distributed:
        from epdo.nn import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)  # FieldBatchNorm: statistics over all ranks (any backend)
        if ctx.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index])
        else:
            net = nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: recipe.lr_factor(e, epochs))

    # the run starts: only now the output folder is created (a failure above leaves nothing behind)
    if ctx.is_main:
        out_dir(out)
        say.attach(out / "train.log")
    ctx.barrier()
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, {"epoch": None, f"valid_{task.metric}": float("inf")}
    train_time = 0.0
    resumed_at: list[int] = []
    if ckpt is not None:
        load_state(model, ckpt, last_path, expected_model=cfg["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        history = [dict(h) for h in ckpt["history"]]
        best = dict(ckpt["best"])
        train_time = float(ckpt["train_time_s"])
        resumed_at = [int(e) for e in ckpt.get("resumed_at", [])] + [start_epoch]
        if ctx.is_main:
            write_jsonl(metrics_path, history)  # drop lines of epochs after the checkpoint
        say(f"resuming {last_path} at epoch {start_epoch}/{epochs}")
    elif ctx.is_main:
        write_jsonl(metrics_path, [])

    say(
        f"{cfg['model']}: {format_count(n_params)} parameters (paper: {format_count(info.paper_params)}); "
        f"{dataset_label(cfg['data'], train_ds)['label']} ({len(y_train):,} train, {len(y_valid):,} valid); "
        f"{recipe.optimizer} lr {recipe.lr:g}, {recipe.schedule} schedule, {plural(epochs, 'epoch')}, "
        f"batch {recipe.batch_size}{', rotation augmentation' if recipe.augment_rotation else ''}; "
        f"{ctx.device} x{ctx.world_size}"
    )

    sampler = torch.utils.data.DistributedSampler(
        IndexedBatches(*x_train, y_train), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg["seed"], drop_last=False
    )
    loader = torch.utils.data.DataLoader(
        IndexedBatches(*x_train, y_train),
        sampler=torch.utils.data.BatchSampler(sampler, recipe.batch_size // ctx.world_size, drop_last=False),
        batch_size=None,
        num_workers=args.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    fail_after = os.environ.get(FAIL_AFTER_EPOCH_ENV)
    # progress bars (stderr) on rank 0 only; by default only when stderr is a terminal
    bars = False if not ctx.is_main else args.progress

    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        net.train()
        sampler.set_epoch(epoch)
        angles = _augment_angles(cfg["seed"], epoch, len(y_train)) if recipe.augment_rotation else None
        loss_sum = torch.zeros((), dtype=torch.float64)
        metric_sum = torch.zeros((), dtype=torch.float64)
        count = 0
        bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", enabled=bars, unit="batch")
        for step, (*xs, y, idx) in enumerate(bar):
            ctx.heartbeat(f"epoch {epoch + 1}, step {step + 1}")
            if angles is not None:
                xs[0] = rotation(angles[idx])(xs[0])
            xs = [x.to(ctx.device, non_blocking=True) for x in xs]
            y = y.to(ctx.device, non_blocking=True)
            output = net(*xs)
            loss = task.loss(output, y)
            if not torch.isfinite(loss):
                raise CLIError(f"training diverged: non-finite loss at epoch {epoch + 1}, step {step + 1}; try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ls, ms, c = task.batch_sums(output.detach(), y)
            loss_sum += ls
            metric_sum += ms
            count += c
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / count:.4f}", lr=f"{lr:.3g}")
        bar.close()
        scheduler.step()
        ctx.heartbeat(f"epoch {epoch + 1}, validation")
        tr_loss, tr_metric, tr_count = ctx.all_reduce_sum([loss_sum, metric_sum, count])
        ctx.broadcast_buffers(model)  # evaluate every rank with rank 0's batch-norm statistics
        if recipe.recalibrate_bn:  # the same samples on every rank: identical statistics
            ctx.heartbeat(f"epoch {epoch + 1}, batch-norm recalibration")
            recalibrate_on_training_samples(model, x_train, recipe.recalibrate_bn, args.eval_batch_size, ctx.device)
        va_loss, va_err, _ = evaluate(model, x_valid, y_valid, ctx.device, ctx, args.eval_batch_size,
                                      progress=bars, desc=f"validate {epoch + 1}/{epochs}", task=task)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": tr_loss / tr_count}
        if task.name == "classification":
            row["train_acc"] = 100.0 * (1.0 - tr_metric / tr_count)
        else:
            row[f"train_{task.metric}"] = task.scale * tr_metric / tr_count
        row.update({"valid_loss": va_loss, f"valid_{task.metric}": va_err, "epoch_time_s": epoch_time})
        history.append(row)
        improved = va_err < best[f"valid_{task.metric}"]
        if improved:
            best = {"epoch": epoch + 1, f"valid_{task.metric}": va_err}
        if ctx.is_main:
            state = dict(
                config=cfg, epoch=epoch + 1, metrics=row, history=history, best=best, train_time_s=train_time,
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=get_rng_state(), resumed_at=resumed_at,
            )
            if improved:
                save_checkpoint(best_path, model, **state)
            save_checkpoint(last_path, model, **state)
            append_jsonl(metrics_path, row)
        train_part = (f"acc {row['train_acc']:.2f}%" if task.name == "classification"
                      else f"{task.metric} {task.format(row[f'train_{task.metric}'])}")
        say(
            f"epoch {epoch + 1}/{epochs}  lr {lr:.3g}  train loss {row['train_loss']:.4f} {train_part}  "
            f"valid loss {va_loss:.4f} {task.metric} {task.format(va_err)}{'  *best*' if improved else ''}  "
            f"({epoch_time:.1f}s)"
        )
        ctx.heartbeat(f"epoch {epoch + 1}, end")
        ctx.barrier()
        if fail_after is not None and epoch + 1 == int(fail_after):
            raise SimulatedFailure(f"{FAIL_AFTER_EPOCH_ENV}={fail_after}: simulated failure after epoch {epoch + 1}")

    # test error of the best checkpoint (by validation error)
    ctx.heartbeat("test")
    ctx.barrier()
    test_ds = load_split(cfg["data"], "test", *data_args, **data_kw)
    *x_test, y_test = dataset_arrays(test_ds, cfg["limit_eval"])
    best_ckpt = read_checkpoint(best_path)
    load_state(model, best_ckpt, best_path, expected_model=cfg["model"])
    te_loss, te_err, te_n = evaluate(model, x_test, y_test, ctx.device, ctx, args.eval_batch_size, progress=bars,
                                     desc="test", task=task)
    m = task.metric
    say(f"test {m} {task.format(te_err)} (best epoch {best['epoch']}, valid {m} {task.format(best[f'valid_{m}'])}, "
        f"n={te_n:,})")
    if ctx.is_main:
        argv = getattr(args, "argv", None)
        results = {
            "command": "epdo " + shlex.join(argv) if argv is not None else None,
            "model": cfg["model"],
            "model_kwargs": cfg["model_kwargs"],
            "params": n_params,
            "paper_params": info.paper_params,
            "paper": info.paper,
            "paper_error": info.paper_error,
            "dataset": dataset_label(cfg["data"], test_ds),
            "n_train": len(y_train),
            "n_valid": len(y_valid),
            "n_test": te_n,
            "seed": cfg["seed"],
            "data_seed": cfg["data_seed"],
            "epochs": epochs,
            "train": cfg["train"],
            "best_epoch": best["epoch"],
            "task": task.name,
            "setting": cfg.get("setting"),
            f"best_valid_{m}": best[f"valid_{m}"],
            f"test_{m}": te_err,
            "test_loss": te_loss,
            "final": history[-1] if history else None,
            "wall_time_s": train_time,
            "session_wall_time_s": time.perf_counter() - t_session,
            "resumed_at_epochs": resumed_at,
            "machine": machine_info(ctx),
            "epdo_version": _epdo_version(),
            "deterministic": True,
        }
        write_json(out / "results.json", results)
        _plot_curves(history, out / "curves.png", f"{cfg['model']} on {results['dataset']['label']}", results["command"],
                     task=task)
        logger.info("wrote %s", out / "results.json")
    return 0


def _plot_curves(history: list[dict], path: Path, title: str, command: str | None = None, task=None) -> None:
    """Loss and metric (error in %, or MSE) per epoch, train and valid, with markers (a 1-epoch run shows points),
    integer epoch ticks and linear axes from 0."""
    task = task or get_task("classification")
    if not history:
        return
    fig = new_figure(ncols=2, height=3.8)
    if fig is None:
        return
    from matplotlib.ticker import MaxNLocator

    ax_loss, ax_err = fig.axes
    ep = [h["epoch"] for h in history]
    style = dict(marker="o", ms=4)
    if task.name == "classification":
        series = {
            ax_loss: ([h["train_loss"] for h in history], [h["valid_loss"] for h in history], "cross-entropy loss", "loss"),
            ax_err: ([100.0 - h["train_acc"] for h in history], [h["valid_error"] for h in history], "error (%)",
                     "classification error"),
        }
    else:
        series = {
            ax_loss: ([h["train_loss"] for h in history], [h["valid_loss"] for h in history], "loss", "loss"),
            ax_err: ([h[f"train_{task.metric}"] for h in history], [h[f"valid_{task.metric}"] for h in history],
                     task.metric.upper(), task.metric.upper()),
        }
    lo, hi = min(ep), max(ep)
    for ax, (train, valid, ylabel, name) in series.items():
        ax.plot(ep, train, label="train", **style)
        ax.plot(ep, valid, label="valid", **style)
        ax.set(xlabel="epoch", ylabel=ylabel, title=name)
        ax.set_ylim(0, 1.12 * max(train + valid) or 1.0)
        if hi - lo <= 12:
            ax.set_xticks(range(lo, hi + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(lo - 0.5, hi + 0.5) if lo == hi else ax.set_xlim(lo, hi)
        ax.legend(loc="lower left")
        ax.grid(alpha=0.3)
    fig.suptitle(title if not command else f"{title}\n{command}", fontsize=9)
    save_figure(fig, path)
