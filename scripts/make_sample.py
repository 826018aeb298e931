"""Regenerate the embedded sample ``src/epdo/data/assets/sample.npz``.

The sample is the prefix (2,000 train / 1,000 test images) of the seed-0 MNIST-rot replica
(see ``epdo.data.replica``), stored as uint8 with labels, angles and MNIST source indices.
Usage (from the repository root): ``python scripts/make_sample.py [--mnist-dir DIR]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from epdo.data.datasets import SAMPLE_N_TEST, SAMPLE_N_TRAIN, SAMPLE_SEED
from epdo.data.idx import MNIST_FILES, load_idx_dataset
from epdo.data.paths import atomic_savez, resolve_mnist_dir
from epdo.data.replica import make_replica

OUT = Path(__file__).resolve().parents[1] / "src" / "epdo" / "data" / "assets" / "sample.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", default=None, help="MNIST IDX directory (default: EPDO_MNIST_DIR / ../shared/data/mnist)")
    parser.add_argument("--out", default=str(OUT), help=f"output file (default {OUT})")
    args = parser.parse_args()
    mnist = load_idx_dataset(resolve_mnist_dir(args.mnist_dir), MNIST_FILES, dataset="MNIST")
    rep = make_replica(mnist, seed=SAMPLE_SEED, n_train=SAMPLE_N_TRAIN, n_test=SAMPLE_N_TEST)
    arrays = {
        "train_images": rep["train_images"],
        "train_labels": rep["train_labels"],
        "train_angles": rep["train_angles"].astype(np.float64),
        "train_source": rep["train_source"].astype(np.int32),
        "test_images": rep["test_images"],
        "test_labels": rep["test_labels"],
        "test_angles": rep["test_angles"].astype(np.float64),
        "test_source": rep["test_source"].astype(np.int32),
        "seed": rep["seed"],
        "version": rep["version"],
    }
    path = atomic_savez(args.out, **arrays)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
