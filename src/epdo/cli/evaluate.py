"""``epdo evaluate``: test error of a checkpoint; accuracy vs input rotation (``--rotations K``);
mean and std of the error over random perturbations (``--scenario test|iso|sca --draws D``).

Results go to stdout (the rotation table row by row, as each angle is done), progress bars to stderr;
the JSON (and PNG) go to ``--out``, by default ``runs/evaluate-<model>`` in the working directory,
never beside the checkpoint. Rotations use :func:`epdo.data.rotate_images` (bilinear, zero fill).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import torch

import epdo.models as models
from epdo.data import DATASETS, SPLITS, dataset_spec
from epdo.data.perturb import SCENARIOS, apply_scenario

from .common import (
    CLIError,
    dataset_label,
    dataset_arrays,
    default_run_dir,
    evaluate,
    load_split,
    new_figure,
    recalibrate_on_training_samples,
    out_dir,
    plural,
    resolve_device,
    rotation,
    save_figure,
    write_json,
)
from .tasks import get_task

logger = logging.getLogger("epdo.cli.evaluate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt, last.pt)")
    p.add_argument("--data", choices=DATASETS, help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--setting", help="the dataset's setting (default: the checkpoint's), e.g. spherical-mnist N/R")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default test)")
    p.add_argument("--rotations", type=int, metavar="K", help="also evaluate with inputs rotated by K angles in [0, 360)")
    p.add_argument("--scenario", choices=SCENARIOS, help="perturb the inputs (epdo.data.perturb.apply_scenario)")
    p.add_argument("--draws", type=int, default=10, help="random draws of the --scenario perturbation (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --scenario draws (default 0)")
    p.add_argument("--out", help="folder for the JSON/PNG (default runs/evaluate-MODEL in the working directory)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--recalibrate-bn", type=int, metavar="N",
                   help="first re-estimate the batch-norm statistics layer by layer in eval mode on the first N "
                        "training samples of the checkpoint's dataset and setting (epdo.nn.recalibrate_batchnorm)")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")
    p.add_argument("--data-seed", type=int, help="dataset seed (default: the checkpoint's, else 0)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="DataLoader workers for streaming datasets (image folders, shards; default 0)")


def run(args: argparse.Namespace) -> int:
    if args.rotations is not None and args.rotations < 1:
        raise CLIError(f"--rotations must be a positive number of angles, got {args.rotations}")
    if args.draws < 1:
        raise CLIError(f"--draws must be positive, got {args.draws}")
    if args.rotations is not None and args.scenario is not None:
        raise CLIError("use either --rotations or --scenario, not both")
    device = resolve_device(args.device)
    ckpt_path = Path(args.checkpoint)
    ckpt = models.read_checkpoint(ckpt_path)
    model = models.load(ckpt_path, map_location="cpu").to(device)
    cfg = ckpt.get("config", {}) if isinstance(ckpt.get("config"), dict) else {}
    data = args.data or cfg.get("data")
    if data is None:
        raise CLIError(f"{ckpt_path} does not record its dataset; pass --data")
    data_seed = args.data_seed if args.data_seed is not None else int(cfg.get("data_seed", 0))
    setting = args.setting if args.setting is not None else (cfg.get("setting") if data == cfg.get("data") else None)
    try:
        task = get_task(dataset_spec(data).task)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if (args.rotations is not None or args.scenario is not None) and task.name != "classification":
        raise CLIError(f"--rotations / --scenario perturb images of classification data; {data} is a {task.name} dataset")
    ds = load_split(data, args.split, args.data_dir, args.cache_dir, data_seed,
                    **({} if setting is None else {"setting": setting}))
    if args.recalibrate_bn:
        _recalibrate_from_training_data(args, model, data, cfg, data_seed, setting, device)
    if getattr(ds, "tensors", None) is None:  # a streaming dataset (image folders, shards)
        return _evaluate_stream(args, ckpt, ckpt_path, model, ds, data, setting, task, device)
    *inputs, labels = dataset_arrays(ds, args.limit)
    if (args.rotations is not None or args.scenario is not None) and (len(inputs) != 1 or inputs[0].dim() != 4):
        raise CLIError(f"--rotations / --scenario need image inputs (B, C, H, W); {data} gives "
                       f"{[tuple(t.shape) for t in inputs]}")
    images = inputs[0]
    label = dataset_label(data, ds)["label"]
    passes = 1 + (args.rotations or 0) + (args.draws if args.scenario else 0)
    logger.info("evaluating %s on %s (%s, %s images; %s)", ckpt["model"], label, args.split, f"{len(labels):,}",
                "1 pass" if passes == 1 else f"{passes} passes")

    loss, err, n = evaluate(model, inputs, labels, device, batch_size=args.batch_size, progress=args.progress,
                            desc=args.split, task=task)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "model": ckpt["model"],
        "model_kwargs": ckpt["model_kwargs"],
        "epoch": ckpt.get("epoch"),
        "dataset": dataset_label(data, ds),
        "setting": setting,
        "split": args.split,
        "n": n,
        task.metric: err,
        "loss": loss,
    }
    if args.recalibrate_bn:
        result["recalibrate_bn"] = args.recalibrate_bn
    print(f"{ckpt['model']} on {label} ({args.split}, n={n:,}): {task.metric} {task.format(err)}  loss {loss:.4f}",
          flush=True)
    dest = Path(args.out) if args.out else default_run_dir("evaluate", ckpt["model"])
    stem = f"eval-{data}-{args.split}"
    partial_rows = _print_partial_equivariance(model)
    if partial_rows:
        result["partial_equivariance"] = partial_rows

    if args.rotations is not None:
        angles = [360.0 * k / args.rotations for k in range(args.rotations)]
        acc = []
        print("angle(deg)  accuracy(%)", flush=True)
        for k, a in enumerate(angles):
            _, e, _ = evaluate(model, images, labels, device, batch_size=args.batch_size, transform=rotation(a),
                               progress=args.progress, desc=f"angle {k + 1}/{len(angles)}")
            acc.append(100.0 - e)
            print(f"{a:10.2f}  {acc[-1]:10.2f}", flush=True)
        result["rotations"] = {"angles_deg": angles, "accuracy": acc,
                               "interpolation": "epdo.data.rotate_images: bilinear, zero fill"}
        stem += f"-rot{args.rotations}"

    if args.scenario is not None:
        gen = torch.Generator().manual_seed(args.seed)
        errors = []
        for k in range(args.draws):
            perturbed = apply_scenario(images, args.scenario, gen)
            errors.append(evaluate(model, perturbed.to(torch.float32), labels, device, batch_size=args.batch_size,
                                   progress=args.progress, desc=f"draw {k + 1}/{args.draws}")[1])
            logger.info("draw %d/%d: error %.2f%%", k + 1, args.draws, errors[-1])
        mean = sum(errors) / len(errors)
        std = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) if len(errors) > 1 else 0.0
        result["scenario"] = {"name": args.scenario, "draws": args.draws, "seed": args.seed, "errors": errors,
                              "mean_error": mean, "std_error": std, "std_ddof": 1}
        print(f"scenario {args.scenario}: error {mean:.2f} +- {std:.2f}% over {plural(args.draws, 'draw')} (std with ddof=1)")
        stem += f"-{args.scenario}"

    out_dir(dest)
    if args.rotations is not None:
        title = f"{ckpt['model']} on {label}, {args.split} split (n={n:,})"
        _plot_rotations(angles, acc, dest / f"{stem}.png", title, getattr(ds, "num_classes", 10))
    if partial_rows:
        _plot_partial_subsets(partial_rows, dest / f"{stem}-subsets.png", f"{ckpt['model']}: learned subsets per layer")
    write_json(dest / f"{stem}.json", result)
    print(f"wrote {dest / f'{stem}.json'}")
    return 0


def _print_partial_equivariance(model) -> list[dict]:
    """Models with learned partial equivariance (``partial_equivariance_report()``, epdo.gconv) print theta / pi,
    the flip probability and the eval-mode element count of every layer."""
    report = getattr(model, "partial_equivariance_report", None)
    rows = list(report()) if callable(report) else []
    if rows:
        print("learned partial equivariance (theta: rotations in [-theta, theta]; prob: of the flipped coset)")
        for r in rows:
            parts = [f"theta = {r['theta']:.3f} pi ({180 * r['theta']:.1f} deg)"] if "theta" in r else []
            parts += [f"prob = {r['prob']:.3f}"] if "prob" in r else []
            print(f"  {r['layer']:<28} " + ", ".join(parts + [f"{r['elements']} elements"]), flush=True)
    return rows


def _plot_partial_subsets(rows: list[dict], path: Path, title: str) -> None:
    """004 Fig. 6: the learned rotation range [-theta, theta] of every layer (bars; opacity = flip probability)."""
    fig = new_figure()
    if fig is None:
        return
    ax = fig.axes[0]
    for i, r in enumerate(rows):
        t = 180.0 * r.get("theta", 1.0)
        ax.barh(i, 2 * t, left=-t, color="C0", alpha=0.35 + 0.65 * r.get("prob", 1.0), height=0.6)
        if "prob" in r:
            ax.text(t + 4, i, f"p(flip) = {r['prob']:.2f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [r["layer"] for r in rows], fontsize=7)
    ax.set(xlabel="rotation (degrees)", xlim=(-185, 230), title=title)
    ax.axvline(0, color="gray", lw=0.8)
    ax.grid(alpha=0.3, axis="x")
    save_figure(fig, path)


def _recalibrate_from_training_data(args, model, data: str, cfg: dict, data_seed: int, setting, device) -> None:
    """``--recalibrate-bn N``: batch-norm statistics from the first N training samples (the checkpoint's setting
    of the training split: e.g. unrotated digits for a spherical-mnist N/R run), as ``epdo train`` does."""
    if args.recalibrate_bn < 0:
        raise CLIError(f"--recalibrate-bn must be a non-negative number of samples, got {args.recalibrate_bn}")
    train_setting = cfg.get("setting") if data == cfg.get("data") else setting
    train = load_split(data, "train", args.data_dir, args.cache_dir, data_seed,
                       **({} if train_setting is None else {"setting": train_setting}))
    if isinstance(train, torch.utils.data.IterableDataset):
        raise CLIError(f"--recalibrate-bn needs a map-style training split; {data}'s is a stream (shards)")
    *x_train, _ = dataset_arrays(train, args.recalibrate_bn)
    recalibrate_on_training_samples(model, x_train, args.recalibrate_bn, args.batch_size, device)
    logger.info("recalibrated the batch-norm statistics on %s training samples", f"{len(x_train[0]):,}")


def _evaluate_stream(args, ckpt, ckpt_path: Path, model, ds, data: str, setting, task, device) -> int:
    """The error of ``model`` on a streaming dataset, read by DataLoader workers (``--num-workers``)."""
    from . import stream
    from .common import DistContext

    if args.rotations is not None or args.scenario is not None:
        raise CLIError(f"--rotations / --scenario are implemented for in-memory datasets, not for {data}")
    s = dict(ckpt.get("config", {}).get("stream") or {"amp": None, "channels_last": False})
    if s.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    loss, err, n = stream._evaluate(model, ds, {}, DistContext(device=device), s, args.num_workers, args.batch_size,
                                    task, args.limit)
    label = dataset_label(data, ds)["label"]
    print(f"{ckpt['model']} on {label} ({args.split}, n={n:,}): {task.metric} {task.format(err)}  loss {loss:.4f}",
          flush=True)
    dest = Path(args.out) if args.out else default_run_dir("evaluate", ckpt["model"])
    out_dir(dest)
    path = dest / f"eval-{data}-{args.split}.json"
    write_json(path, {"checkpoint": str(ckpt_path), "model": ckpt["model"], "model_kwargs": ckpt["model_kwargs"],
                      "epoch": ckpt.get("epoch"), "dataset": dataset_label(data, ds), "setting": setting,
                      "split": args.split, "n": n, task.metric: err, "loss": loss})
    print(f"wrote {path}")
    return 0


def _plot_rotations(angles: list[float], acc: list[float], path: Path, title: str, num_classes: int = 10) -> None:
    """Accuracy vs input rotation on a y axis from a floor (0, or 50 % when every accuracy is above 60 %) to
    100 %, with the chance level drawn, so a 0.1 % dip does not look like a cliff."""
    fig = new_figure()
    if fig is None:
        return
    ax = fig.axes[0]
    ax.plot(angles + [360.0], acc + acc[:1], marker="o", ms=3, label="accuracy")
    chance = 100.0 / num_classes
    floor = 50.0 if min(acc) > 60.0 else 0.0
    if floor < chance:
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"chance ({chance:g} %)")
        ax.legend(loc="best")
    ax.set_title(title, fontsize=9)
    ax.set(xlabel="input rotation (degrees, counter-clockwise)", ylabel="accuracy (%)", xlim=(0, 360),
           ylim=(floor, 100.5))
    ax.set_xticks(range(0, 361, 45))
    ax.grid(alpha=0.3)
    save_figure(fig, path)
