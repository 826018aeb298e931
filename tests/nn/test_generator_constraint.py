"""The Neural ePDO generator constraint, checked algebraically on every element of C16 and D16.

Paper [He 2023], Props. 2-3: the generated coefficients W(x) must transform so that the per-pixel PDO
``sum_alpha W_alpha(x) d^alpha f`` is equivariant. For a generator ``x -> W2 relu(W1 x)`` with regular hidden
fields this holds exactly when

- ``W1 rho_in(g) = rho_hid(g) W1``,
- diag (Prop. 3, permutation fields): ``W2 rho_hid(g) = (rho(g) (x) rho_hat(g^-1)^T) W2``, rows (channel, alpha);
- full (Prop. 2): ``W2 rho_hid(g) = (rho'(g) (x) rho_hat(g^-1)^T (x) rho(g^-1)^T) W2``, rows (o, alpha, i),

for every g, where ``rho_hat(g) = D(g^-1)`` (Lemma 1) and ``D`` is :func:`epdo.diffops.derivative_rep`. The
matrices on the right are built here from ``derivative_rep`` and Kronecker products of the fields' own
matrices, independently of the layer's Representation objects. The 16 rotations of C16 are multiples of 22.5
degrees, where ``D(g)`` is not orthogonal: unlike a 90-degree check, this tells rho_hat from its dual (tested).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epdo import fields, groups
from epdo.diffops import derivative_rep
from epdo.nn import NeuralEPDO


def _blockdiag(mats):
    n = sum(m.shape[0] for m in mats)
    out = np.zeros((n, n))
    i = 0
    for m in mats:
        out[i:i + m.shape[0], i:i + m.shape[0]] = m
        i += m.shape[0]
    return out


def _rho(reps, g):
    return _blockdiag([np.asarray(r(g)) for r in reps])


def _coef_rep(layer, g, dual: bool = True):
    """rho of the generated coefficients' rows, from derivative_rep and the fields' matrices only."""
    G = layer.in_type.group
    d = derivative_rep(g.matrix, layer.order).T if dual else derivative_rep(G.inverse(g).matrix, layer.order)
    in0 = list(layer.in_type)[: len(layer.in_type) // layer.partition]
    if layer.mode == "diag":
        return np.kron(_rho(in0, g), d)
    out0 = list(layer.out_type)[: len(layer.out_type) // layer.partition]
    return np.kron(np.kron(_rho(out0, g), d), _rho(in0, G.inverse(g)).T)


def _layer(G, mode, fields_kind):
    # full mode with two regular D16 fields decomposes a 6144-dim coefficient representation (minutes): there,
    # quotient fields of sizes 2 and 4 (D16/C8... or C16/C8, C16/C4) keep the test fast
    small = [G.quotient(G.subgroup(G.N // 2, G.reflections)), G.quotient(G.subgroup(G.N // 4, G.reflections))]
    if fields_kind == "uniform":
        reps = [G.regular] * 4 if mode == "diag" else small
    else:  # a quotient field and a regular one (twice: partition 2 shares one copy)
        reps = [small[0], G.regular] * 2 if mode == "diag" else small[::-1]
    t = fields.FieldType(G, reps)
    torch.manual_seed(0)
    return NeuralEPDO(t, order=2, kernel_size=3, reduction=2, partition=2 if mode == "diag" else 1, mode=mode,
                      backend="torch", dtype=torch.float64)


CASES = [(G, mode, kind) for G in (groups.cyclic(16), groups.dihedral(16)) for mode in ("diag", "full")
         for kind in ("uniform", "mixed")]


@pytest.mark.parametrize("G, mode, kind", CASES, ids=[f"{G.name}-{m}-{k}" for G, m, k in CASES])
def test_generator_constraint_on_every_element(G, mode, kind):
    layer = _layer(G, mode, kind)
    with torch.no_grad():
        w1, _, w2, _ = (None if t is None else t.numpy() for t in layer.generator_weights())
    hidden = [G.regular] * (len(layer.in_type) // layer.reduction)
    assert np.abs(w2).max() > 1e-3 and np.abs(w1).max() > 1e-3  # a zero generator would satisfy anything
    worst1 = worst2 = 0.0
    for g in G.elements:
        r_hid = _rho(hidden, g)
        worst1 = max(worst1, np.abs(w1 @ _rho(list(layer.in_type), g) - r_hid @ w1).max())
        worst2 = max(worst2, np.abs(w2 @ r_hid - _coef_rep(layer, g) @ w2).max())
    assert worst1 < 1e-10 * np.abs(w1).max() and worst2 < 1e-10 * np.abs(w2).max(), (worst1, worst2)


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_the_check_tells_rho_hat_from_its_dual(mode):
    """With rho_hat(g) in place of rho_hat(g^-1)^T the constraint still holds at multiples of 90 degrees (there
    D(g) is a signed permutation, orthogonal) but fails at 22.5 degrees: the test above can fail."""
    G = groups.cyclic(16)
    layer = _layer(G, mode, "uniform")
    with torch.no_grad():
        _, _, w2, _ = (None if t is None else t.numpy() for t in layer.generator_weights())
    hidden = [G.regular] * (len(layer.in_type) // layer.reduction)

    def err(g):
        return np.abs(w2 @ _rho(hidden, g) - _coef_rep(layer, g, dual=False) @ w2).max() / np.abs(w2).max()

    assert err(G.element(0, 4)) < 1e-10  # 90 degrees
    assert err(G.element(0, 1)) > 1e-2   # 22.5 degrees
