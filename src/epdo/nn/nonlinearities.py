r"""Equivariant nonlinearities: pointwise ones for permutation fields, norm nonlinearities for any fields.

A pointwise function :math:`\sigma` applied channel by channel commutes with :math:`\rho(g)` exactly when
every :math:`\rho(g)` is a permutation matrix (regular and quotient representations, trivial fields):
:math:`\sigma(P f) = P \sigma(f)`. For other fields (irreps, rho_hat, ...) only functions of the invariant
norm of each field are equivariant; :class:`NormNonlinearity` rescales each field by such a function.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fields import FieldType
from ..groups import Representation
from .base import EquivariantModule

__all__ = ["ReLU", "ELU", "NormNonlinearity", "is_permutation_representation"]


@lru_cache(maxsize=None)
def is_permutation_representation(rep: Representation) -> bool:
    """True when every matrix rho(g) is a permutation matrix: :meth:`epdo.groups.Representation.is_permutation`,
    the one place that decides it (ReLU/ELU, pooling, FieldBatchNorm, NeuralEPDO diag, RestrictToRotations).

    >>> from epdo import groups
    >>> G = groups.dihedral(4)
    >>> is_permutation_representation(G.regular), is_permutation_representation(G.irrep(1, 1))
    (True, False)
    """
    return rep.is_permutation()


def require_permutation_fields(field_type: FieldType, who: str) -> None:
    """Raise ValueError naming the first field whose representation is not a permutation representation."""
    if not isinstance(field_type, FieldType):
        raise TypeError(f"{who}: in_type must be an epdo.fields.FieldType, got {type(field_type).__name__}")
    for i, r in enumerate(field_type.representations):
        if not is_permutation_representation(r):
            raise ValueError(
                f"{who} acts channel by channel and is equivariant only for fields whose representation "
                f"consists of permutation matrices (regular, quotient, trivial); field {i} of {field_type} is "
                f"{r}. Use NormNonlinearity (or GroupPool / AvgPool2d) for such fields")


class _PointwiseNonlinearity(EquivariantModule):
    def __init__(self, in_type: FieldType):
        require_permutation_fields(in_type, type(self).__name__)
        super().__init__(in_type, in_type)


class ReLU(_PointwiseNonlinearity):
    r"""Channel-wise ReLU on permutation fields (regular, quotient, trivial): :math:`y = \max(x, 0)`.

    Args:
        in_type: the field type; every representation must consist of permutation matrices (ValueError
            otherwise, e.g. for irreps).

    Shape:
        (B, in_type.size, H, W) -> same; any trailing spatial dims (e.g. (B, C, M) on a Ring).

    >>> from epdo import groups, fields
    >>> G = groups.cyclic(4)
    >>> m = ReLU(fields.FieldType(G, [G.regular]))
    >>> m(torch.tensor([-1.0, 2.0, -3.0, 4.0]).view(1, 4, 1, 1)).flatten().tolist()
    [0.0, 2.0, 0.0, 4.0]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.relu(x)


class ELU(_PointwiseNonlinearity):
    r"""Channel-wise ELU on permutation fields: :math:`y = x` for x > 0, :math:`\alpha(e^x - 1)` otherwise.

    Args:
        in_type: the field type (permutation representations only, ValueError otherwise).
        alpha: the ELU's :math:`\alpha` (default 1).

    Shape:
        (B, in_type.size, H, W) -> same; any trailing spatial dims (e.g. (B, C, M) on a Ring).
    """

    def __init__(self, in_type: FieldType, alpha: float = 1.0):
        super().__init__(in_type)
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return F.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.alpha == 1.0 else f", alpha={self.alpha}")


class NormNonlinearity(EquivariantModule):
    r"""A nonlinearity on the norm of each field, for fields of any representation.

    For a field :math:`f` with representation :math:`\rho = Q(\oplus_i\psi_i)Q^{-1}` let
    :math:`n = \|Q^{-1} f\|` (the Euclidean norm :math:`\|f\|` when :math:`\rho` is orthogonal); n is
    invariant under the group. With a learnable bias :math:`b` per field:

    .. math::
        \text{relu:}\quad y = f\,\frac{\max(n - b,\,0)}{n}, \qquad
        \text{sigmoid:}\quad y = f\,\mathrm{sigmoid}(n - b),

    where n is computed as :math:`\sqrt{\|Q^{-1}f\|^2 + \epsilon^2}`, :math:`\epsilon = 10^{-6}` (finite
    gradients at f = 0). The output has the same type as the input. Biases start at 0.1 for
    "relu" (so small fields are cut) and 0 for "sigmoid"; with ``bias=False``, b = 0 and is not learnt
    ("relu" then is the identity).

    Args:
        in_type: the field type (any representations).
        function: "relu" or "sigmoid".
        bias: learn one bias per field.
        device, dtype: of the bias parameter.

    Shape:
        (B, in_type.size, H, W) -> same; any trailing spatial dims (e.g. (B, C, M) on a Ring).

    >>> from epdo import groups, fields
    >>> G = groups.so2(2)
    >>> m = NormNonlinearity(fields.FieldType(G, [G.irrep(0, 1), G.irrep(0, 2)]), "sigmoid")
    >>> m(torch.randn(2, 4, 5, 5)).shape
    torch.Size([2, 4, 5, 5])
    """

    FUNCTIONS = ("relu", "sigmoid")
    EPS = 1e-6

    def __init__(self, in_type: FieldType, function: str = "relu", bias: bool = True, device=None, dtype=None):
        if function not in self.FUNCTIONS:
            raise ValueError(f"NormNonlinearity: function must be one of {self.FUNCTIONS}, got {function!r}")
        super().__init__(in_type, in_type)
        self.function = function
        n_fields = len(in_type)
        field_of_channel = np.concatenate([np.full(r.size, i) for i, r in enumerate(in_type.representations)])
        self.register_buffer("_field_index", torch.as_tensor(field_of_channel, dtype=torch.long), persistent=False)
        self.orthogonal = all(r.is_orthogonal for r in in_type.representations)
        if not self.orthogonal:
            qinv = np.zeros((in_type.size, in_type.size))
            for r, sl in zip(in_type.representations, in_type.slices()):
                qinv[sl, sl] = r.change_of_basis_inv
            self.register_buffer("_qinv", torch.tensor(qinv, device=device, dtype=dtype or torch.get_default_dtype()),
                                 persistent=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(n_fields, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.bias is not None:
            nn.init.constant_(self.bias, 0.1 if self.function == "relu" else 0.0)

    def field_norms(self, x: torch.Tensor) -> torch.Tensor:
        """The invariant norm sqrt(|Q^-1 f|^2 + eps^2) of every field, shape (B, n_fields, *spatial)."""
        z = x if self.orthogonal else torch.einsum("oc,bc...->bo...", self._qinv.to(x.dtype), x)
        sq = z.square()
        out = sq.new_zeros(sq.shape[0], len(self.in_type), *sq.shape[2:])
        out = out.index_add(1, self._field_index, sq)
        return (out + self.EPS**2).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        n = self.field_norms(x)
        shifted = n if self.bias is None else n - self.bias.view((1, -1) + (1,) * (x.dim() - 2))
        if self.function == "relu":
            scale = F.relu(shifted) / n
        else:
            scale = torch.sigmoid(shifted)
        return x * scale.index_select(1, self._field_index).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, function={self.function!r}, bias={self.bias is not None}"
