"""``epdo pde-show``: pictures of a trained PDE layer (EqPdeNet checkpoints).

Writes three PNGs (:func:`pde_show`, also usable from Python):

* ``pde_evolution.png``: a few test digits, the solution u_T of every PDE and the layer's combined output
  (what the fully connected network sees);
* ``pde_trajectory.png``: the Euler states u_0, ..., u_T of every PDE for the first digit;
* ``pde_coefficients.png``: the learned coefficients of every F_theta (one bar group per invariant, one bar
  per PDE; a heat map of the weights for ``poly``/``mlp`` right-hand sides) and of the final linear combination.

The digits come from the test split of ``--data`` (default the embedded ``sample``, which needs no files);
by default the first digit of each of ``--n-digits`` classes, or the images ``--indices``. The PNGs go to
``--out`` (default ``runs/pde-show-<model>`` in the working directory, never beside the checkpoint).
This module loads checkpoints and datasets, so it lives in the command line: :mod:`epdo.pde` does not
depend on :mod:`epdo.models` (dependencies point one way, theory -> layers -> models -> cli).
matplotlib is imported lazily (optional dependency ``epdo[plot]``).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

import epdo.models as models
from epdo.data import DATASETS, get_dataset
from epdo.pde import LinearF, PDELayer

from .common import CLIError, default_run_dir, out_dir, save_figure

__all__ = ["find_pde_layer", "pde_show"]

logger = logging.getLogger("epdo.cli.pde_show")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint of a model with a PDE layer (e.g. eqpdenet-h64)")
    p.add_argument("--out", help="folder for the PNGs (default runs/pde-show-MODEL in the working directory)")
    p.add_argument("--data", choices=DATASETS, default="sample", help="dataset of the digits, test split (default sample)")
    p.add_argument("--indices", type=int, nargs="+", metavar="I", help="test images to show (default: one per class)")
    p.add_argument("--n-digits", type=int, default=4, help="number of digits without --indices (default 4)")
    p.add_argument("--data-dir", help="folder with the raw data files")
    p.add_argument("--cache-dir", help="folder for cached/generated datasets")


def run(args: argparse.Namespace) -> int:
    if args.n_digits < 1:
        raise CLIError(f"--n-digits must be positive, got {args.n_digits}")
    ckpt = Path(args.checkpoint)
    model = models.load(ckpt)  # missing or corrupt file: FileNotFoundError / CheckpointError (user errors)
    try:
        find_pde_layer(model)
    except ValueError as e:
        raise CLIError(f"{ckpt}: {e}") from None
    dest = Path(args.out) if args.out else default_run_dir("pde-show", model.epdo_model_name)
    try:
        paths = pde_show(ckpt, dest, args.data, indices=args.indices, n_digits=args.n_digits,
                         data_dir=args.data_dir, cache_dir=args.cache_dir)
    except ImportError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:
        if str(e).startswith("pde_show:"):  # bad --indices, images of the wrong shape
            raise CLIError(str(e).removeprefix("pde_show:").strip()) from None
        raise
    for kind, path in paths.items():
        print(f"{kind:<13}{path}")
    return 0


def find_pde_layer(model: nn.Module) -> PDELayer:
    """The first :class:`PDELayer` inside ``model``; ``ValueError`` if there is none."""
    for module in model.modules():
        if isinstance(module, PDELayer):
            return module
    name = getattr(model, "epdo_model_name", type(model).__name__)
    raise ValueError(f"model {name!r} has no PDE layer (expected an EqPdeNet-type model, e.g. eqpdenet-h64)")


def _load_images(data: str | torch.Tensor, indices: Sequence[int] | None, n_digits: int, data_dir, cache_dir):
    if isinstance(data, torch.Tensor):
        images, labels = data, None
    elif isinstance(data, str):
        ds = get_dataset(data, "test", data_dir=data_dir, cache_dir=cache_dir)
        images, labels = ds.images, ds.labels
    else:
        raise TypeError(f"data must be a dataset name or an image tensor (N, 1, H, W), got {type(data).__name__}")
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"pde_show: expected images (N, 1, H, W), got {tuple(images.shape)}")
    if indices is None:
        if labels is None:
            indices = list(range(min(n_digits, len(images))))
        else:  # the first digit of each of n_digits different classes
            seen: dict[int, int] = {}
            for i, y in enumerate(labels.tolist()):
                if y not in seen:
                    seen[y] = i
                if len(seen) == n_digits:
                    break
            indices = list(seen.values())
    bad = [i for i in indices if not 0 <= i < len(images)]
    if bad:
        raise ValueError(f"pde_show: indices {bad} out of range for {len(images)} images")
    sel = torch.as_tensor(list(indices), dtype=torch.long)
    return images[sel].float(), (labels[sel].tolist() if labels is not None else [None] * len(sel)), list(indices)


def _make_dir(path: str | os.PathLike) -> Path:
    return out_dir(path)


def _imshow(ax, img: torch.Tensor, title: str) -> None:
    ax.imshow(img.numpy(), cmap="gray", interpolation="nearest")
    ax.set_title(f"{title}\n[{img.min():.2f}, {img.max():.2f}]", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def pde_show(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    data: str | torch.Tensor = "sample",
    *,
    indices: Sequence[int] | None = None,
    n_digits: int = 4,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write ``pde_evolution.png``, ``pde_trajectory.png`` and ``pde_coefficients.png`` into ``out_dir``.

    Args:
        checkpoint_path: an epdo checkpoint (``epdo train`` output) of a model with a PDE layer.
        out_dir: folder for the PNGs (created).
        data: dataset name for :func:`epdo.data.get_dataset` (test split; default the embedded ``"sample"``,
            which needs no files) or an image tensor ``(N, 1, H, W)`` in [0, 1].
        indices: which images to show; default the first digit of each of ``n_digits`` classes.
        data_dir, cache_dir: passed to :func:`epdo.data.get_dataset`.

    Returns:
        ``{"evolution": path, "trajectory": path, "coefficients": path}``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError("pde_show needs matplotlib: pip install 'epdo[plot]'") from e

    model = models.load(checkpoint_path)
    layer = find_pde_layer(model)
    images, labels, idx = _load_images(data, indices, n_digits, data_dir, cache_dir)
    out = _make_dir(out_dir)
    with torch.no_grad():
        traj = layer.evolve(images, return_trajectory=True)
        combined = layer.combine(traj[-1]) if layer.combine is not None else None
    u_t = traj[-1]
    paths = {}

    # 1. input, u_T per PDE, combined output
    ncols = 1 + layer.n_total + (combined is not None)
    fig = Figure(figsize=(1.6 * ncols, 1.8 * len(idx)), layout="constrained")
    axes = fig.subplots(len(idx), ncols, squeeze=False)
    for r in range(len(idx)):
        lab = f"#{idx[r]}" + (f" (label {labels[r]})" if labels[r] is not None else "")
        _imshow(axes[r][0], images[r, 0], f"input {lab}")
        for k, name in enumerate(layer.labels):
            _imshow(axes[r][1 + k], u_t[r, k], f"u_T {name}")
        if combined is not None:
            _imshow(axes[r][-1], combined[r, 0], "combined")
    integ = layer.integrators[0]
    fig.suptitle(f"{getattr(model, 'epdo_model_name', type(model).__name__)}: T={integ.T:g}, dt={integ.dt:g}", fontsize=9)
    paths["evolution"] = out / "pde_evolution.png"
    save_figure(fig, paths["evolution"])

    # 2. Euler states of every PDE for the first digit
    n_states = len(traj)
    fig = Figure(figsize=(1.5 * n_states, 1.7 * layer.n_total), layout="constrained")
    axes = fig.subplots(layer.n_total, n_states, squeeze=False)
    for k, name in enumerate(layer.labels):
        for s in range(n_states):
            _imshow(axes[k][s], traj[s][0, k], f"{name} t={s * integ.dt:.2g}")
    paths["trajectory"] = out / "pde_trajectory.png"
    save_figure(fig, paths["trajectory"])

    # 3. coefficients of F_theta and of the combination
    n_panels = len(layer.integrators) + (layer.combine is not None)
    fig = Figure(figsize=(5.0 * n_panels, 3.8), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    for ax, integ in zip(axes, layer.integrators):
        f, names = integ.step.function, list(integ.step.invariant_set.names)
        if isinstance(f, LinearF):
            w = torch.cat([f.weight.detach(), f.bias.detach()[:, None]], 1)
            xs = torch.arange(w.shape[1], dtype=torch.float64)
            width = 0.8 / w.shape[0]
            for k in range(w.shape[0]):
                ax.bar((xs + (k - (w.shape[0] - 1) / 2) * width).numpy(), w[k].numpy(), width, label=f"PDE {k}")
            ax.set_xticks(xs.numpy(), names + ["bias"], rotation=40, ha="right", fontsize=7)
            ax.axhline(0, color="k", lw=0.5)
            ax.legend(fontsize=7)
        else:
            w = torch.cat([p.detach().reshape(f.n_pdes, -1) for p in f.parameters()], 1)
            im = ax.imshow(w.numpy(), aspect="auto", cmap="coolwarm")
            fig.colorbar(im, ax=ax)
            ax.set_ylabel("PDE")
            ax.set_xlabel(f"{type(f).__name__} parameters (inputs: {', '.join(names)})", fontsize=6)
        ax.set_title(f"F_theta on {integ.step.invariant_set.name!r} invariants", fontsize=9)
    if layer.combine is not None:
        ax = axes[-1]
        w = layer.combine.weight.detach().reshape(layer.combine.out_channels, -1)
        b = layer.combine.bias.detach()
        ax.bar(range(layer.n_total + 1), torch.cat([w[0], b[:1]]).numpy(), color="gray")
        ax.set_xticks(range(layer.n_total + 1), list(layer.labels) + ["bias"], rotation=40, ha="right", fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title("linear combination of the u_T", fontsize=9)
    paths["coefficients"] = out / "pde_coefficients.png"
    save_figure(fig, paths["coefficients"])
    return paths
