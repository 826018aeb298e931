r"""Graphs on point clouds: radius and k-nearest-neighbour graphs, batched, in pure torch.

An edge index is a ``(2, E)`` int64 tensor; column ``(j, i)`` is the edge from the *source* j to the
*target* i, so a message :math:`m_{ij}` computed on it is summed into node i (PyG's ``source_to_target``).
A batch vector ``(N,)`` assigns every node to its graph (sorted or not); edges never cross graphs.

Distances are computed block by block (``block`` target nodes at a time, O(N^2) work, O(block N)
memory). When ``torch_cluster`` is installed and ``backend="auto"``, :func:`radius_graph` and
:func:`knn_graph` use it on CUDA tensors only (the CPU results are the same, see tests/graph).

>>> import torch
>>> from epdo.graph import radius_graph
>>> pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
>>> radius_graph(pos, 1.5).tolist()     # nodes 0 and 1 are within 1.5 of each other
[[1, 0], [0, 1]]
"""

from __future__ import annotations

import torch

__all__ = ["radius_graph", "knn_graph", "fully_connected_graph", "check_positions", "check_edge_index",
           "check_batch", "GraphError"]


class GraphError(ValueError):
    """Bad graph input (positions, edge index, batch vector, features): the message names expected and received."""


def check_positions(pos, who: str = "positions", dim: int = 3) -> None:
    """Raise :class:`GraphError` unless ``pos`` is a finite floating ``(N, dim)`` tensor with N >= 1."""
    if not isinstance(pos, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor of shape (N, {dim}), got {type(pos).__name__}")
    if pos.dim() != 2 or pos.shape[1] != dim:
        raise GraphError(f"{who}: expected a tensor of shape (N, {dim}), got shape {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"{who}: expected a floating tensor of shape (N, {dim}), got dtype {pos.dtype}")
    if pos.shape[0] == 0:
        raise GraphError(f"{who}: empty graph: expected at least one node, got shape {tuple(pos.shape)}")
    bad = ~torch.isfinite(pos).all(dim=1)
    if bool(bad.any()):
        idx = bad.nonzero().flatten()[:5].tolist()
        raise GraphError(f"{who}: expected finite positions, got NaN or inf at node(s) {idx} "
                         f"({int(bad.sum())} of {pos.shape[0]})")


def check_edge_index(edge_index, num_nodes: int, who: str = "edge_index") -> None:
    """Raise :class:`GraphError` unless ``edge_index`` is an int64 ``(2, E)`` tensor with entries in [0, N)."""
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"{who}: expected an int64 torch.Tensor of shape (2, E), got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise GraphError(f"{who}: expected a tensor of shape (2, E), got shape {tuple(edge_index.shape)}")
    if edge_index.dtype != torch.int64:
        raise TypeError(f"{who}: expected dtype torch.int64, got {edge_index.dtype}")
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise GraphError(f"{who}: node indices must lie in [0, {num_nodes}) for {num_nodes} nodes, "
                             f"got entries in [{lo}, {hi}]")


def check_batch(batch, num_nodes: int, who: str = "batch") -> torch.Tensor:
    """The batch vector (zeros when None); :class:`GraphError` unless it is int64 ``(N,)`` and non-negative."""
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.int64)
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.int64 or batch.shape != (num_nodes,):
        got = f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise GraphError(f"{who}: expected an int64 tensor of shape ({num_nodes},), got {got}")
    if num_nodes and int(batch.min()) < 0:
        raise GraphError(f"{who}: graph ids must be >= 0, got {int(batch.min())}")
    return batch


def _cluster():
    try:
        import torch_cluster
    except ImportError:
        return None
    return torch_cluster


def _blocks(pos: torch.Tensor, batch: torch.Tensor, loop: bool, block: int):
    """Yield (targets, d2) with d2 (len(targets), N) squared distances, inf across graphs (and on the
    diagonal unless ``loop``)."""
    n = pos.shape[0]
    for start in range(0, n, block):
        tgt = torch.arange(start, min(start + block, n), device=pos.device)
        d2 = (pos[tgt, None, :] - pos[None, :, :]).pow(2).sum(-1)
        mask = batch[tgt, None] != batch[None, :]
        if not loop:
            mask[torch.arange(len(tgt), device=pos.device), tgt] = True
        yield tgt, d2.masked_fill(mask, float("inf"))


def radius_graph(pos: torch.Tensor, r: float, batch: torch.Tensor | None = None, loop: bool = False,
                 max_num_neighbors: int | None = None, block: int = 1024, backend: str = "auto") -> torch.Tensor:
    r"""Edges (j -> i) for every pair with :math:`\|x_i - x_j\| \le r` in the same graph.

    ``max_num_neighbors``: keep only the nearest ones per target (ties by index). Edges are sorted by
    target, then source. ``backend``: "torch", or "auto" (torch_cluster on CUDA when installed).
    """
    check_positions(pos)
    batch = check_batch(batch, pos.shape[0]).to(pos.device)
    if not r > 0:
        raise GraphError(f"radius_graph: expected a radius r > 0, got {r!r}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"radius_graph: backend must be 'auto' or 'torch', got {backend!r}")
    tc = _cluster() if backend == "auto" and pos.is_cuda and max_num_neighbors is None else None
    if tc is not None:  # pragma: no cover - CUDA only
        ei = tc.radius_graph(pos, r, batch, loop=loop, max_num_neighbors=pos.shape[0])
        return _sort(ei, pos.shape[0])
    rows, cols = [], []
    for tgt, d2 in _blocks(pos, batch, loop, block):
        if max_num_neighbors is not None:
            k = min(int(max_num_neighbors), d2.shape[1])
            val, src = d2.topk(k, dim=1, largest=False, sorted=True)
            keep = val <= r * r
            rows.append(src[keep])
            cols.append(tgt[:, None].expand_as(src)[keep])
        else:
            ti, src = (d2 <= r * r).nonzero(as_tuple=True)
            rows.append(src)
            cols.append(tgt[ti])
    return _sort(torch.stack([torch.cat(rows), torch.cat(cols)]), pos.shape[0])


def knn_graph(pos: torch.Tensor, k: int, batch: torch.Tensor | None = None, loop: bool = False,
              block: int = 1024, backend: str = "auto") -> torch.Tensor:
    """Edges (j -> i) from the ``k`` nearest nodes j of every node i in its graph (fewer where the graph is
    smaller); sorted by target, then source."""
    check_positions(pos)
    batch = check_batch(batch, pos.shape[0]).to(pos.device)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GraphError(f"knn_graph: expected a positive integer k, got {k!r}")
    tc = _cluster() if backend == "auto" and pos.is_cuda else None
    if tc is not None:  # pragma: no cover - CUDA only
        return _sort(tc.knn_graph(pos, k, batch, loop=loop), pos.shape[0])
    rows, cols = [], []
    for tgt, d2 in _blocks(pos, batch, loop, block):
        kk = min(k, d2.shape[1])
        val, src = d2.topk(kk, dim=1, largest=False, sorted=True)
        keep = torch.isfinite(val)
        rows.append(src[keep])
        cols.append(tgt[:, None].expand_as(src)[keep])
    return _sort(torch.stack([torch.cat(rows), torch.cat(cols)]), pos.shape[0])


def fully_connected_graph(batch: torch.Tensor | int, loop: bool = False) -> torch.Tensor:
    """All edges j -> i (i != j unless ``loop``) within each graph of ``batch`` (a batch vector, or N for
    one graph of N nodes)."""
    if isinstance(batch, int):
        batch = torch.zeros(batch, dtype=torch.int64)
    batch = check_batch(batch, batch.shape[0] if isinstance(batch, torch.Tensor) else -1)
    same = batch[:, None] == batch[None, :]
    if not loop:
        same.fill_diagonal_(False)
    tgt, src = same.nonzero(as_tuple=True)
    return torch.stack([src, tgt])


def _sort(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    key = edge_index[1] * n + edge_index[0]
    return edge_index[:, key.argsort()]
