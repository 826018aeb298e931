"""Eval mode keeps gradients, and the eval filter cache is never stale (issue 9, issue 10 "never silently wrong").

The cache of expanded weights (PDOConv, NeuralEPDO) is used only where no weight gradient is needed; it must
be rebuilt after every way of changing a parameter, including writes through ``p.data`` that leave the version
counter alone. Every layer with parameters is checked against every manipulation: the output after the change
must equal that of a fresh copy of the changed layer, bit for bit.
"""

import copy
import pickle

import pytest
import torch

from epdo import fields, groups
from epdo.nn import (FieldBatchNorm, NeuralEPDO, NormNonlinearity, PDOConv, PointwiseLinear, ReLU, Sequential)

G = groups.cyclic(4)
T = fields.FieldType(G, [G.regular] * 2)
T_IRR = fields.FieldType(G, [G.irrep(0, 1), G.regular])


def _layers():
    torch.manual_seed(0)
    return {
        "PDOConv-steerable": lambda: PDOConv(T, T, order=2, kernel_size=3),
        "PDOConv-pdo_econv": lambda: PDOConv(T, T, order=2, kernel_size=3, basis="pdo_econv"),
        "NeuralEPDO-diag": lambda: NeuralEPDO(T, order=2, kernel_size=3, reduction=2, backend="torch"),
        "NeuralEPDO-full": lambda: NeuralEPDO(T, order=2, kernel_size=3, mode="full"),
        "NeuralEPDO-dense": lambda: NeuralEPDO(T, order=2, kernel_size=3, discretization="gauss", sigma=0.8,
                                               backend="dense"),
        "PointwiseLinear": lambda: PointwiseLinear(T_IRR, T),
        "NormNonlinearity": lambda: NormNonlinearity(T_IRR, "sigmoid"),
        "FieldBatchNorm": lambda: FieldBatchNorm(T_IRR),
        "Sequential": lambda: Sequential(PDOConv(T, T, order=2, kernel_size=3), FieldBatchNorm(T), ReLU(T),
                                         NeuralEPDO(T, order=2, kernel_size=3, backend="torch")),
    }


LAYERS = _layers()


def _other_values(layer):
    """New values for every parameter (a different seed), as plain tensors."""
    gen = torch.Generator().manual_seed(123)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3 + 1.0 for p in layer.parameters()]


def _data_copy(layer, vals):
    for p, v in zip(layer.parameters(), vals):
        p.data.copy_(v)


def _data_mul(layer, vals):
    for p in layer.parameters():
        p.data.mul_(2.0)
        p.data.add_(0.1)  # also parameters that start at 0 (biases) change


def _copy_no_grad(layer, vals):
    with torch.no_grad():
        for p, v in zip(layer.parameters(), vals):
            p.copy_(v)


def _mul_no_grad(layer, vals):
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(2.0).add_(0.1)


def _load_state_dict(layer, vals):
    other = copy.deepcopy(layer)
    _copy_no_grad(other, vals)
    layer.load_state_dict(other.state_dict())


def _optimizer_step(layer, vals):
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for p, v in zip(layer.parameters(), vals):
        p.grad = v.clone()
    opt.step()


def _assign_data(layer, vals):
    for p, v in zip(layer.parameters(), vals):
        p.data = v.clone()


MANIPULATIONS = {"p.data.copy_": _data_copy, "p.data.mul_": _data_mul, "p.copy_ under no_grad": _copy_no_grad,
                 "p.mul_ under no_grad": _mul_no_grad, "load_state_dict": _load_state_dict,
                 "optimizer.step": _optimizer_step, "p.data = tensor": _assign_data}


def _input(layer, batch=2):
    torch.manual_seed(1)
    return torch.randn(batch, layer.in_type.size, 7, 7)


