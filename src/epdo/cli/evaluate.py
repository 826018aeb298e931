"""``epdo evaluate``: test error of a checkpoint; accuracy vs input rotation (``--rotations K``);
mean and std of the error over random perturbations (``--scenario test|iso|sca --draws D``)."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import torch

import epdo.models as models

from .common import (
    DATA_NAMES,
    SPLITS,
    CLIError,
    dataset_label,
    dataset_tensors,
    evaluate,
    load_split,
    new_figure,
    out_dir,
    resolve_device,
    rotate,
    save_figure,
    write_json,
)

logger = logging.getLogger("epdo.cli.evaluate")

SCENARIOS = ("test", "iso", "sca")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt, last.pt)")
    p.add_argument("--data", choices=DATA_NAMES, help="dataset (default: the one the checkpoint was trained on)")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default test)")
    p.add_argument("--rotations", type=int, metavar="K", help="also evaluate with inputs rotated by K angles in [0, 360)")
    p.add_argument("--scenario", choices=SCENARIOS, help="perturb the inputs (epdo.data.perturb.apply_scenario)")
    p.add_argument("--draws", type=int, default=10, help="random draws of the --scenario perturbation (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --scenario draws (default 0)")
    p.add_argument("--out", help="folder for the JSON/PNG (default: the checkpoint's folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")
    p.add_argument("--data-seed", type=int, help="dataset seed (default: the checkpoint's, else 0)")


def _apply_scenario():
    try:
        from epdo.data.perturb import apply_scenario
    except ImportError as e:
        raise CLIError(f"--scenario needs epdo.data.perturb.apply_scenario, which is not available ({e})") from None
    return apply_scenario


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
    ds = load_split(data, args.split, args.data_dir, args.cache_dir, data_seed)
    images, labels = dataset_tensors(ds, args.limit)

    loss, err, n = evaluate(model, images, labels, device, batch_size=args.batch_size)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "model": ckpt["model"],
        "model_kwargs": ckpt["model_kwargs"],
        "epoch": ckpt.get("epoch"),
        "dataset": dataset_label(data, ds),
        "split": args.split,
        "n": n,
        "error": err,
        "loss": loss,
    }
    print(f"{ckpt['model']} on {result['dataset']['label']} ({args.split}, n={n}): error {err:.2f}%  loss {loss:.4f}")
    dest = out_dir(args.out) if args.out else ckpt_path.resolve().parent
    stem = f"eval-{data}-{args.split}"

    if args.rotations is not None:
        angles = [360.0 * k / args.rotations for k in range(args.rotations)]
        acc = []
        for a in angles:
            _, e, _ = evaluate(model, images, labels, device, batch_size=args.batch_size, transform=lambda x, a=a: rotate(x, a))
            acc.append(100.0 - e)
        result["rotations"] = {"angles_deg": angles, "accuracy": acc, "interpolation": "rot90 for multiples of 90, else bilinear"}
        print("angle(deg)  accuracy(%)")
        for a, v in zip(angles, acc):
            print(f"{a:10.2f}  {v:10.2f}")
        stem += f"-rot{args.rotations}"
        _plot_rotations(angles, acc, dest / f"{stem}.png", f"{ckpt['model']} on {result['dataset']['label']}")

    if args.scenario is not None:
        apply_scenario = _apply_scenario()
        gen = torch.Generator().manual_seed(args.seed)
        errors = []
        for _ in range(args.draws):
            perturbed = apply_scenario(images, args.scenario, gen)
            if not torch.is_tensor(perturbed) or perturbed.shape != images.shape:
                raise RuntimeError(f"apply_scenario returned {type(perturbed).__name__} {getattr(perturbed, 'shape', '')}, expected {tuple(images.shape)}")
            errors.append(evaluate(model, perturbed.to(torch.float32), labels, device, batch_size=args.batch_size)[1])
        mean = sum(errors) / len(errors)
        std = math.sqrt(sum((e - mean) ** 2 for e in errors) / (len(errors) - 1)) if len(errors) > 1 else 0.0
        result["scenario"] = {"name": args.scenario, "draws": args.draws, "seed": args.seed, "errors": errors,
                              "mean_error": mean, "std_error": std, "std_ddof": 1}
        print(f"scenario {args.scenario}: error {mean:.2f} +- {std:.2f}% over {args.draws} draws (std with ddof=1)")
        stem += f"-{args.scenario}"

    write_json(dest / f"{stem}.json", result)
    logger.info("wrote %s", dest / f"{stem}.json")
    return 0


def _plot_rotations(angles: list[float], acc: list[float], path: Path, title: str) -> None:
    fig = new_figure()
    if fig is None:
        return
    ax = fig.axes[0]
    ax.plot(angles + [360.0], acc + acc[:1], marker="o", ms=3)
    ax.set(xlabel="input rotation (degrees, counter-clockwise)", ylabel="accuracy (%)", title=title, xlim=(0, 360))
    ax.set_xticks(range(0, 361, 45))
    ax.grid(alpha=0.3)
    save_figure(fig, path)
