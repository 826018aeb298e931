"""placeholder"""

import numpy as np


class _Numpy2Array:
    """numpy with ``array(x, copy=False)`` meaning numpy 1's "copy if needed" (``asarray``)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def array(obj, *args, copy=True, **kwargs):
        return np.asarray(obj, *args, **kwargs) if copy is False else np.array(obj, *args, copy=copy, **kwargs)


def patch_e2cnn_for_numpy2(setattr_=setattr) -> None:
    """Two numpy-2 incompatibilities of e2cnn 0.2 that break every D_N / O(2) ``R2Conv``: its irrep kernel bases
    hash ``ndarray.tostring()`` (removed) and ``e2cnn.kernels.utils`` calls ``np.array(x, copy=False)`` on
    scalars (now an error). Replaces those ``__hash__`` methods by the same hash on ``tobytes`` and that
    module's ``np`` by a proxy whose ``array(copy=False)`` is ``asarray``; e2cnn's results are unchanged.
    ``setattr_``: ``setattr`` (permanent) or pytest's ``monkeypatch.setattr`` (undone after the test)."""
    from e2cnn.kernels import irreps_basis as ib
    from e2cnn.kernels import utils as ku

    def _h(v):
        return hash(v.tobytes()) if hasattr(v, "tobytes") else hash(v)

    for cls in (ib.R2FlipsSolution, ib.R2DiscreteRotationsSolution, ib.R2ContinuousRotationsSolution,
                ib.R2FlipsDiscreteRotationsSolution, ib.R2FlipsContinuousRotationsSolution):
        setattr_(cls, "__hash__", lambda self: hash(self.in_irrep) + hash(self.out_irrep) + _h(self.mu)
                 + _h(self.gamma))
    setattr_(ku, "np", _Numpy2Array())
