r"""Whole-model export: epdo networks as plain torch modules that run without ``import epdo``.

:func:`export` walks any ``torch.nn.Module`` tree and replaces every epdo module by a torch module that
computes the same function **in eval mode** (running batch-norm statistics, dropout off):

- :class:`~epdo.nn.PDOConv` -> ``nn.Conv2d`` with the expanded filter :math:`K = \sum_\alpha W_\alpha s_\alpha`;
  :class:`~epdo.nn.PointwiseLinear` -> ``nn.Conv2d(kernel_size=1)`` with the expanded
  :math:`W \in \mathrm{Hom}_G(\rho_{in}, \rho_{out})`;
- :class:`~epdo.nn.FieldBatchNorm` -> ``nn.BatchNorm2d`` (eval) whose running mean is the projected mean
  :math:`P_0\mu` and whose variance, weight and bias are the per-field values copied to each channel of the field;
- :class:`~epdo.nn.ReLU`, :class:`~epdo.nn.ELU`, :class:`~epdo.nn.MaxPool2d`, :class:`~epdo.nn.AvgPool2d` -> the
  torch modules of the same name; :class:`~epdo.nn.FieldDropout` -> ``nn.Identity``;
  :class:`~epdo.nn.Sequential` -> ``nn.Sequential`` of the exported modules;
- :class:`~epdo.nn.NeuralEPDO` (diag and full mode, either backend) -> a ``torch.fx.GraphModule``: the generator
  :math:`w = W^2\,\mathrm{ReLU}(W^1 f + b^1) + b^2` as two 1x1 ``nn.Conv2d`` (per-order scale folded into
  :math:`W^2`), the derivative maps :math:`\partial^\alpha f` by one ``conv2d`` with the 2-D stencils (a buffer),
  and the per-pixel product :math:`\sum_\alpha w_\alpha(f)\,\partial^\alpha f` (diag: channel c uses the
  coefficients of channel c mod C/p; full: block diagonal over the p partitions). The derivative maps are
  stored (``B C |Gamma| H W`` values), unlike the layer's fused kernel: ``neural-epdo-small`` runs about 1.3x
  slower exported than with the layer's torch backend (batch 32, one CPU thread);
- :class:`~epdo.nn.GroupPool`, :class:`~epdo.nn.NormNonlinearity` -> GraphModules of pure-torch implementations
  (field sums as 0/1 matrices);
- the registered models (``MnistRotNet``, ``PlainCNN``, ``FCNN``, ``EqPdeNet``) -> one GraphModule of the whole
  forward (input normalisation, features, pooling, head; for EqPdeNet the explicit Euler steps of its PDEs,
  without the finiteness check of training);
- any other epdo module -> its ``forward`` traced by ``torch.fx`` after its children are exported (input checks
  skipped); TypeError if it cannot be traced (:func:`register_exporter` adds an exporter).

A ``GraphModule`` pickles as generated Python source plus its tensors, so ``torch.save`` / ``pickle`` of an
exported model loads and runs where epdo is not installed. Containers that are not epdo classes (a user's
``nn.Module`` with its own ``forward``, ``nn.Sequential``, ...) keep their class; only their epdo submodules
are replaced.

**Training mode.** Export always produces the eval-mode function, whatever the mode of ``model``: batch
norm uses its running statistics and dropout is off. The original model is not modified (its mode
included); the exported model is returned in eval mode, with its own copies of all tensors. It is meant for
inference: training it further would update ``BatchNorm2d`` statistics per channel and drop single channels,
which breaks equivariance.

The exported modules run under ``torch.jit.trace``, ``torch.export.export`` and ``torch.compile``.

>>> import torch
>>> from epdo import groups, fields, nn
>>> G = groups.cyclic(4)
>>> t = fields.FieldType(G, [G.regular] * 2)
>>> net = nn.Sequential(nn.NeuralEPDO(t, order=2, kernel_size=3, backend="torch"), nn.FieldBatchNorm(t), nn.ReLU(t),
...                     nn.GroupPool(t)).eval()
>>> plain = export(net)
>>> type(plain).__name__, [type(m).__name__ for m in plain]
('Sequential', ['NeuralEPDOExport', 'BatchNorm2d', 'ReLU', 'GroupPoolExport'])
>>> x = torch.randn(2, 8, 9, 9)
>>> torch.allclose(plain(x), net(x), atol=1e-5)
True
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .diffops import multi_indices, stencils

__all__ = ["export", "export_module", "register_exporter", "to_graph_module"]

#: class -> function(module) -> plain torch module; looked up along the MRO (:func:`register_exporter`).
_EXPORTERS: dict[type, Callable[[nn.Module], nn.Module]] = {}
_BUILTINS_LOADED = False


def register_exporter(cls: type) -> Callable[[Callable[[nn.Module], nn.Module]], Callable[[nn.Module], nn.Module]]:
    """Decorator: ``fn(module) -> torch.nn.Module`` exports instances of ``cls`` (and its subclasses without
    an exporter of their own). ``fn`` must return modules that need no epdo import (torch modules or the
    result of tracing a pure-torch forward, :func:`to_graph_module`); it should use the eval-mode behaviour."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_exporter: expected a torch.nn.Module subclass, got {cls!r}")

    def deco(fn: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
        _load_builtins()  # so that a user's exporter for a built-in class replaces the built-in one
        _EXPORTERS[cls] = fn
        return fn

    return deco


def export(model: nn.Module) -> nn.Module:
    """``model`` as plain torch modules computing its eval-mode function (see the module documentation).

    Every epdo module in the tree is replaced (:func:`export_module`); the result shares no tensor with
    ``model``, needs no epdo import to run or unpickle, and is in eval mode. ``model`` is not changed.
    Raises TypeError if ``model`` is not a ``torch.nn.Module`` or contains an epdo module whose forward cannot
    be traced (register an exporter for it with :func:`register_exporter`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"epdo.export: expected a torch.nn.Module, got {type(model).__name__}")
    out = _export(model)
    return out.eval()


def export_module(module: nn.Module) -> nn.Module:
    """One module (and what it contains) as plain torch modules: the exporter registered for its class, else
    its epdo submodules replaced, and for epdo classes without an exporter its forward traced by ``torch.fx``.
    This is what ``layer.export()`` returns; the result is in eval mode."""
    return export(module)


# ---------------------------------------------------------------------------------------------------------
# machinery


def _is_epdo_class(cls: type) -> bool:
    mod = getattr(cls, "__module__", "") or ""
    return mod == "epdo" or mod.startswith("epdo.")


def _lookup(cls: type) -> Callable[[nn.Module], nn.Module] | None:
    _load_builtins()
    for c in cls.__mro__:
        if c in _EXPORTERS:
            return _EXPORTERS[c]
    return None


def _contains_epdo(module: nn.Module) -> bool:
    return any(_is_epdo_class(type(m)) for m in module.modules())


def _export(module: nn.Module) -> nn.Module:
    fn = _lookup(type(module))
    if fn is not None:
        return fn(module)
    from .nn import EquivariantModule

    epdo_forward = _is_epdo_class(type(module)) or isinstance(module, EquivariantModule)
    if not epdo_forward and not _contains_epdo(module):
        return copy.deepcopy(module)
    new = _with_exported_children(module)
    if not epdo_forward:
        return new  # a foreign container keeps its class and forward
    if isinstance(new, EquivariantModule):
        new.check_input = _skip_check  # the input checks branch on shapes, which fx cannot trace
    try:
        return to_graph_module(new.eval(), f"{type(module).__name__}Export")
    except Exception as err:  # fx raises TraceError, TypeError, AttributeError, ... on untraceable code
        raise TypeError(f"epdo.export: cannot export {type(module).__qualname__} (module "
                        f"{type(module).__module__}): its forward is not traceable by torch.fx ({type(err).__name__}: "
                        f"{err}); register an exporter for it: from epdo.export import register_exporter, then "
                        f"@register_exporter({type(module).__name__})") from err


def _skip_check(x: torch.Tensor) -> None:
    return None


def _with_exported_children(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose direct children are exported."""
    exported = {id(c): _export(c) for c in module.children()}
    memo = dict(exported)  # every reference to a child in the copy (not only _modules) is its export
    return copy.deepcopy(module, memo)


def to_graph_module(root: nn.Module, name: str) -> fx.GraphModule:
    """``torch.fx`` trace of a module whose forward is pure torch (tensors it reads become buffers or
    parameters of the result), as a GraphModule class ``name`` that pickles without epdo. TypeError if the graph
    calls an epdo function or module. For exporters of new layers (:func:`register_exporter`)."""
    tracer = fx.Tracer()
    graph = tracer.trace(root)
    graph._tracer_cls = None  # keep the pickle free of references to tracer classes
    for node in graph.nodes:
        node.type = None  # annotations are strings here (postponed evaluation): they do not pickle
    gm = fx.GraphModule(tracer.root, graph, class_name=name)
    gm._tracer_cls = None
    for node in gm.graph.nodes:
        if node.op == "call_function" and _is_epdo_class(node.target):
            raise TypeError(f"epdo.export: traced graph {name} calls epdo function {node.target!r}")
        if node.op == "call_module" and _is_epdo_class(type(gm.get_submodule(node.target))):
            raise TypeError(f"epdo.export: traced graph {name} calls epdo module {node.target!r}")
    return gm.train(root.training)


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 0, stride: int = 1) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding copies of ``weight`` (C_out, C_in, k, k) and ``bias``."""
    c_out, c_in, k, _ = weight.shape
    conv = nn.Conv2d(c_in, c_out, k, padding=padding, stride=stride, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


# ---------------------------------------------------------------------------------------------------------
# pure-torch implementations (traced into GraphModules; every constant is a buffer)


class _NeuralEPDOForward(nn.Module):
    r"""The Neural ePDO of paper 000 with the generator's 1x1 layers as convolutions:
    :math:`h = \mathrm{ReLU}(W^1 f + b^1)`, :math:`w = W^2 h + b^2`, ``d = conv2d(f_c, s_alpha)``; diag:
    :math:`y_c = \sum_\alpha w_{c \bmod C_0,\alpha}\, d_{c,\alpha}`; full (block diagonal over the p partitions):
    :math:`y_{q,o} = \sum_{\alpha,i} w_{o,\alpha,i}\, d_{q,i,\alpha}`."""

    def __init__(self, layer) -> None:
        super().__init__()
        partial = getattr(layer, "partial", False)
        with torch.no_grad():
            if partial:  # the eval-mode function: the input sampler's deterministic elements
                from .nn.sampling import eval_elements

                weights = layer.partial_generator_weights(eval_elements(layer.input_sampler))
            else:
                weights = layer.generator_weights()
            w1, b1, w2, b2 = (None if t is None else t.detach().clone() for t in weights)
        self.generator1 = _conv(w1[:, :, None, None], b1)
        self.generator2 = _conv(w2[:, :, None, None], b2)
        st = torch.tensor(np.array(stencils(layer.order, layer.disc)), dtype=w1.dtype, device=w1.device)
        self.register_buffer("stencils", st[:, None].contiguous())
        self.mode, self.p, self.n_alpha = layer.mode, layer.partition, layer.n_alpha
        c0 = w2.shape[0] // layer.n_alpha if partial else layer.c0_in
        self.c0_in, self.c0_out, self.pad = c0, (c0 if partial else layer.c0_out), layer.kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coef = self.generator2(F.relu(self.generator1(x)))
        d = F.conv2d(x.flatten(0, 1).unsqueeze(1), self.stencils, padding=self.pad)  # (B C, |Gamma|, H, W)
        d = d.unflatten(0, (-1, self.p, self.c0_in))  # (B, p, C0, |Gamma|, H, W)
        if self.mode == "diag":
            coef = coef.unflatten(1, (self.c0_in, self.n_alpha)).unsqueeze(1)  # (B, 1, C0, |Gamma|, H, W)
            return (coef * d).sum(3).flatten(1, 2)
        coef = coef.unflatten(1, (self.c0_out, self.n_alpha, self.c0_in))  # (B, C0', |Gamma|, C0, H, W)
        return torch.einsum("boaihw,bpiahw->bpohw", coef, d).flatten(1, 2)


class _CenterCropForward(nn.Module):
    """``x[..., m:-m, m:-m]`` (the size check of :class:`epdo.nn.CenterCrop` is left to the slicing)."""

    def __init__(self, layer) -> None:
        super().__init__()
        self.margin = int(layer.margin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.margin
        return x[..., m:-m, m:-m] if m else x


class _GroupPoolForward(nn.Module):
    """Max / mean over the channels of each field (fields of equal size: one reshape)."""

    def __init__(self, layer) -> None:
        super().__init__()
        self.mode = layer.mode
        self.slices = [(s.start, s.stop) for s in layer.in_type.slices()]
        sizes = {j - i for i, j in self.slices}
        self.uniform = sizes.pop() if len(sizes) == 1 else None

    def _reduce(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.amax(dim=dim) if self.mode == "max" else x.mean(dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uniform is not None:
            return self._reduce(x.unflatten(1, (len(self.slices), self.uniform)), 2)
        return torch.stack([self._reduce(x[:, i:j], 1) for i, j in self.slices], dim=1)


class _NormNonlinearityForward(nn.Module):
    r""":math:`n_f = \sqrt{\|Q^{-1} x_f\|^2 + \epsilon^2}`, then ``x * relu(n - b) / n`` or ``x * sigmoid(n - b)``
    per field; field sums and the broadcast back to channels are 0/1 matrices (buffers)."""

    def __init__(self, layer) -> None:
        super().__init__()
        idx = layer._field_index
        ref = next(iter(layer.buffers()))
        dt = layer.bias.dtype if layer.bias is not None else torch.get_default_dtype()
        members = torch.zeros(len(layer.in_type), layer.in_type.size, dtype=dt, device=ref.device)
        members[idx, torch.arange(len(idx), device=ref.device)] = 1.0
        self.register_buffer("field_sum", members)
        self.register_buffer("qinv", None if layer.orthogonal else layer._qinv.detach().clone().to(dt))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone().view(1, -1, 1, 1))
        self.relu = layer.function == "relu"
        self.eps2 = float(layer.EPS) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = self.field_sum.to(x.dtype)  # a layer without bias has no dtype of its own
        z = x if self.qinv is None else torch.einsum("oc,bchw->bohw", self.qinv.to(x.dtype), x)
        n = (torch.einsum("fc,bchw->bfhw", members, z.square()) + self.eps2).sqrt()
        shifted = n if self.bias is None else n - self.bias
        scale = F.relu(shifted) / n if self.relu else torch.sigmoid(shifted)
        return x * torch.einsum("fc,bfhw->bchw", members, scale).to(x.dtype)


class _ImageModelForward(nn.Module):
    """``head(pool(features((x - mean) / std)))``: MnistRotNet (pool: spatial max) and PlainCNN (identity)."""

    def __init__(self, features: nn.Module, head: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 spatial_max: bool) -> None:
        super().__init__()
        self.features, self.head = features, head
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())
        self.spatial_max = spatial_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = self.features(x)
        if self.spatial_max:
            x = x.amax(dim=(2, 3))
        return self.head(x)


class _Call(nn.Module):
    """``net(x)`` (a forward without its input checks)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------------------------------------
