"""Synchronised FieldBatchNorm (epdo.nn.convert_sync_batchnorm): two gloo ranks on CPU compute what one process
computes on the joined batch, outputs, gradients and running statistics."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from epdo import fields, groups
from epdo.nn import FieldBatchNorm, convert_sync_batchnorm

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def _field_type():
    G = groups.dihedral(4)
    # a permutation field (pooled mean), a 2-d irrep (no mean) and a trivial field
    return fields.FieldType(G, [G.regular, G.irrep(1, 1), G.trivial])


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = _field_type()
    x = torch.randn(6, t.size, 3, 4, generator=g, dtype=torch.float64) * 2 + 1  # ranks get 2 and 4 samples
    w = torch.randn(6, t.size, 3, 4, generator=g, dtype=torch.float64)
    return x, w


def _layer():
    torch.manual_seed(0)
    bn = FieldBatchNorm(_field_type(), momentum=0.3, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        if bn.bias_term.bias is not None:
            bn.bias_term.bias.normal_()
    return bn


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x, w = _data()
        part = slice(0, 2) if rank == 0 else slice(2, 6)  # unequal batches: the statistics weigh by count
        bn = convert_sync_batchnorm(_layer())
        xr = x[part].clone().requires_grad_(True)
        y = bn(xr)
        (y * w[part]).sum().backward()
        grads = [p.grad.clone() for p in bn.parameters()]
        for g in grads:  # parameter gradients summed over ranks (what DDP does)
            dist.all_reduce(g)
        torch.save({"y": y.detach(), "gx": xr.grad, "grads": grads, "mean": bn.running_mean, "var": bn.running_var},
                   f"{out}.{rank}")
        dist.barrier()  # nobody tears the group down while a peer is still inside a collective
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_on_the_joined_batch(tmp_path):
    x, w = _data()
    bn = _layer()
    xr = x.clone().requires_grad_(True)
    y = bn(xr)
    (y * w).sum().backward()
    ref_grads = [p.grad for p in bn.parameters()]

    init = f"file://{tmp_path / 'store'}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, init, str(tmp_path / "out"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank did not finish within 120 s"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    r0, r1 = (torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2))
    tol = dict(rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), **tol)
    torch.testing.assert_close(torch.cat([r0["gx"], r1["gx"]]), xr.grad, **tol)
    for a, b, ref in zip(r0["grads"], r1["grads"], ref_grads):
        torch.testing.assert_close(a, ref, **tol)
        torch.testing.assert_close(b, ref, **tol)
    for r in (r0, r1):
        torch.testing.assert_close(r["mean"], bn.running_mean, **tol)
        torch.testing.assert_close(r["var"], bn.running_var, **tol)
    # and without synchronisation the ranks would differ from the joined batch (the test can fail)
    local = _layer()
    assert (local(x[:2]) - y[:2]).abs().max() > 1e-3


def test_without_a_process_group_sync_layers_compute_local_statistics():
    x, _ = _data()
    a, b = _layer(), convert_sync_batchnorm(_layer())
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    assert "sync=True" in repr(b)


# --- recalibrate_batchnorm ------------------------------------------------------------------------------

def test_recalibration_gives_each_layer_the_statistics_of_its_eval_mode_inputs():
    """After recalibrate_batchnorm the running mean / variance of every batch norm equal the mean / variance of
    the inputs it receives in eval mode (hooks, after the fact); a train-mode "precise BN" pass does not."""
    from torch import nn

    from epdo.nn import recalibrate_batchnorm

    torch.manual_seed(0)
    t = _field_type()
    net = nn.Sequential(nn.Conv2d(t.size, t.size, 1), FieldBatchNorm(t, dtype=torch.float64), nn.Tanh(),
                        nn.Conv2d(t.size, 5, 1), nn.BatchNorm2d(5), nn.Tanh(), nn.Conv2d(5, 3, 1), nn.BatchNorm2d(3))
    net = net.double()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(3.0)
                m.bias.normal_()
    # batches that differ in distribution (as digits with more or less ink): batch statistics vary
    batches = [torch.randn(16, t.size, 4, 4, dtype=torch.float64) * (1 + i) + 2 * i for i in range(3)]

    def eval_inputs():
        seen = {}
        hooks = [m.register_forward_pre_hook(lambda m, a: seen.setdefault(m, []).append(a[0]))
                 for m in (net[1], net[4], net[7])]
        net.eval()
        with torch.no_grad():
            for b in batches:
                net(b)
        for h in hooks:
            h.remove()
        return {m: torch.cat(v) for m, v in seen.items()}

    def errors():
        x = eval_inputs()
        bn = net[7]
        mean = x[bn].mean(dim=(0, 2, 3))
        return float((bn.running_mean - mean).abs().max()), x

    recalibrate_batchnorm(net, batches)
    err, x = errors()
    assert err < 1e-12 and not net.training
    for bn in (net[4], net[7]):
        xs = x[bn].transpose(0, 1).reshape(bn.num_features, -1)
        torch.testing.assert_close(bn.running_mean, xs.mean(1), rtol=0, atol=1e-12)
        per_batch = torch.stack([xs[:, i * 256:(i + 1) * 256].var(1) for i in range(3)]).mean(0)
        torch.testing.assert_close(bn.running_var, per_batch, rtol=1e-12, atol=1e-12)  # mean of unbiased batch vars
    fb = net[1]
    torch.testing.assert_close(fb.running_mean, fb.project_mean(x[fb].mean(dim=(0, 2, 3))), rtol=0, atol=1e-12)
    # the precise-BN alternative (all layers in train mode, cumulative averages) misses the eval-mode inputs
    for m in (net[1], net[4], net[7]):
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for b in batches:
            net(b)
    assert errors()[0] > 1e-2


def test_recalibration_needs_batches():
    with pytest.raises(ValueError, match="at least one batch"):
        from epdo.nn import recalibrate_batchnorm

        recalibrate_batchnorm(_layer(), [])
