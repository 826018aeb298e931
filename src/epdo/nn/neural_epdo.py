r"""Neural ePDOs (paper 000, He et al. 2022): PDOs whose coefficients are generated per pixel.

.. math:: \Psi[f](x) = \sum_{\alpha\in\Gamma_N} W_\alpha\big(f(x)\big)\, \partial^\alpha f(x),
          \qquad W(y) = W^2\,\mathrm{ReLU}(W^1 y + b^1) + b^2 .

The generator is a two-layer equivariant MLP applied pixel by pixel (1x1). Its hidden layer is ``c / r``
regular fields of the group (``c`` = number of input fields, ``r`` = ``reduction``), so the ReLU is
equivariant; :math:`W^1, W^2` are :class:`~epdo.nn.HomExpansion` intertwiners and the biases
:class:`~epdo.nn.FieldBias` terms on trivial components. Equivariance of :math:`\Psi` is exactly
equivariance of the generator with the output representations below (Props. 1-3):

- ``mode="diag"`` (Prop. 3; regular, quotient or trivial fields, ``out_type = in_type``): the coefficient
  matrices are diagonal, :math:`\Psi[f] = \sum_\alpha w_\alpha(f) \circ \partial^\alpha f`, and the
  generated vector :math:`\bar w = (w_{c,\alpha})`, channel-major, transforms as
  :math:`\rho\otimes\hat\rho(g^{-1})^\top` = ``rho.tensor(rho_hat.dual())``. Derivation: for a
  permutation :math:`P = \rho(g)`, :math:`(Pu)\circ(Pv) = P(u\circ v)`, and
  :math:`\partial^\alpha(g\cdot f) = \sum_\beta\hat\rho_{\alpha\beta}(g) P\,\partial^\beta f\circ g^{-1}`,
  so equivariance holds iff :math:`\bar W(Py)\hat\rho(g) = P\bar W(y)` for the ``c x |Gamma|`` matrix
  :math:`\bar W`, i.e. :math:`\mathrm{vec}\,\bar W(Py) = (P\otimes\hat\rho(g)^{-\top})\,\mathrm{vec}\,\bar W(y)`.
- ``mode="full"`` (Prop. 2; any fields of a finite group, irreps included): :math:`W(y)` is a
  ``C_out x (|Gamma| C_in)`` matrix with :math:`W(\rho(g)y)(\hat\rho(g)\otimes\rho(g)) = \rho'(g)W(y)`, so
  ``vec W`` (rows ``(o, alpha, i)``) transforms as :math:`\rho'\otimes\hat\rho^{*}\otimes\rho^{*}`; the Hom
  solver builds :math:`W^2` into it, one block per pair (output field, input field).

``partition=p`` (Sec. 5.1): the channels are ``p`` identical copies of a field list ``rho_0`` and the
generator produces the coefficients of one copy, shared by all ``p``. In ``diag`` mode channel ``c`` uses the
coefficients of channel ``c mod C/p``. In ``full`` mode the coefficient matrix is block diagonal with ``p``
equal blocks ``rho_0 -> rho_0'`` (the diagonal case is its special case; sharing whole rows instead would
make the ``p`` output copies identical).

Parameter count (generator weights :math:`W^1, W^2`; ``c`` fields of size ``n``, order ``N``,
:math:`|\Gamma_N| = (N+1)(N+2)/2`): since :math:`\dim\mathrm{Hom}_G(\rho_{reg}, V) = \dim V`,

- diag: :math:`c^2 n / r + c^2 (N+1)(N+2) n / (2 r p)` -- Table 1 of the paper exactly (regular or quotient
  fields of size n).
- full: :math:`c^2 n / r + c^3 (N+1)(N+2) n^2 / (2 r p^2)` for ``c`` regular fields in and out. Table 1 prints
  :math:`c^3 (N+1)(N+2) n / (2rp)`, which cannot be the size of an equivariant :math:`W^2` from
  ``c/r`` regular fields into :math:`\rho'\otimes\hat\rho^*\otimes\rho^*` (dimension
  :math:`c^2 n^2 |\Gamma|` for ``p = 1``): it drops a factor ``n`` (Table 1's own FLOP column,
  :math:`c^3 n^3 k^2 / (rp)`, has it), and with block-diagonal partitions the blocks are ``(c/p) n`` square, so
  ``p`` enters squared. See :func:`expected_num_params`.

Biases (``bias=True``, counted apart in :attr:`NeuralEPDO.num_bias_params`): one per hidden regular field
(``c / r``), plus one per trivial component of the coefficient representation (diag, regular fields:
:math:`|\Gamma_N|` per field of ``rho_0``; they form a learnable linear PDO added to the generated one).

Coefficient scaling: the generated coefficient of order :math:`|\alpha| = m` is multiplied by a fixed
:math:`\lambda_m = (|\Gamma_N|\,K\,\overline{\|s_\alpha\|^2})^{-1/2}` (mean squared stencil norm over the
orders-m stencils, ``K`` = 1 in diag mode, ``C_in / p`` in full mode), so that random weights give outputs
of unit variance on white-noise input. A factor constant on each derivative order commutes with
:math:`\hat\rho` (block diagonal by order), so this is an equivariant reparametrisation.

The diag-mode product runs in :func:`epdo.nn._epdo_kernels.generated_pdo_product` (the generator's last layer
fused in): separable stencils, no ``unfold`` patches, the derivative maps recomputed in backward instead of
stored, and an optional fused C++ kernel (``epdo build-ext`` compiles it once; ``backend="auto"`` then uses it
on CPU). Non-separable discretisations (e.g. RBF-FD), ``backend="dense"`` and empty batches take the dense
reference path: the 2-D stencils by ``conv2d``, then :math:`\sum_\alpha w_\alpha \circ \partial^\alpha f` by
plain autograd (as full mode), which the fast path is tested against. Under autocast the diag-mode product
runs in the input's dtype (float32 for float32 input; the kernels do not take mixed dtypes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..diffops import (Discretization, correlate, derivative_rep_torch, derivative_representation, multi_indices,
                       num_multi_indices)
from ..fields import FieldType
from ..groups import PlanarGroup, Representation
from ._epdo_kernels import BACKENDS, PDOStencils, generated_pdo_product
from .expansion import FieldBias, HomExpansion
from .nonlinearities import is_permutation_representation
from .pdo_base import PDOLayerBase, discretization_stencils_1d
from .sampling import (ElementSampler, Elements, attach_input_sampler, attached_input_sampler, input_elements,
                       interpolate_relative)

__all__ = ["NeuralEPDO", "expected_num_params"]

MODES = ("diag", "full")
#: Layer backends: the kernel backends, plus "dense" (the plain-autograd reference path, any discretisation).
LAYER_BACKENDS = tuple(BACKENDS) + ("dense",)


@lru_cache(maxsize=None)
def _diag_coefficient_rep(rep: Representation, order: int) -> Representation:
    """rho (x) rho_hat(g^-1)^T: the generated coefficients (channel, alpha) of one permutation field."""
    return rep.tensor(derivative_representation(rep.group, order).dual())


@lru_cache(maxsize=None)
def _full_coefficient_rep(rep_out: Representation, rep_in: Representation, order: int) -> Representation:
    """rho' (x) rho_hat^* (x) rho^*: the block of W(y) between one output and one input field, rows (o, alpha, i)."""
    rho_hat = derivative_representation(rep_out.group, order)
    return rep_out.tensor(rho_hat.dual().tensor(rep_in.dual()))