@pytest.mark.parametrize("manipulation", list(MANIPULATIONS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_cache_rebuilt_after_every_parameter_change(name, manipulation):
    layer = LAYERS[name]()
    x = _input(layer)
    layer.eval()
    with torch.no_grad():
        y0 = layer(x)
        assert torch.equal(layer(x), y0)  # served from the cache (where there is one): same values
    MANIPULATIONS[manipulation](layer, _other_values(layer))
    fresh = copy.deepcopy(layer)  # no cache (not copied)
    with torch.no_grad():
        y1 = layer(x)
        y_ref = fresh(x)
    assert not torch.allclose(y1, y0), "the manipulation did not change the output: the test could not fail"
    torch.testing.assert_close(y1, y_ref, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), y_ref, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["PDOConv-steerable", "PDOConv-pdo_econv", "NeuralEPDO-diag", "NeuralEPDO-full",
                                  "NeuralEPDO-dense", "PointwiseLinear", "NormNonlinearity"])
def test_eval_mode_weight_gradients_equal_train_mode(name):
    """The issue's repro (``layer.eval()(x).sum().backward()`` raised) and equality with train-mode gradients."""
    layer = LAYERS[name]().double()
    x = _input(layer).double().requires_grad_()
    grads = {}
    # A generic seeded weighting of the output: one shared across channels (a linspace) only reaches the
    # invariant part of each regular field, so with the canonical Hom bases most weights got zero gradient.
    weight = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    for mode in (True, False):
        layer.train(mode)
        layer.zero_grad()
        x.grad = None
        with torch.no_grad():  # an earlier cached build must not leak into the graph
            layer(x)
        (layer(x) * weight).sum().backward()
        grads[mode] = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    assert all(g.abs().sum() > 0 for g in grads[False])
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["PDOConv-steerable", "NeuralEPDO-diag", "NeuralEPDO-full"])
def test_frozen_weights_use_the_cache_and_input_gradients_flow(name):
    layer = LAYERS[name]().double().eval()
    x = _input(layer).double().requires_grad_()
    layer.train()
    layer(x).sum().backward()
    g_train = x.grad.clone()
    layer.eval().requires_grad_(False)
    x.grad = None
    y = layer(x)
    assert layer._eval_cache is not None  # no weight needs a gradient: cached
    y.sum().backward()
    torch.testing.assert_close(x.grad, g_train, rtol=1e-12, atol=1e-12)
    layer.requires_grad_(True)
    assert layer(x).requires_grad and layer.weights_need_grad()


def test_cache_built_in_inference_mode_serves_frozen_attribution():
    """A cache built under inference_mode holds normal tensors: later autograd through the input works."""
    layer = LAYERS["PDOConv-steerable"]().eval().requires_grad_(False)
    x = _input(layer)
    with torch.inference_mode():
        y0 = layer(x)
    xg = x.clone().requires_grad_()
    y = layer(xg)
    torch.testing.assert_close(y.detach(), y0, rtol=0, atol=0)
    y.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_cache_not_pickled_and_not_in_state_dict():
    layer = LAYERS["NeuralEPDO-diag"]().eval()
    x = _input(layer)
    keys = list(layer.state_dict())
    with torch.no_grad():
        y = layer(x)
    assert layer._eval_cache is not None and list(layer.state_dict()) == keys
    clone = pickle.loads(pickle.dumps(layer))
    assert clone._eval_cache is None and copy.deepcopy(layer)._eval_cache is None
    with torch.no_grad():
        torch.testing.assert_close(clone(x), y, rtol=0, atol=0)


def test_cache_follows_dtype_change():
    layer = LAYERS["PDOConv-steerable"]().eval()
    x = _input(layer)
    with torch.no_grad():
        y = layer(x)
        y64 = layer.double()(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64.float(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("check", ["cpu", "one_sync"])
def test_value_check_detects_any_change_and_nan(check):
    from epdo.nn import base

    fn = base._same_values if check == "cpu" else base._same_values_one_sync
    torch.manual_seed(0)
    params = [torch.randn(3, 4), torch.randn(5)]
    snap = tuple(p.clone() for p in params)
    assert fn(params, snap)
    params[1][2] = torch.nextafter(params[1][2], torch.tensor(float("inf")))  # the smallest possible change
    assert not fn(params, snap)
    params[1].copy_(snap[1])
    params[0][1, 1] = float("nan")
    assert not fn(params, snap)  # NaN is never equal to its copy: rebuilt, never stale
