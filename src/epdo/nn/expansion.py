r"""Learnable equivariant matrices: parameters -> W in Hom_G(rho_in, rho_out), field block by field block.

For every distinct pair (input representation, output representation) the fields of that pair share one
:class:`~epdo.groups.intertwiners.HomStructure`; the parameters of the pair are a tensor
``(n_out_fields, n_in_fields, n_params)`` and expand as :math:`W = Q_{out} M(w) Q_{in}^{-1}` (no dense basis
is ever stored, so even D16 fields with order-4 PDOs build in milliseconds).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..groups import Representation
from ..groups.intertwiners import hom_structure

__all__ = ["HomExpansion", "FieldBias"]


def _channel_index(reps: Sequence[Representation], fields: Sequence[int]) -> np.ndarray:
    starts = np.cumsum([0] + [r.size for r in reps])
    return np.concatenate([np.arange(starts[f], starts[f + 1]) for f in fields])


class HomExpansion(nn.Module):
    """Parameters of an equivariant linear map between two lists of field representations.

    ``forward()`` returns W of shape ``(sum d_out, sum d_in)`` with ``W rho_in(g) = rho_out(g) W``.
    """

    def __init__(self, in_reps: Sequence[Representation], out_reps: Sequence[Representation],
                 device=None, dtype=None):
        super().__init__()
        self.in_size = sum(r.size for r in in_reps)
        self.out_size = sum(r.size for r in out_reps)
        self.weights = nn.ParameterList()
        self._blocks: list[dict] = []
        uniq_in = list(dict.fromkeys(in_reps))
        uniq_out = list(dict.fromkeys(out_reps))
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        for ro in uniq_out:
            out_fields = [i for i, r in enumerate(out_reps) if r == ro]
            for ri in uniq_in:
                s = hom_structure(ri, ro)
                if s.n_params == 0:
                    continue
                in_fields = [i for i, r in enumerate(in_reps) if r == ri]
                k = len(self._blocks)
                self.weights.append(nn.Parameter(torch.empty(len(out_fields), len(in_fields), s.n_params, **fk)))
                self.register_buffer(f"_q_out{k}", torch.tensor(s.q_out, **fk), persistent=False)
                self.register_buffer(f"_q_in_inv{k}", torch.tensor(s.q_in_inv, **fk), persistent=False)
                self.register_buffer(f"_val{k}", torch.tensor(s.value, **fk), persistent=False)
                self.register_buffer(f"_scale{k}", torch.ones(s.n_params, **fk), persistent=False)
                self._blocks.append(dict(rho_in=ri, rho_out=ro, param=torch.as_tensor(s.param), row=torch.as_tensor(s.row),
                                         col=torch.as_tensor(s.col), d_out=ro.size, d_in=ri.size,
                                         rows=torch.as_tensor(_channel_index(out_reps, out_fields)),
                                         cols=torch.as_tensor(_channel_index(in_reps, in_fields))))
        self.reset_parameters()

    @property
    def num_params(self) -> int:
        return sum(w.numel() for w in self.weights)

    def reset_parameters(self) -> None:
        for w in self.weights:
            nn.init.normal_(w)

    def block_scales(self) -> list[tuple[Representation, Representation, torch.Tensor]]:
        """For each parameter block: (rho_in, rho_out, its per-parameter scale buffer).

        Layers use the scales to normalise basis elements (e.g. PDOConv: unit-norm discretised filters).
        """
        return [(b["rho_in"], b["rho_out"], getattr(self, f"_scale{k}")) for k, b in enumerate(self._blocks)]

    def forward(self) -> torch.Tensor:
        """W in the parameters' dtype; autocast is disabled here (the expansion is cheap, keep it exact)."""
        ref = self.weights[0] if len(self.weights) else None
        device_type = "cpu" if ref is None else ref.device.type
        with torch.autocast(device_type, enabled=False):
            return self._expand(ref)

    def _expand(self, ref: torch.Tensor | None) -> torch.Tensor:
        out = torch.zeros(self.out_size, self.in_size, device=None if ref is None else ref.device,
                          dtype=None if ref is None else ref.dtype)
        for k, (w, b) in enumerate(zip(self.weights, self._blocks)):
            no, ni, _ = w.shape
            m = w.new_zeros(no, ni, b["d_out"], b["d_in"])
            w = w * getattr(self, f"_scale{k}")
            m[:, :, b["row"], b["col"]] = w[:, :, b["param"]] * getattr(self, f"_val{k}")
            full = getattr(self, f"_q_out{k}") @ m @ getattr(self, f"_q_in_inv{k}")
            block = full.permute(0, 2, 1, 3).reshape(no * b["d_out"], ni * b["d_in"])
            if len(self._blocks) == 1 and no * b["d_out"] == self.out_size and ni * b["d_in"] == self.in_size \
                    and _is_identity(b["rows"]) and _is_identity(b["cols"]):
                return block
            out = out.index_put((b["rows"][:, None], b["cols"][None, :]), block)
        return out


def _is_identity(idx: torch.Tensor) -> bool:
    return bool(torch.equal(idx, torch.arange(len(idx))))


class FieldBias(nn.Module):
    """A bias that is constant on the trivial-irrep components of the output fields, zero elsewhere.

    Only components transforming trivially can carry a bias without breaking equivariance.
    """

    def __init__(self, reps: Sequence[Representation], device=None, dtype=None):
        super().__init__()
        cols, embed = [], []
        start = 0
        for r in reps:
            q = r.change_of_basis
            for psi, sl in r.irrep_slices():
                if psi == (0, 0):
                    v = np.zeros(sum(x.size for x in reps))
                    v[start : start + r.size] = q[:, sl.start]
                    embed.append(v)
            start += r.size
        self.num_params = len(embed)
        fk = dict(device=device, dtype=dtype or torch.get_default_dtype())
        self.bias = nn.Parameter(torch.zeros(len(embed), **fk)) if embed else None
        if embed:
            self.register_buffer("_embed", torch.tensor(np.stack(embed, 1), **fk), persistent=False)

    def forward(self) -> torch.Tensor | None:
        return None if self.bias is None else self._embed @ self.bias