# the PDE layers of EqPdeNet (paper 001): explicit Euler steps u <- u + dt F_theta(invariants(D u))


class _TracedDerivatives(dict):
    """The derivative dictionary of :class:`epdo.pde.Derivatives` for tracing: keys ``(a, b)`` or names."""

    def __getitem__(self, key):
        from .pde.invariants import _parse_key

        return super().__getitem__(_parse_key(key))


def _function_forward(f: nn.Module, parts: list[torch.Tensor]) -> torch.Tensor:
    """``F_theta`` of :mod:`epdo.pde.functions` on a list of invariants ``(B, n_pdes, H, W)`` (no checks)."""
    from .pde.functions import LinearF, MLPF, PolynomialF

    if isinstance(f, LinearF):
        out = f.bias.view(1, -1, 1, 1)
        for i, p in enumerate(parts):
            out = out + f.weight[:, i].view(1, -1, 1, 1) * p
        return out
    if isinstance(f, PolynomialF):
        out = f.bias.view(1, -1, 1, 1)
        terms: dict[tuple[int, ...], torch.Tensor] = {}
        for k, mono in enumerate(f.monomials):
            terms[mono] = parts[mono[0]] if len(mono) == 1 else terms[mono[:-1]] * parts[mono[-1]]
            out = out + f.weight[:, k].view(1, -1, 1, 1) * terms[mono]
        return out
    if isinstance(f, MLPF):
        inv = torch.stack(parts, dim=2)
        h = torch.tanh(torch.einsum("bkihw,kji->bkjhw", inv, f.w1) + f.b1[None, :, :, None, None])
        return torch.einsum("bkjhw,kj->bkhw", h, f.w2) + f.b2.view(1, -1, 1, 1)
    raise TypeError(f"epdo.export: no export for the PDE right-hand side {type(f).__name__}")


