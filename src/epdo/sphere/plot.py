"""Pictures of signals on the icosphere (matplotlib, imported lazily): equirectangular scatter maps.

>>> import numpy as np, tempfile, os
>>> from epdo.sphere import icosphere
>>> from epdo.sphere.plot import plot_sphere_signals
>>> path = os.path.join(tempfile.mkdtemp(), "s.png")
>>> plot_sphere_signals([icosphere(2).vertices[:, 2]], icosphere(2), path, ["z"]) == path
True
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["plot_sphere_signals", "plot_error_vs_angle"]


def plot_sphere_signals(signals: Sequence[np.ndarray], mesh, path: str, titles: Sequence[str] | None = None,
                        cols: int = 4) -> str:
    """Save one panel per signal (V,) on ``mesh``: longitude / latitude scatter coloured by value; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_write_bytes

    v = mesh.vertices
    lon, lat = np.degrees(np.arctan2(v[:, 1], v[:, 0])), np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1)))
    n = len(signals)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 1.9 * rows), squeeze=False)
    size = max(1.0, 3000.0 / len(v))
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        ax.scatter(lon, lat, c=np.asarray(signals[k], dtype=np.float64), s=size, cmap="viridis", linewidths=0)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def plot_error_vs_angle(angles_deg: Sequence[float], errors: dict[str, Sequence[float]], path: str,
                        title: str = "") -> str:
    """Save test error (%) against rotation angle (degrees), one line per model; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, err in errors.items():
        ax.plot(angles_deg, err, marker="o", label=name)
    ax.set_xlabel("rotation angle about the x-axis (degrees)")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
