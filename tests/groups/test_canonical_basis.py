"""Hom bases are canonical: the same on every CPU, whatever basis of a null space LAPACK returns.

Stored weights are coefficients in these bases, so a basis that follows the BLAS kernel (OpenBLAS picks its
kernels by CPU) would make a checkpoint trained on one machine meaningless on another: the shipped
checkpoint gave 1.5 % error with AVX2 kernels and 89 % with AVX-512 ones before the bases were made
canonical.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from epdo import groups
from epdo.groups import hom_basis
from epdo.groups.group import _canonical_basis, _nullspace

_HASH_SCRIPT = r"""
import hashlib, numpy as np
from epdo import groups
from epdo.groups import hom_basis
parts = []
for G in (groups.cyclic(8), groups.dihedral(8), groups.octahedral()):
    reg = G.regular
    parts.append(hom_basis(reg, reg))
    parts += [hom_basis(reg, G.irrep(*i)) for i in G.irrep_ids()]
print(repr([np.asarray(p).tolist() for p in parts]))
"""


def _random_orthogonal(k: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    return q * np.sign(np.diag(r))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canonical_basis_ignores_the_basis_it_is_given(seed):
    # a subspace with many equal-norm projections (ties): the invariants of a permutation action, plus noise-free
    # structured vectors, as in the null spaces of regular representations
    n = 24
    vecs = np.stack([np.tile([1.0, -1.0, 0.0], 8), np.tile([1.0, 1.0, 1.0], 8), np.repeat([1.0, -1.0], 12),
                     np.eye(n)[5] - np.eye(n)[17]], axis=1)
    v, _ = np.linalg.qr(vecs)
    a = _canonical_basis(v)
    b = _canonical_basis(v @ _random_orthogonal(v.shape[1], seed))
    assert np.allclose(a.T @ a, np.eye(4), atol=1e-12)
    assert np.abs(a - b).max() <= 1e-12
    assert np.allclose(a @ a.T, v @ v.T, atol=1e-12)  # the same subspace


def test_nullspace_is_canonical_and_annihilated():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(5, 12))
    null = _nullspace(m)
    assert null.shape == (7, 12) and np.abs(m @ null.T).max() <= 1e-12
    rotated = _random_orthogonal(12, 4)  # the same null space written in other coordinates
    assert np.abs(_nullspace(m @ rotated.T) @ rotated - _canonical_basis((null @ rotated.T).T).T @ rotated).max() <= 1e-10
    assert _nullspace(np.zeros((0, 3))).shape == (3, 3)


def _openblas() -> bool:
    try:
        cfg = np.show_config(mode="dicts")
    except TypeError:  # numpy < 1.25
        return False
    return "openblas" in str(cfg.get("Build Dependencies", {}).get("blas", {})).lower()


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64" or not _openblas(),
                    reason="needs numpy with OpenBLAS on x86-64 Linux (OPENBLAS_CORETYPE selects its kernels)")
def test_hom_bases_do_not_depend_on_the_blas_kernel():
    """The same bases with OpenBLAS's Sandybridge (AVX) and Haswell (AVX2) kernels, to 1e-12."""
    out = []
    for core in ("Sandybridge", "Haswell"):
        env = {**os.environ, "OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": "1"}
        res = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        out.append([np.array(p) for p in eval(res.stdout)])
    for a, b in zip(*out):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-12


def test_in_process_bases_match_a_fresh_solve():
    """The cached basis of D8 regular -> regular spans the intertwiners and is orthonormal (Frobenius)."""
    G = groups.dihedral(8)
    b = hom_basis(G.regular, G.regular)
    flat = b.reshape(len(b), -1)
    gram = flat @ flat.T
    assert np.allclose(gram, np.diag(np.diag(gram)), atol=1e-10)
    for g in G.elements:
        r = G.regular(g)
        assert np.abs(np.einsum("ij,njk->nik", r, b) - np.einsum("nij,jk->nik", b, r)).max() <= 1e-10
