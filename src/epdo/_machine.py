"""What a results file says about the machine it ran on (shared by the command line and the benchmarks)."""

from __future__ import annotations

import platform


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), or None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def neural_epdo_kernel() -> str:
    """The implementation NeuralEPDO's default ``backend="auto"`` runs on CPU here: ``"cpp"`` or ``"torch"``."""
    import torch

    from .nn._epdo_kernels import resolve_backend

    return resolve_backend("auto", torch.empty(0))
