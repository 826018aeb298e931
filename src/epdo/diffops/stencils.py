"""Discretised elementary PDOs: a registry of discretisations, finite differences, Gaussian derivatives, RBF-FD.

A discretisation turns each elementary PDO ``d^alpha = d^a/dx^a d^b/dy^b`` (alpha in Gamma_N) into a k x k
stencil: a cross-correlation kernel for ``torch.nn.functional.conv2d`` with ``padding=k//2`` in the (x right,
y up) frame of ``docs/design.md`` (``stencil[alpha][u, v]`` weighs the pixel at offset ``(x, y) = (v - r,
r - u)``, ``r = k // 2``). Kinds are registered by name (:func:`register_discretization`); a
:class:`Discretization` value names one kind with its kernel size and parameters. Three kinds are built in:

``"fd"`` finite differences (Shen et al. 2020, PDO-eConv): separable, the minimal central 1-D stencils,
exact on polynomials of degree ``n + 1`` for derivative order ``n``::

    n=1: [-1/2, 0, 1/2]   n=2: [1, -2, 1]   n=3: [-1/2, 1, 0, -1, 1/2]   n=4: [1, -4, 6, -4, 1]

``"gauss"`` Gaussian derivatives (Jenner & Weiler 2021; paper 000 Eq. 15): separable,
``d^alpha f ~ sum_n (d^alpha G)(x - x_n) f(x_n)`` with ``G(x, y) = g(x) g(y)`` and ``g`` the 1-D Gaussian of
standard deviation ``sigma``. Normalisation: each 1-D stencil is divided by ``sum_m g(m)`` over the window,
so the order-0 stencil sums to exactly one (a constant image is preserved whatever the truncation); for
windows of radius >= 6 sigma this equals the continuous normalisation to ~1e-9, and the stencils reproduce
the derivatives of the Gaussian-smoothed image. Default ``sigma = 0.8 + 0.1 (k - 5)`` px (:func:`default_sigma`).

``"rbf"`` RBF-FD with polyharmonic splines and polynomial augmentation (:mod:`epdo.diffops.rbf`): not
separable, exact on all polynomials of degree ``poly_degree`` (default ``k - 1``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from math import factorial
from typing import Any, Iterator

import numpy as np
from numpy.polynomial import hermite_e

from .derivatives import multi_indices

__all__ = [
    "stencils_from_1d",
    "DISCRETIZATIONS",
    "Discretization",
    "DiscretizationBuilder",
    "as_discretization",
    "check_order",
    "default_sigma",
    "fd_stencil_1d",
    "gaussian_stencil_1d",
    "get_discretization_builder",
    "register_discretization",
    "stencils",
    "stencils_1d",
]


def check_order(order: Any, name: str = "order") -> int:
    """Return ``order`` as an int if it is a non-negative integer (bools refused), else raise ValueError."""
    if isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {order!r} ({type(order).__name__})")
    return int(order)


def _check_kernel_size(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {k!r}")
    return int(k)


# --------------------------------------------------------------------------------------------------
# the registry

def stencils_from_1d(s1: np.ndarray, alphas) -> np.ndarray:
    """2-D correlation stencils of a separable discretisation from its 1-D ones ``(N + 1, k)``:
    ``stencil[alpha][u, v] = s_b[::-1][u] * s_a[v]`` for ``alpha = (a, b)`` (rows are y reversed: y points up)."""
    s1 = np.asarray(s1, dtype=np.float64)
    return np.stack([np.outer(s1[b][::-1], s1[a]) for a, b in alphas])

class DiscretizationBuilder:
    """What a kind of discretisation declares; subclass it and pass an instance to :func:`register_discretization`.

    Override :meth:`min_kernel_size` and :meth:`stencils_2d` (or, for a separable kind, set ``separable = True``
    and override :meth:`stencils_1d`: the 2-D stencils are then their outer products). ``defaults`` lists the
    method-specific parameters (``Discretization.params``) with their default values; ``uses_sigma`` says
    whether the kind takes ``Discretization.sigma``. :meth:`normalize` validates and fills in defaults, so that
    two values describing the same stencils compare equal.
    """

    name: str = "?"  # set by register_discretization
    separable: bool = False
    uses_sigma: bool = False
    defaults: Mapping[str, Any] = {}

    def min_kernel_size(self, order: int, **params: Any) -> int:
        """The smallest odd k that holds derivatives up to ``order``."""
        raise NotImplementedError

    def stencils_2d(self, order: int, kernel_size: int, **params: Any) -> np.ndarray:
        """Stencils of all alpha in Gamma_N, float64 ``(|Gamma_N|, k, k)`` (see the module doc for the layout)."""
        if not self.separable:
            raise NotImplementedError
        return stencils_from_1d(self.stencils_1d(order, kernel_size, **params), multi_indices(order))

    def stencils_1d(self, order: int, kernel_size: int, **params: Any) -> np.ndarray:
        """Separable kinds only: 1-D stencils of orders 0..N, ``(N + 1, k)``, offsets -r..r along +x."""
        raise NotImplementedError

    def check_order(self, order: int, kernel_size: int, **params: Any) -> None:
        """Raise ValueError if the stencils of ``order`` cannot be built; default: the kernel-size check."""
        need = self.min_kernel_size(order, **params)
        if kernel_size < need:
            raise ValueError(
                f"kernel_size={kernel_size} is too small for {self.describe()} of order {order}: "
                f"expected kernel_size >= {need}"
            )

    def normalize(self, kernel_size: int, sigma: Any, params: Mapping[str, Any]) -> tuple[float | None, dict]:
        """Validate ``sigma`` and ``params`` and return them with defaults filled in."""
        if sigma is not None and not self.uses_sigma:
            raise ValueError(
                f"sigma only applies to discretizations with a Gaussian width (e.g. 'gauss'), got sigma={sigma!r} "
                f"with {self.name!r}"
            )
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"discretization {self.name!r} takes the parameters {sorted(self.defaults)}, got unknown {unknown}"
            )
        return sigma, {**self.defaults, **params}

    def describe(self) -> str:
        return f"discretization {self.name!r}"


_REGISTRY: dict[str, DiscretizationBuilder] = {}
_CACHES: list = []  # cache_clear functions of caches keyed on Discretization values (cleared on (re)registration)


def clear_stencil_caches() -> None:
    """Empty every cache of stencils (called by :func:`register_discretization`)."""
    for clear in _CACHES:
        clear()


def register_discretization(name: str, builder: DiscretizationBuilder, *, overwrite: bool = False) -> None:
    """Make ``Discretization(name, k, ...)`` build its stencils with ``builder`` (a :class:`DiscretizationBuilder`).

    Raises ValueError if ``name`` is already registered (unless ``overwrite``) and TypeError for a builder that
    is not a :class:`DiscretizationBuilder`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a discretization name must be a non-empty string, got {name!r}")
    if not isinstance(builder, DiscretizationBuilder):
        raise TypeError(f"builder must be a DiscretizationBuilder instance, got {type(builder).__name__}")
    cls, base = type(builder), DiscretizationBuilder
    missing = [m for m in ("min_kernel_size",) if getattr(cls, m) is getattr(base, m)]
    if builder.separable and cls.stencils_1d is base.stencils_1d:
        missing.append("stencils_1d")
    if not builder.separable and cls.stencils_2d is base.stencils_2d:
        missing.append("stencils_2d")
    if missing:
        raise TypeError(f"{cls.__name__} must override {missing} to be registered as discretization {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"discretization {name!r} is already registered; pass overwrite=True to replace it")
    builder.name = name
    _REGISTRY[name] = builder
    clear_stencil_caches()


def get_discretization_builder(name: str) -> DiscretizationBuilder:
    """The registered builder of ``name``; ValueError listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown discretization {name!r}; expected one of {tuple(_REGISTRY)}") from None


class _Names(Sequence):
    """Live, read-only view of the registered discretisation names (behaves like a tuple of str)."""

    def __getitem__(self, i):
        return tuple(_REGISTRY)[i]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list, _Names)) else other)

    __hash__ = None  # a live view changes

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


DISCRETIZATIONS = _Names()


# --------------------------------------------------------------------------------------------------
# the value
class _Params(Mapping):
    """An immutable, hashable str -> value mapping whose repr is a dict literal (so reprs evaluate back)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()) -> None:
        d = dict(items)
        for key, value in d.items():
            if not isinstance(key, str):
                raise TypeError(f"discretization parameter names must be str, got {key!r}")
            try:
                hash(value)
            except TypeError:
                raise TypeError(f"discretization parameter {key}={value!r} must be hashable") from None
        object.__setattr__(self, "_items", tuple(sorted(d.items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("discretization parameters are immutable")

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other)

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def __reduce__(self):
        return (_Params, (self._items,))


@dataclass(frozen=True)
class Discretization:
    """How elementary PDOs become stencils: a frozen, hashable value; ``eval(repr(d)) == d``.

    Args:
        method: a registered name (:data:`DISCRETIZATIONS`): ``"fd"``, ``"gauss"``, ``"rbf"``, ...
        kernel_size: odd stencil width k.
        sigma: Gaussian standard deviation in pixels (``"gauss"`` only; default :func:`default_sigma` of k).
        params: method-specific parameters, e.g. ``{"exponent": 7, "poly_degree": 4}`` for ``"rbf"``; missing
            ones get the method's defaults.

    >>> Discretization("gauss", 5)
    Discretization('gauss', 5, 0.8)
    >>> Discretization("rbf", 5).separable
    False
    """

    method: str = "fd"
    kernel_size: int = 5
    sigma: float | None = None
    params: Mapping[str, Any] = field(default_factory=_Params)

    def __post_init__(self) -> None:
        builder = get_discretization_builder(self.method)
        k = _check_kernel_size(self.kernel_size)
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a mapping of parameter names to values, got {self.params!r}")
        sigma, params = builder.normalize(k, self.sigma, dict(self.params))
        object.__setattr__(self, "kernel_size", k)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "params", _Params(params))

    def __repr__(self) -> str:
        args = [repr(self.method), repr(self.kernel_size)]
        if self.sigma is not None:
            args.append(repr(self.sigma))
        if self.params:
            args.append(f"params={self.params!r}")
        return f"Discretization({', '.join(args)})"

    @property
    def builder(self) -> DiscretizationBuilder:
        return get_discretization_builder(self.method)

    @property
    def separable(self) -> bool:
        """Whether every stencil is the outer product of 1-D stencils (:func:`stencils_1d` exists)."""
        return self.builder.separable

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the builder: ``params``, and ``sigma`` where the method takes it."""
        out = dict(self.params)
        if self.builder.uses_sigma:
            out["sigma"] = self.sigma
        return out

    def min_kernel_size(self, order: int) -> int:
        """The smallest odd kernel size of this method (and parameters) for derivatives up to ``order``."""
        return self.builder.min_kernel_size(check_order(order), **self.kwargs)

    def check_order(self, order: int) -> None:
        """Raise ValueError if ``order`` is not a non-negative int or the kernel cannot hold it."""
        self.builder.check_order(check_order(order), self.kernel_size, **self.kwargs)


def as_discretization(
    spec: str | Discretization, kernel_size: int | None = None, sigma: float | None = None, **params: Any
) -> Discretization:
    """A :class:`Discretization` from a name (with ``kernel_size``, default 5, ``sigma`` and ``params``) or a value.

    A value is returned as is; any argument given with it must agree with it (ValueError otherwise).

    >>> as_discretization("rbf", 3, exponent=5)
    Discretization('rbf', 3, params={'exponent': 5, 'poly_degree': 2})
    >>> d = Discretization("fd", 3)
    >>> as_discretization(d) is d
    True
    """
    if isinstance(spec, Discretization):
        given = dict(kernel_size=kernel_size, sigma=sigma)
        clash = [f"{n}={v!r}" for n, v in given.items() if v is not None and v != getattr(spec, n)]
        clash += [f"{n}={v!r}" for n, v in params.items() if spec.params.get(n, object()) != v]
        if clash:
            raise ValueError(f"{spec!r} disagrees with the arguments {', '.join(clash)}")
        return spec
    if isinstance(spec, str):
        return Discretization(spec, 5 if kernel_size is None else kernel_size, sigma, params)
    raise TypeError(
        f"discretization must be a name in {tuple(DISCRETIZATIONS)} or a Discretization, got {type(spec).__name__}"
    )


# --------------------------------------------------------------------------------------------------
# stencils
def stencils_1d(order: int, disc: Discretization) -> np.ndarray:
    """1-D stencils of derivative orders 0..N as a read-only array ``(N + 1, k)`` (offset -r..r along +x).

    Only for separable discretisations (``disc.separable``); ValueError otherwise.
    """
    order = check_order(order)
    _check_disc(disc)
    if not disc.separable:
        raise ValueError(f"{disc!r} is not separable: it has no 1-D stencils; use stencils(order, disc)")
    disc.check_order(order)
    return _stencils_1d_cached(order, disc)


def stencils(order: int, disc: Discretization) -> np.ndarray:
    """Stencils of all ``d^alpha``, alpha in Gamma_N, as a read-only float64 array ``(|Gamma_N|, k, k)``.

    For separable ones ``stencil[alpha][u, v] = s_b[::-1][u] * s_a[v]`` (rows are y reversed because y points up).
    """
    order = check_order(order)
    _check_disc(disc)
    disc.check_order(order)
    return _stencils_cached(order, disc)


def _check_disc(disc: Any) -> None:
    if not isinstance(disc, Discretization):
        raise TypeError(f"expected a Discretization (see as_discretization), got {type(disc).__name__}: {disc!r}")


@lru_cache(maxsize=None)
def _stencils_1d_cached(order: int, disc: Discretization) -> np.ndarray:
    out = np.array(disc.builder.stencils_1d(order, disc.kernel_size, **disc.kwargs), dtype=np.float64)
    if out.shape != (order + 1, disc.kernel_size):
        raise ValueError(f"{disc!r}: 1-D stencils have shape {out.shape}, expected {(order + 1, disc.kernel_size)}")
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def _stencils_cached(order: int, disc: Discretization) -> np.ndarray:
    out = np.array(disc.builder.stencils_2d(order, disc.kernel_size, **disc.kwargs), dtype=np.float64)
    k = disc.kernel_size
    expect = (len(multi_indices(order)), k, k)
    if out.shape != expect:
        raise ValueError(f"{disc!r}: stencils have shape {out.shape}, expected {expect}")
    out.setflags(write=False)
    return out


_CACHES += [_stencils_1d_cached.cache_clear, _stencils_cached.cache_clear]


def _fd_radius(n: int) -> int:
    return (n + 1) // 2 if n % 2 else n // 2


@lru_cache(maxsize=None)
def _fd_stencil_1d(n: int) -> np.ndarray:
    r = _fd_radius(n)
    offsets = np.arange(-r, r + 1, dtype=np.float64)
    vander = np.stack([offsets**p / factorial(p) for p in range(2 * r + 1)])
    rhs = np.zeros(2 * r + 1)
    rhs[n] = 1.0
    w = np.linalg.solve(vander, rhs)
    w[np.abs(w) < 1e-12] = 0.0
    w.setflags(write=False)
    return w


def fd_stencil_1d(n: int) -> np.ndarray:
    """Minimal central finite-difference stencil of derivative order ``n`` (length ``2r+1``, offsets -r..r).

    Solves the moment conditions ``sum_m w_m m^p / p! = delta_{pn}`` for ``p = 0..2r``, ``r = ceil(n / 2)``.

    >>> fd_stencil_1d(2)
    array([ 1., -2.,  1.])
    """
    return _fd_stencil_1d(check_order(n, "derivative order n"))


def default_sigma(kernel_size: int) -> float:
    """Default Gaussian sigma in pixels for a k x k window: ``sigma = 0.8 + 0.1 (k - 5)`` (0.6, 0.8, 1.0, 1.2 px
    for k = 3, 5, 7, 9).

    Measured with ``benchmarks/pdoconv.py``'s 22.5-degree equivariance error of PDOConv (C16, 8 -> 8 regular
    fields, order min(4, k - 1), smooth input, median of 3 initialisations; 2026-12-02). Best tried per size:
    k = 3: 0.6 (0.030; 0.4: 0.133, 0.8: 0.046); k = 5: 0.8 (0.063; 0.7: 0.072, 1.0: 0.17, 1.25: 0.27, the
    value of docs/results.md); k = 7: 0.9 (0.029; 1.0: 0.032, 1.2: 0.079); k = 9: 1.1-1.2 (0.023). The rule is
    within 10 % of the best tried at each size; keeping r / sigma fixed instead (0.2 (k - 1)) was 2-4x worse
    at k = 3 and 7. Sizes above 9 are extrapolated.

    >>> default_sigma(5), default_sigma(7)
    (0.8, 1.0)
    """
    k = _check_kernel_size(kernel_size)
    return round(0.8 + 0.1 * (k - 5), 12)


def gaussian_stencil_1d(n: int, kernel_size: int, sigma: float) -> np.ndarray:
    """Sampled n-th derivative of a 1-D Gaussian as a correlation stencil, offsets -r..r (see module doc).

    ``s[m] = g^(n)(-m) / sum_m g(m)`` with ``g^(n)(t) = (-1/sigma)^n He_n(t/sigma) g(t)``; ``kernel_size`` odd,
    ``sigma`` finite and > 0.
    """
    n = check_order(n, "derivative order n")
    k = _check_kernel_size(kernel_size)
    sigma = _check_sigma(sigma)
    r = k // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    coeffs = np.zeros(n + 1)
    coeffs[n] = 1.0
    he = hermite_e.hermeval(-t / sigma, coeffs)
    return (-1.0 / sigma) ** n * he * g / g.sum()


def _check_sigma(sigma: Any) -> float:
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise ValueError(f"discretization 'gauss' needs sigma to be a finite number > 0, got sigma={sigma!r}")
    s = float(sigma)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"discretization 'gauss' needs sigma to be a finite number > 0, got sigma={sigma!r}")
    return s


class FiniteDifferences(DiscretizationBuilder):
    """``"fd"``: products of the minimal central 1-D stencils (:func:`fd_stencil_1d`), zero-padded to k."""

    separable = True

    def describe(self) -> str:
        return "finite differences"

    def min_kernel_size(self, order: int, **params: Any) -> int:
        return 2 * _fd_radius(order) + 1

    def stencils_1d(self, order: int, kernel_size: int, **params: Any) -> np.ndarray:
        out = np.zeros((order + 1, kernel_size))
        for n in range(order + 1):
            s = fd_stencil_1d(n)
            pad = (kernel_size - len(s)) // 2
            out[n, pad : pad + len(s)] = s
        return out


class GaussianDerivatives(DiscretizationBuilder):
    """``"gauss"``: products of sampled 1-D Gaussian derivatives (:func:`gaussian_stencil_1d`)."""

    separable = True
    uses_sigma = True

    def describe(self) -> str:
        return "Gaussian derivatives"

    def min_kernel_size(self, order: int, **params: Any) -> int:
        return 1 if order == 0 else 3

    def normalize(self, kernel_size: int, sigma: Any, params: Mapping[str, Any]) -> tuple[float | None, dict]:
        _, params = super().normalize(kernel_size, None, params)
        return (default_sigma(kernel_size) if sigma is None else _check_sigma(sigma)), params

    def stencils_1d(self, order: int, kernel_size: int, sigma: float = 1.0, **params: Any) -> np.ndarray:
        return np.stack([gaussian_stencil_1d(n, kernel_size, sigma) for n in range(order + 1)])


class RBFFD(DiscretizationBuilder):
    """``"rbf"``: RBF-FD with ``phi(r) = r^exponent`` and polynomials of degree ``poly_degree`` (see :mod:`.rbf`).

    Parameters: ``exponent`` m (odd, default 7; the derivative order must be < m) and ``poly_degree``
    (default ``k - 1``, the highest degree a k x k grid determines; at least the derivative order).
    """

    defaults = {"exponent": 7, "poly_degree": None}

    def describe(self) -> str:
        return "RBF-FD"

    def normalize(self, kernel_size: int, sigma: Any, params: Mapping[str, Any]) -> tuple[float | None, dict]:
        _, p = super().normalize(kernel_size, sigma, params)
        m = p["exponent"]
        if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or m < 1 or m % 2 == 0:
            raise ValueError(f"discretization 'rbf' needs an odd positive integer exponent, got exponent={m!r}")
        deg = kernel_size - 1 if p["poly_degree"] is None else p["poly_degree"]
        if isinstance(deg, (bool, np.bool_)) or not isinstance(deg, (int, np.integer)) or not 0 <= deg < kernel_size:
            raise ValueError(
                f"discretization 'rbf' with kernel_size={kernel_size} needs an integer poly_degree in "
                f"0..{kernel_size - 1}, got poly_degree={p['poly_degree']!r}"
            )
        return None, {"exponent": int(m), "poly_degree": int(deg)}

    def min_kernel_size(self, order: int, **params: Any) -> int:
        return order + 1 + order % 2  # the smallest odd k with k - 1 >= order

    def check_order(self, order: int, kernel_size: int, exponent: int = 7, poly_degree: int = 0, **params) -> None:
        super().check_order(order, kernel_size, exponent=exponent, poly_degree=poly_degree)
        if order > poly_degree:
            raise ValueError(
                f"RBF-FD of order {order} needs poly_degree >= {order}, got poly_degree={poly_degree} "
                f"(with kernel_size={kernel_size}; poly_degree is at most kernel_size - 1)"
            )
        if order >= exponent:
            raise ValueError(
                f"RBF-FD of order {order} needs an exponent > {order} (r^m must be {order} times differentiable "
                f"at 0), got exponent={exponent}"
            )

    def stencils_2d(self, order: int, kernel_size: int, exponent: int = 7, poly_degree: int = 0, **params):
        from .rbf import rbf_fd_stencils

        return rbf_fd_stencils(order, kernel_size, exponent, poly_degree)


register_discretization("fd", FiniteDifferences())
register_discretization("gauss", GaussianDerivatives())
register_discretization("rbf", RBFFD())