class _PDEForward(nn.Module):
    """Explicit Euler steps (paper 001, EulerConv / ConvInt): per Euler step module ``step`` run ``n_steps``
    times from ``x`` expanded to its PDEs (stencils by a depthwise ``conv2d`` after padding), the solutions
    concatenated, then ``combine`` (the PDE layer's 1x1 reduction) if given. The finiteness check is dropped."""

    def __init__(self, steps: list[tuple[nn.Module, int]], combine: nn.Module | None = None) -> None:
        super().__init__()
        self.functions = nn.ModuleList()
        self.specs = []
        for k, (step, n_steps) in enumerate(steps):
            self.functions.append(copy.deepcopy(step.function))
            self.register_buffer(f"stencils{k}", step.stencils.detach().clone())
            self.specs.append((step.n_pdes, n_steps, step.dt, step.padding, step.stencils.shape[-1] // 2,
                               tuple(multi_indices(step.order)), step.invariant_set.fn, len(step.invariant_set)))
        self.combine = None if combine is None else copy.deepcopy(combine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for k, (n, n_steps, dt, padding, r, alphas, fn, m) in enumerate(self.specs):
            st = getattr(self, f"stencils{k}").to(x.dtype)
            f = self.functions[k]
            u = x.expand(-1, n, -1, -1)
            for _ in range(n_steps):
                up = u if r == 0 else F.pad(u, (r, r, r, r), mode="constant" if padding == "zeros" else padding)
                d = F.conv2d(up, st.repeat(n, 1, 1, 1), groups=n).unflatten(1, (n, len(alphas)))
                inv = fn(_TracedDerivatives((a, d.select(2, j)) for j, a in enumerate(alphas)))
                parts = list(inv) if isinstance(inv, (list, tuple)) else [inv.select(-3, j) for j in range(m)]
                u = u + dt * _function_forward(f, parts)
            outs.append(u)
        u = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return u if self.combine is None else self.combine(u)


# ---------------------------------------------------------------------------------------------------------
# the built-in exporters (registered on first use: importing epdo.nn / epdo.models here would be circular)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True  # first: the registrations below call register_exporter, which calls this
    try:
        _register_builtins()
    except BaseException:
        _BUILTINS_LOADED = False
        raise


def _register_builtins() -> None:
    from . import nn as enn
    from .models.cnn import PlainCNN
    from .models.eqpdenet import FCNN, EqPdeNet
    from .models.mnist_rot import MnistRotNet
    from .pde import EulerStep, PDEIntegrator, PDELayer

    @register_exporter(enn.PDOConv)
    def _pdoconv(m):
        if m.partial:  # the eval-mode function on the deterministic orientations
            return m.export()
        with torch.no_grad():
            w, b = m.filter_and_bias()
        return _conv(w, b, m.padding, m.stride)

    @register_exporter(enn.PointwiseLinear)
    def _pointwise(m):
        with torch.no_grad():
            w, b = m.weight_and_bias()
        return _conv(w[:, :, None, None], b)

    @register_exporter(enn.FieldBatchNorm)
    def _batchnorm(m):
        with torch.no_grad():
            idx = m._field_index
            rm = m.running_mean
            mean = m.project_mean(rm) if m.centre else torch.zeros_like(rm)
            bn = nn.BatchNorm2d(m.in_type.size, eps=m.eps, affine=True, device=rm.device, dtype=rm.dtype)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(m.running_var[idx])
            bn.num_batches_tracked.copy_(m.num_batches_tracked)
            if m.affine:
                bn.weight.copy_(m.weight[idx])
                b = m.bias_term()
                bn.bias.copy_(torch.zeros_like(mean) if b is None else b)
            else:
                bn.weight.fill_(1.0)
                bn.bias.zero_()
        return bn.eval()

    register_exporter(enn.SteerableConv)(lambda m: m.export())
    register_exporter(enn.ReLU)(lambda m: nn.ReLU())
    register_exporter(enn.ELU)(lambda m: nn.ELU(m.alpha))
    register_exporter(enn.FieldDropout)(lambda m: nn.Identity())
    register_exporter(enn.MaxPool2d)(lambda m: nn.MaxPool2d(m.kernel_size, m.stride, m.padding))
    register_exporter(enn.AvgPool2d)(lambda m: nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    register_exporter(enn.Sequential)(lambda m: nn.Sequential(*[_export(c) for c in m]))
    graph = to_graph_module
    register_exporter(enn.NeuralEPDO)(lambda m: graph(_NeuralEPDOForward(m), "NeuralEPDOExport"))
    register_exporter(enn.GroupPool)(lambda m: graph(_GroupPoolForward(m), "GroupPoolExport"))
    register_exporter(enn.CenterCrop)(lambda m: graph(_CenterCropForward(m), "CenterCropExport"))
    register_exporter(enn.NormNonlinearity)(lambda m: graph(_NormNonlinearityForward(m), "NormNonlinearityExport"))

    @register_exporter(MnistRotNet)
    def _mnist_rot(m):
        root = _ImageModelForward(_export(m.features), _export(m.head), m.mean, m.std, spatial_max=True)
        return to_graph_module(root.eval(), "MnistRotNetExport")

    @register_exporter(PlainCNN)
    def _plain_cnn(m):
        root = _ImageModelForward(_export(m.features), _export(m.head), m.mean, m.std, spatial_max=False)
        return to_graph_module(root.eval(), "PlainCNNExport")

    register_exporter(FCNN)(lambda m: graph(_Call(_export(m.net)).eval(), "FCNNExport"))

    def pde_layer(m: PDELayer) -> _PDEForward:
        return _PDEForward([(integ.step, integ.n_steps) for integ in m.integrators], m.combine)

    register_exporter(EulerStep)(lambda m: graph(_PDEForward([(m, 1)]).eval(), "EulerStepExport"))
    register_exporter(PDEIntegrator)(lambda m: graph(_PDEForward([(m.step, m.n_steps)]).eval(),
                                                    "PDEIntegratorExport"))
    register_exporter(PDELayer)(lambda m: graph(pde_layer(m).eval(), "PDELayerExport"))
    register_exporter(EqPdeNet)(lambda m: graph(nn.Sequential(pde_layer(m.pde), _export(m.head)).eval(),
                                                "EqPdeNetExport"))
