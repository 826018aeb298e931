"""Graph construction against brute force (and torch_cluster when installed), the point-cloud domains as
values, and bad input: clear errors naming expected and received."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import epdo
from epdo import graph
from epdo.graph import GraphError, PointCloud, PositionOrientationCloud

e3nn = pytest.importorskip("e3nn") if os.environ.get("CI") != "true" else __import__("e3nn")


def _brute(pos, batch, keep):
    """Edges (j, i) with keep(i, j) by a double loop, sorted by target then source."""
    out = [(j, i) for i in range(len(pos)) for j in range(len(pos)) if batch[i] == batch[j] and keep(i, j)]
    return torch.tensor(out, dtype=torch.int64).T.reshape(2, -1)


@pytest.mark.parametrize("block", [3, 1024])
def test_radius_graph_matches_brute_force(block):
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    batch = torch.randint(0, 3, (40,), generator=gen)
    ei = graph.radius_graph(pos, 1.0, batch, block=block)
    d = torch.cdist(pos, pos)
    assert torch.equal(ei, _brute(pos, batch, lambda i, j: i != j and d[i, j] <= 1.0))
    loops = graph.radius_graph(pos, 1.0, batch, loop=True, block=block)
    assert loops.shape[1] == ei.shape[1] + 40
    capped = graph.radius_graph(pos, 1.5, batch, max_num_neighbors=2, block=block)
    deg = torch.bincount(capped[1], minlength=40)
    full = graph.radius_graph(pos, 1.5, batch)
    assert (deg <= 2).all() and torch.equal(deg, torch.bincount(full[1], minlength=40).clamp(max=2))


def test_knn_and_fully_connected_graphs():
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    batch = torch.arange(3).repeat_interleave(torch.tensor([12, 15, 3]))
    ei = graph.knn_graph(pos, 4, batch, block=7)
    d = torch.cdist(pos, pos) + torch.where(batch[:, None] == batch[None, :], 0.0, float("inf"))
    d.fill_diagonal_(float("inf"))
    for i in range(30):
        want = sorted(d[i].topk(min(4, int((batch == batch[i]).sum()) - 1), largest=False).indices.tolist())
        assert sorted(ei[0, ei[1] == i].tolist()) == want
    fc = graph.fully_connected_graph(batch)
    assert torch.equal(fc, _brute(pos, batch, lambda i, j: i != j))
    assert graph.fully_connected_graph(3).tolist() == [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]


def test_torch_cluster_agrees_when_installed():
    tc = pytest.importorskip("torch_cluster", reason="torch_cluster is not installed (optional)")
    pos = torch.randn(50, 3, generator=torch.Generator().manual_seed(2))
    batch = torch.arange(2).repeat_interleave(25)
    ours = graph.radius_graph(pos, 0.9, batch, backend="torch")
    theirs = graph.construction._sort(tc.radius_graph(pos, 0.9, batch, max_num_neighbors=50), 50)
    assert torch.equal(ours, theirs)
    ours = graph.knn_graph(pos, 5, batch, backend="torch")
    assert torch.equal(ours, graph.construction._sort(tc.knn_graph(pos, 5, batch), 50))


def test_bad_input_names_expected_and_received():
    with pytest.raises(GraphError, match=r"expected a tensor of shape \(N, 3\), got shape \(5, 2\)"):
        graph.radius_graph(torch.zeros(5, 2), 1.0)
    with pytest.raises(GraphError, match=r"empty graph: expected at least one node, got shape \(0, 3\)"):
        graph.knn_graph(torch.zeros(0, 3), 2)
    pos = torch.randn(4, 3)
    pos[2, 1] = float("nan")
    with pytest.raises(GraphError, match=r"expected finite positions, got NaN or inf at node\(s\) \[2\]"):
        graph.radius_graph(pos, 1.0)
    with pytest.raises(TypeError, match="floating"):
        graph.check_positions(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(GraphError, match=r"must lie in \[0, 4\) for 4 nodes, got entries in \[0, 7\]"):
        graph.check_edge_index(torch.tensor([[0, 7], [1, 2]]), 4)
    with pytest.raises(GraphError, match=r"expected a tensor of shape \(2, E\), got shape \(3, 2\)"):
        graph.check_edge_index(torch.zeros(3, 2, dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="expected dtype torch.int64, got torch.int32"):
        graph.check_edge_index(torch.zeros(2, 2, dtype=torch.int32), 4)
    with pytest.raises(GraphError, match=r"expected an int64 tensor of shape \(4,\), got torch.int64 \(3,\)"):
        graph.radius_graph(torch.randn(4, 3), 1.0, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(GraphError, match="expected a radius r > 0, got -1"):
        graph.radius_graph(torch.randn(4, 3), -1)
    with pytest.raises(GraphError, match="expected a positive integer k, got 0"):
        graph.knn_graph(torch.randn(4, 3), 0)


def test_domains_are_values_and_check_signals():
    for d in (PointCloud(), PositionOrientationCloud()):
        assert eval(repr(d), {"epdo": epdo}) == d and pickle.loads(pickle.dumps(d)) == d
        with pytest.raises(AttributeError, match="immutable"):
            d.x = 1
    assert PointCloud() != PositionOrientationCloud() and len({PointCloud(), PointCloud()}) == 1
    G = epdo.groups.o3(1)
    t = graph.irreps_field_type("2x0e + 1x1o", G)
    assert t == epdo.fields.FieldType(G, [G.trivial] * 2 + [G.irrep(1, -1)], PointCloud())
    assert str(graph.field_type_irreps(t)) == "2x0e+1x1o" and eval(repr(t), {"epdo": epdo}) == t
    with pytest.raises(ValueError, match=r"acted on by groups of 3x3 orthogonal matrices.*got 'D4'"):
        epdo.fields.FieldType(epdo.groups.dihedral(4), [epdo.groups.dihedral(4).trivial], PointCloud())
    with pytest.raises(ValueError, match="needs degree 2"):
        graph.irreps_field_type("1x2e", G)
    x = (torch.randn(4, 5), torch.randn(4, 3), graph.fully_connected_graph(4))
    t.check(x)
    with pytest.raises(GraphError, match=r"expected features of shape \(4, 5\) for FieldType\(O\(3\).*got shape \(4, 4\)"):
        t.check((x[0][:, :4], *x[1:]))  # irreps that do not match the features
    with pytest.raises(TypeError, match=r"expected a tuple \(features \(N, 5\), positions \(N, 3\), edge_index"):
        t.check(x[0])
    with pytest.raises(GraphError, match=r"positions: expected finite positions"):
        t.check((x[0], torch.full((4, 3), float("nan")), x[2]))
    with pytest.raises(GraphError, match=r"edge_index: node indices must lie in \[0, 4\)"):
        t.check((x[0], x[1], x[2] + 1))


def test_point_cloud_action_translation_and_permutation():
    G = epdo.groups.o3(1)
    t = graph.irreps_field_type("1x0e + 1x1o", G)
    x = PointCloud().sample((2, 3, 4), generator=torch.Generator().manual_seed(0))
    a, b = G.sample_elements(2, seed=3)
    lhs = t.transform(t.transform(x, b), a)
    rhs = t.transform(x, a * b)
    assert all(torch.allclose(u, v, atol=1e-12) for u, v in zip(lhs[:2], rhs[:2]))
    assert torch.equal(lhs[2], x[2])
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    y = PointCloud().permute(x, perm)
    edges = {tuple(e) for e in x[2].T.tolist()}
    assert {(int(perm[j]), int(perm[i])) for j, i in y[2].T.tolist()} == edges  # the same graph, relabelled
    assert torch.equal(PointCloud().translate(x, torch.ones(3))[1], x[1] + 1)
