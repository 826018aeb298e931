"""The input contract of every registered model: float images in [0, 1] of shape ModelInfo.input_shape.
Integer (the MnistRotNet models returned NaN logits, tiny-cnn took uint8 0..255), boolean and complex
input, wrong shapes and NaN pixels are refused naming expected and received; 0..255 floats warn once."""

from __future__ import annotations

import warnings

import pytest
import torch

import epdo.models as models
from epdo.models._inputs import InputRangeWarning
from epdo.pde import PDEStabilityError


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            # the contract is the model's, not the kernel's: the pure-torch product where there is a choice
            kw = {"backend": "torch"} if name.startswith("neural-epdo") else {}
            cache[name] = models.create(name, **kw, **models.get_model_info(name).test_kwargs).eval()
        return cache[name]

    return get


#: the models of the image contract (ModelInfo.inputs == "image"); other input kinds test their own contracts
IMAGE_MODELS = [n for n in models.list() if models.get_model_info(n).inputs == "image"]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_non_float_dtypes_are_refused(name, built):
    info, m = models.get_model_info(name), built(name)
    x = torch.rand(2, *info.input_shape)
    for dtype in (torch.uint8, torch.int64, torch.bool, torch.complex64):
        with pytest.raises(TypeError, match=rf"{name}: expected float images in \[0, 1\] .* got dtype {dtype}"):
            m((x * 255).to(dtype))
    with pytest.raises(TypeError, match=r"expected float images .* got list"):
        m(x.tolist())


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_wrong_shapes_and_nan_pixels_are_refused(name, built):
    info, m = models.get_model_info(name), built(name)
    c, h, w = info.input_shape
    for shape in [(2, h, w), (2, c + 2, h, w), (2, c, h, w, 1)]:
        with pytest.raises(ValueError, match=rf"expected images \(B, {c}, .*got \({', '.join(map(str, shape))}\)"):
            m(torch.rand(*shape))
    x = torch.rand(2, *info.input_shape)
    x[1, 0, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="holds 1 NaN/inf"):
        m(x)
    x[1, 0, 5, 7] = float("inf")
    with pytest.raises(ValueError, match="holds 1 NaN/inf"):
        m(x)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_float_input_far_outside_unit_range_warns_once(name, built):
    info = models.get_model_info(name)
    m = built(name)
    m._epdo_range_warned = False
    x = torch.rand(1, *info.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            m(x)  # [0, 1]: silent
            m(x * 2 - 0.5)  # slightly outside (e.g. normalised images): silent
    with pytest.warns(InputRangeWarning, match=rf"{name}: input values in \[.*\] are far outside \[0, 1\]"):
        try:
            with torch.no_grad():
                m(x * 255)
        except PDEStabilityError as err:  # the PDE models may blow up on 0..255 input: then they blame the input
            assert "far outside the images in [0, 1]" in str(err)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        try:
            with torch.no_grad():
                m(x * 255)
        except PDEStabilityError:
            pass


def test_contract_is_stated_in_the_docstrings():
    from epdo.models.cnn import PlainCNN
    from epdo.models.eqpdenet import FCNN, EqPdeNet
    from epdo.models.mnist_rot import MnistRotNet

    for cls in (PlainCNN, FCNN, EqPdeNet, MnistRotNet):
        assert "float images in [0, 1]" in " ".join(cls.__doc__.split()), cls


def test_float16_and_float64_are_accepted():
    m = models.create("tiny-cnn").eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(m.double()(x.double()), m.float()(x).double(), atol=1e-5, rtol=1e-5)
    assert m.float()(torch.rand(0, 1, 28, 28)).shape == (0, 10)  # an empty batch is not an error