def _full_layout(out0: list[Representation], in0: list[Representation], n_alpha: int) -> np.ndarray:
    """Index map: generator output channel (field pair (o, i), then (o_ch, alpha, i_ch)) -> global (o, alpha, i)."""
    c_in = sum(r.size for r in in0)
    o_starts = np.cumsum([0] + [r.size for r in out0])
    i_starts = np.cumsum([0] + [r.size for r in in0])
    idx = []
    for fo, ro in enumerate(out0):
        for fi, ri in enumerate(in0):
            o = o_starts[fo] + np.arange(ro.size)[:, None, None]
            a = np.arange(n_alpha)[None, :, None]
            i = i_starts[fi] + np.arange(ri.size)[None, None, :]
            idx.append(((o * n_alpha + a) * c_in + i).reshape(-1))
    return np.concatenate(idx)


def expected_num_params(mode: str, c: int, order: int, n: int, reduction: int = 1, partition: int = 1) -> int:
    r"""Generator weight count for ``c`` regular fields of a group of order ``n`` (biases excluded).

    diag: :math:`c^2 n/r + c^2 (N+1)(N+2) n / (2rp)` (Table 1 of paper 000; also quotient fields of size n).
    full: :math:`c^2 n/r + c^3 (N+1)(N+2) n^2 / (2rp^2)` (Table 1 prints ``n`` for ``n^2`` and ``p`` for ``p^2``;
    see the module docstring).

    >>> expected_num_params("diag", c=8, order=4, n=16, reduction=2, partition=2)
    4352
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    n_alpha = num_multi_indices(order)
    first = c * c * n // reduction
    if mode == "diag":
        return first + c * c * n_alpha * n // (reduction * partition)
    return first + c**3 * n_alpha * n * n // (reduction * partition**2)


def order_scales(order: int, sq_norm: np.ndarray, fan: int = 1) -> np.ndarray:
    r"""``(|Gamma_N|,)``: :math:`\lambda_m = (|\Gamma_N|\,K\,\overline{\|s_\alpha\|^2})^{-1/2}` per multi-index, the
    mean taken over the stencils of the same order m (``sq_norm``: squared stencil norms, ``fan`` = K).

    >>> order_scales(1, np.array([1.0, 2.0, 2.0])).round(3).tolist()
    [0.577, 0.408, 0.408]
    """
    n_alpha = num_multi_indices(order)
    order_of = np.array([a + b for a, b in multi_indices(order)])
    lam = np.zeros(n_alpha)
    for m in range(order + 1):
        sel = order_of == m
        lam[sel] = 1.0 / np.sqrt(n_alpha * fan * sq_norm[sel].mean())
    return lam


class NeuralEPDO(PDOLayerBase):
    r"""Neural ePDO layer (see the module docstring for the maths and the parameter count).

    Args:
        in_type: input fields of a finite group (C_N or D_N).
        out_type: output fields; ``None`` = ``in_type`` (required in ``diag`` mode).
        order: truncation order N of Gamma_N (a non-negative int; bools are refused).
        kernel_size: odd stencil width k (default 5; >= 2 ceil(N/2) + 1 for finite differences).
        discretization: ``"fd"`` (finite differences), ``"gauss"`` (Gaussian derivatives; needs ``sigma``),
            another registered method, or an ``epdo.diffops.Discretization`` value; a non-separable one
            (RBF-FD) runs the dense path.
        reduction: r; the hidden layer has ``len(in_type) / r`` regular fields (r must divide the field count).
        partition: p; coefficients shared by p copies of the field list (p must divide it, and the field
            list must repeat with period ``len / p``; in ``full`` mode for in_type and out_type).
        mode: ``"diag"`` (Prop. 3, permutation fields) or ``"full"`` (Prop. 2, any fields).
        sigma: Gaussian width in pixels for ``"gauss"``.
        bias: biases in both generator layers (counted in :attr:`num_bias_params`).
        backend: diag-mode product: ``"auto"`` (default: the fused C++ kernel on CPU when ``epdo build-ext``
            has compiled it, else pure torch; the dense path for non-separable discretisations), ``"torch"``,
            ``"cpp"`` (compiles on first use; needs a C++ compiler) or ``"dense"`` (the reference path). All
            compute the same function (tested to float rounding). ``full`` mode runs the dense path.
        partial, in_elements: run on a learned subset of orientations (below); ``in_elements`` is the previous
            partial layer's ``sampler`` (default: all elements of the group).

    Shape: ``(B, in_type.size, H, W) -> (B, out_type.size, H, W)`` (zero padding, same size).

    Partial equivariance (``partial=True``; diag mode, regular fields of C_N / D_N): the input holds each field on
    the elements v of the previous layer's learned subset (``PDOConv(partial=True)``, Partial G-CNNs of paper 004),
    ``(B, C |S|, H, W)``, and the output lives on the same elements (diag mode maps a field to itself). The
    generator's intertwiners are read as functions of the relative element, :math:`W^1_{uv} = A(u^{-1}v)` and
    :math:`W^2_{uv} = D(M_u)^\top B(u^{-1}v)` (:math:`b^2_u = D(M_u)^\top b^2_e`): the expanded full-group
    weights at the identity row, interpolated in the relative angle between grid angles
    (:func:`~epdo.nn.sampling.interpolate_relative`), each sum over v weighted by the draw's quadrature weights.
    On all elements of the group (``in_elements`` None, or a partial sampler at theta = pi, probability 1, in eval
    mode) this is exactly the full layer; the learned subset, and its gradient, belong to the layer before
    (its output domain is this layer's domain). A layer with its own distribution needs a mix onto new elements:
    :class:`epdo.gconv.NeuralGroupPDO`.

    >>> from epdo import groups, fields, nn
    >>> G = groups.cyclic(4)
    >>> t = fields.FieldType(G, [G.regular] * 2)
    >>> layer = nn.NeuralEPDO(t, order=2, kernel_size=3, reduction=2, partition=2)
    >>> layer(torch.randn(1, 8, 9, 9)).shape
    torch.Size([1, 8, 9, 9])
    >>> layer.num_generator_params == expected_num_params("diag", c=2, order=2, n=4, reduction=2, partition=2)
    True
    """

    def __init__(self, in_type: FieldType, out_type: FieldType | None = None, order: int = 4,
                 kernel_size: int | None = None, discretization: str | Discretization = "fd", reduction: int = 1,
                 partition: int = 1, mode: str = "diag", sigma: float | None = None, bias: bool = True,
                 backend: str = "auto", *, partial: bool = False, in_elements: ElementSampler | None = None,
                 device=None, dtype=None):
        name = type(self).__name__
        if not isinstance(in_type, FieldType):
            raise TypeError(f"{name}: in_type must be an epdo.fields.FieldType, got {type(in_type).__name__}")
        out_type = in_type if out_type is None else out_type
        if not isinstance(out_type, FieldType):
            raise TypeError(f"{name}: out_type must be an epdo.fields.FieldType or None, got {type(out_type).__name__}")
        if mode not in MODES:
            raise ValueError(f"{name}: unknown mode {mode!r}; expected one of {MODES}")
        if backend not in LAYER_BACKENDS:
            raise ValueError(f"{name}: unknown backend {backend!r}; expected one of {LAYER_BACKENDS}")
        super().__init__(in_type, out_type, order, kernel_size, discretization, sigma, device, dtype)
        if backend in ("torch", "cpp") and mode == "diag" and not self.separable:
            raise ValueError(f"{name}: backend={backend!r} needs a separable discretisation (1-D stencils), got "
                             f"{self.disc!r}; use backend='auto' or 'dense'")
        group = in_type.group
        if not group.is_finite:
            raise ValueError(f"{name}: the generator's hidden layer is made of regular fields, which needs a finite "
                             f"group (C_N or D_N), got {group.name}")
        c = len(in_type)
        for what, v in (("reduction", reduction), ("partition", partition)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1 or c % v:
                raise ValueError(f"{name}: {what} must be a positive integer dividing the number of input fields "
                                 f"({c}), got {v!r}")
        in_reps = list(in_type)
        out_reps = list(out_type)
        if mode == "diag":
            if out_type != in_type:
                raise ValueError(f"{name}: mode='diag' maps a field type to itself (Prop. 3): out_type must equal "
                                 f"in_type {in_type}, got {out_type}; use mode='full' or a PointwiseLinear after it")
            for i, r in enumerate(in_reps):
                if not is_permutation_representation(r):
                    raise ValueError(f"{name}: mode='diag' needs permutation fields (regular, quotient, trivial; "
                                     f"Prop. 3), field {i} of {in_type} is {r}; use mode='full'")
        else:
            if len(out_type) % partition:
                raise ValueError(f"{name}: partition={partition} must divide the number of output fields "
                                 f"({len(out_type)})")
        self._check_periodic(in_reps, partition, "in_type")
        if mode == "full":
            self._check_periodic(out_reps, partition, "out_type")
        self.mode, self.backend = mode, backend
        self.reduction, self.partition = int(reduction), int(partition)
        order, n_alpha, fk = self.order, self.n_alpha, self._fk

        hidden = [group.regular] * (c // self.reduction)
        in0 = in_reps[: c // self.partition]
        self.generator1 = HomExpansion(in_reps, hidden, **fk)
        self.bias1 = FieldBias(hidden, **fk) if bias else None
        if self.separable:
            s1 = discretization_stencils_1d(order, self.disc)
            sq_norm = np.array([(s1[a] ** 2).sum() * (s1[b] ** 2).sum() for a, b in multi_indices(order)])
            self._stencils = PDOStencils(s1, multi_indices(order))
        else:
            sq_norm = (self.constant_float64("stencils").numpy() ** 2).sum((1, 2))
            self._stencils = None  # no 1-D factors: the dense path
        if mode == "diag":
            coef_reps = [_diag_coefficient_rep(r, order) for r in in0]
            fan = 1
            self.c0_in = self.c0_out = sum(r.size for r in in0)
            alpha_of_row = np.tile(np.arange(n_alpha), self.c0_in)
            perm = None
        else:
            out0 = out_reps[: len(out_reps) // self.partition]
            coef_reps = [_full_coefficient_rep(ro, ri, order) for ro in out0 for ri in in0]
            self.c0_in = sum(r.size for r in in0)
            self.c0_out = sum(r.size for r in out0)
            fan = self.c0_in
            perm = np.argsort(_full_layout(out0, in0, n_alpha))  # row of generator output for each (o, alpha, i)
            alpha_of_row = np.tile(np.repeat(np.arange(n_alpha), self.c0_in), self.c0_out)
        self.generator2 = HomExpansion(hidden, coef_reps, **fk)
        self.bias2 = FieldBias(coef_reps, **fk) if bias else None
        lam = order_scales(order, sq_norm, fan)
        self.register_constant("_row_scale", lam[alpha_of_row], **fk)
        self.register_buffer("_perm", None if perm is None else torch.as_tensor(perm), persistent=False)
        self.partial = self._setup_partial(partial, in_elements)
        self.reset_parameters()

    def _setup_partial(self, partial: bool, in_elements) -> bool:
        who = "NeuralEPDO(partial=True)"
        if not isinstance(partial, bool):
            raise TypeError(f"NeuralEPDO: partial must be a bool, got {partial!r}")
        if not partial:
            if in_elements is not None:
                raise ValueError("NeuralEPDO: in_elements is an argument of partial layers (partial=True)")
            return False
        G = self.in_type.group
        if self.mode != "diag":
            raise ValueError(f"{who}: needs mode='diag' (the output lives on the input's elements), got {self.mode!r}")
        if not isinstance(G, PlanarGroup) or any(r != G.regular for r in self.in_type):
            raise ValueError(f"{who}: needs regular fields of C_N or D_N, got {self.in_type}")
        if G.elements[0] != G.identity:
            raise AssertionError(f"{G.name}: the first element is not the identity")
        attach_input_sampler(self, in_elements, G, who)
        return True

    @property
    def input_sampler(self) -> ElementSampler | None:
        """Partial layers: the sampler of the elements the fields live on (else None)."""
        if not getattr(self, "partial", False):
            return None
        return attached_input_sampler(self)

    def partial_generator_weights(self, v: Elements) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                                                               torch.Tensor | None]:
        """``(W1, b1, W2, b2)`` of a partial layer on the elements ``v`` (class docstring), as matrices
        ``(K |S|, C |S|)``, ``(C_0 |S| |Gamma|, K |S|)`` with rows ``((c, u), alpha)``."""
        G = self.in_type.group
        n, S, na = G.order, len(v), self.n_alpha
        w1, b1, w2, b2 = self.generator_weights()
        k, c, c0 = w1.shape[0] // n, w1.shape[1] // n, w2.shape[0] // (n * na)
        q = v.weight.to(w1.dtype)
        a = interpolate_relative(w1.view(k, n, c, n)[:, 0], v, v, G)  # (k, c, S, S): A(v_i^-1 v_j)
        w1p = (a * q).permute(0, 2, 1, 3).reshape(k * S, c * S)
        b1p = None if b1 is None else b1.view(k, n)[:, :1].expand(k, S).reshape(-1)
        D = derivative_rep_torch(v.matrices().to(w1.dtype), self.order)  # D(M_v) = rho_hat(v^-1)
        bm = interpolate_relative(w2.view(c0, n, na, k, n)[:, 0], v, v, G)  # (c0, alpha, k, S, S)
        w2p = torch.einsum("iba,cbkij,j->ciakj", D, bm, q).reshape(c0 * S * na, k * S)
        b2p = None if b2 is None else torch.einsum("iba,cb->cia", D, b2.view(c0, n, na)[:, 0]).reshape(-1)
        return w1p, b1p, w2p, b2p

    def _partial_forward(self, x: torch.Tensor) -> torch.Tensor:
        v = input_elements(self.input_sampler, False, "NeuralEPDO(partial=True)")
        c, S = len(self.in_type), len(v)
        self.check_input(x, c * S, f"{self.in_type} on {S} elements")
        x = x.contiguous()
        w1, b1, w2, b2 = self.cast_like(x, *self.partial_generator_weights(v))
        h = F.relu(F.conv2d(x, w1[:, :, None, None], b1))
        b_, _, hh, ww = x.shape
        if self._stencils is not None and self.backend != "dense" and x.numel():
            h, w2, b2 = self.cast_like(x, h, w2, b2)
            with torch.autocast(x.device.type, enabled=False):
                return generated_pdo_product(x, h, w2, b2, self._stencils, self.backend)
        c0 = w2.shape[0] // self.n_alpha
        d = correlate(x, self.stencils).view(b_, self.partition, c0, self.n_alpha, hh, ww)
        coef = F.conv2d(h, w2[:, :, None, None], b2).view(b_, 1, c0, self.n_alpha, hh, ww)
        return (d * coef).sum(3).reshape(b_, c * S, hh, ww)

    @staticmethod
    def _check_periodic(reps: list[Representation], partition: int, what: str) -> None:
        period = len(reps) // partition
        for i, r in enumerate(reps):
            if r != reps[i % period]:
                raise ValueError(f"NeuralEPDO: partition={partition} needs {what} to be {partition} copies of its first "
                                 f"{period} fields; field {i} is {r}, field {i % period} is {reps[i % period]}")

    # --- parameters -----------------------------------------------------------------------------
    def _init_groups(self):
        """Weights N(0, 1) in the Hom bases, rescaled so that the expanded W1 has mean squared row norm 2
        (He gain for the ReLU) and W2 mean squared row norm 1."""
        return [(self.generator1, self.generator1, 2.0), (self.generator2, self.generator2, 1.0)]

    @property
    def num_generator_params(self) -> int:
        """Weights of W1 and W2 (the count of Table 1)."""
        return self.generator1.num_params + self.generator2.num_params

    @property
    def num_bias_params(self) -> int:
        return sum(b.num_params for b in (self.bias1, self.bias2) if b is not None)

    def _expand(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        w1 = self.generator1()
        b1 = None if self.bias1 is None else self.bias1()
        w2 = self.generator2()
        b2 = None if self.bias2 is None else self.bias2()
        if self._perm is not None:
            w2 = w2[self._perm]
            b2 = None if b2 is None else b2[self._perm]
        w2 = w2 * self._row_scale[:, None]
        b2 = None if b2 is None else b2 * self._row_scale
        return w1, b1, w2, b2

    def generator_weights(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``(W1, b1, W2, b2)`` expanded (cached where no weight gradient is needed, rebuilt when they change)."""
        return self.expanded_weights()

    # --- forward --------------------------------------------------------------------------------
    def _weights_for(self, x: torch.Tensor):
        return self.cast_like(x, *self.generator_weights())

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """The generated per-pixel coefficients (times the per-order scale), for inspection: diag
        ``(B, C/p, |Gamma|, H, W)``; full ``(B, C_out/p, |Gamma|, C_in/p, H, W)``."""
        self.check_input(x)
        w1, b1, w2, b2 = self._weights_for(x)
        h = F.relu(F.conv2d(x, w1[:, :, None, None], b1))
        w = F.conv2d(h, w2[:, :, None, None], b2)
        b_, _, hh, ww = x.shape
        if self.mode == "diag":
            return w.view(b_, self.c0_in, self.n_alpha, hh, ww)
        return w.view(b_, self.c0_out, self.n_alpha, self.c0_in, hh, ww)

    def uses_dense_path(self, x: torch.Tensor) -> bool:
        """True when this input runs the dense reference path (full mode, backend "dense", a non-separable
        discretisation, or an empty tensor)."""
        return self.mode == "full" or self.backend == "dense" or self._stencils is None or x.numel() == 0

    def _derivatives(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\partial^\\alpha f` of every channel by the 2-D stencils: ``(B, p, C/p, |Gamma|, H, W)``."""
        b_, c, hh, ww = x.shape
        d = correlate(x, self.stencils)  # epdo.diffops: the one owner of stencil application (zero padding)
        return d.view(b_, self.partition, self.c0_in, self.n_alpha, hh, ww)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.partial:
            return self._partial_forward(x)
        self.check_input(x)
        x = x.contiguous()
        w1, b1, w2, b2 = self._weights_for(x)
        h = F.relu(F.conv2d(x, w1[:, :, None, None], b1))
        b_, c, hh, ww = x.shape
        if not self.uses_dense_path(x):
            # the kernels take one dtype: under autocast h comes back in the low precision, run in x's dtype
            h, w2, b2 = self.cast_like(x, h, w2, b2)
            with torch.autocast(x.device.type, enabled=False):
                return generated_pdo_product(x, h, w2, b2, self._stencils, self.backend)
        d = self._derivatives(x)
        if self.mode == "diag":
            coef = F.conv2d(h, w2[:, :, None, None], b2).view(b_, 1, self.c0_in, self.n_alpha, hh, ww)
            return (d * coef).sum(3).reshape(b_, c, hh, ww)
        coef = F.conv2d(h, w2[:, :, None, None], b2).view(b_, self.c0_out, self.n_alpha, self.c0_in, hh, ww)
        out = torch.einsum("boaihw,bpiahw->bpohw", coef, d)
        return out.reshape(b_, self.out_type.size, hh, ww)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", reduction={self.reduction}, partition={self.partition}, mode={self.mode!r}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s + (", partial=True" if self.partial else "")
