"""The registered (Partial) G-CNNs: parameter counts from an independent formula, learned-subset reports, the
export of the eval-mode function, evaluate's report hook."""

from __future__ import annotations

import pytest
import torch

import epdo.models as models
from epdo.export import export


def _siren(d_in: int, d_out: int, h: int = 32) -> int:
    return (d_in * h + h) + (h * h + h) + (h * d_out + d_out)


def _formula(C: int, e: int, shortcuts: bool, partial: int, classes: int = 2, pdo_alphas: int | None = None,
             neural: bool = False) -> int:
    """Lifting SIREN (2 -> C), 4 group convs (2 + e -> C^2; PDO: e -> C |Gamma| C; Neural ePDO: the 1 x 1 SIREN
    2 + e -> 2C x C and its 2C biases, W2 C |Gamma| C, b2 C |Gamma|), 2 shortcut SIRENs (1 x 1), 5 batch norms
    (2C each), the head, one theta (and one flip logit) per partial sampler."""
    if pdo_alphas is None:
        lift, conv = _siren(2, C), _siren(2 + e, C * C)
    elif neural:
        lift, conv = C * pdo_alphas, _siren(2 + e, 2 * C * C) + 2 * C + C * pdo_alphas * C + C * pdo_alphas
    else:
        lift, conv = C * pdo_alphas, _siren(e, C * pdo_alphas * C)
    return lift + 4 * conv + (2 * _siren(2 + e, C * C) if shortcuts else 0) + 5 * 2 * C + C * classes + classes + partial


@pytest.mark.parametrize("name,e,shortcuts,partial,alphas", [
    ("gcnn-se2-8", 2, True, 0, None), ("partial-gcnn-se2-8", 2, True, 5, None), ("gcnn-e2-16", 3, True, 0, None),
    ("partial-gcnn-e2-8", 3, True, 10, None), ("gcnn-mirror", 3, False, 0, None), ("partial-gcnn-mirror", 3, True, 5, None),
    ("cnn-t2", 2, False, 0, None), ("partial-pdo-se2-8", 2, True, 5, 6),
    ("partial-nepdo-se2-8", 2, True, 5, 6)])
def test_parameter_counts(name, e, shortcuts, partial, alphas):
    m = models.create(name)
    neural = "nepdo" in name
    assert models.count_parameters(m) == _formula(32, e, shortcuts, partial, pdo_alphas=alphas, neural=neural)


def test_report_and_export_of_a_partial_model():
    torch.manual_seed(0)
    m = models.create("partial-gcnn-e2-8", channels=4, theta=0.5, prob=0.3).eval()
    rows = m.partial_equivariance_report()
    assert len(rows) == 5 and all(r["theta"] == pytest.approx(0.5) and r["prob"] == pytest.approx(0.3) for r in rows)
    assert all(r["elements"] == 2 for r in rows)  # ceil(4 * 0.5) rotations, the flipped coset off (p < 1/2)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(export(m)(x), m(x), atol=1e-5)


def test_evaluate_prints_and_plots_the_learned_subsets(capsys, tmp_path):
    from epdo.cli import evaluate

    m = models.create("partial-gcnn-se2-8", channels=4, theta=0.25)
    rows = evaluate._print_partial_equivariance(m)
    out = capsys.readouterr().out
    assert len(rows) == 5 and "theta = 0.250 pi (45.0 deg), 2 elements" in out
    assert evaluate._print_partial_equivariance(models.create("cnn-t2", channels=4)) == []
    evaluate._plot_partial_subsets(rows, tmp_path / "s.png", "t")
    pytest.importorskip("matplotlib")
    assert (tmp_path / "s.png").stat().st_size > 1000


@pytest.mark.parametrize("name,transform", [
    ("gcnn-se2-8", lambda x: torch.rot90(x, 1, (-2, -1))),  # the eval grid C8 contains 90 degrees
    ("gcnn-e2-8", lambda x: torch.rot90(x, 1, (-2, -1)).flip(-2)),  # D4: a rotation times the flip y -> -y
    ("gcnn-mirror", lambda x: x.flip(-1)),  # x -> -x (MNIST6-M's mirroring), not y -> -y
])
def test_eval_mode_models_are_invariant_on_grid_elements(name, transform):
    torch.manual_seed(0)
    m = models.create(name, channels=4).double().eval()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        y, yt = m(x), m(transform(x))
    assert (y - yt).abs().max() <= 1e-9 * y.abs().max()
    assert (m(x.transpose(-1, -2)) - y).abs().max() > 1e-6 * y.abs().max() or name != "gcnn-mirror"


@pytest.mark.parametrize("channels,blocks", [(8, 2), (4, 1)])
def test_pdoconv_network_parameter_count(channels, blocks):
    from epdo.nn.neural_epdo import expected_num_params

    C, n_alpha = channels, 6  # order 2
    neural = expected_num_params("diag", C, 2, 8) + C + C * n_alpha  # W1, W2; b1 per hidden field, b2 per (field, alpha)
    formula = C * n_alpha + blocks * (neural + C * n_alpha * C * 8) + (1 + 2 * blocks) * 2 * C + C * 2 + 2
    full = models.create("pdoconv-c8", channels=C, blocks=blocks)
    part = models.create("partial-pdoconv-c8", channels=C, blocks=blocks)
    assert models.count_parameters(full) == formula
    assert models.count_parameters(part) == formula + 1 + blocks  # one theta per PDOConv


def test_pdoconv_network_is_c8_invariant_and_its_partial_version_at_full_theta_is_the_same_function():
    torch.manual_seed(0)
    # built in float64: .double() after a float32 build keeps the full layers' 45-degree rotation matrices at
    # float32 precision (buffers computed at construction), a 7e-9 difference from the partial layers'
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        full = models.create("pdoconv-c8", channels=4).eval()
        part = models.create("partial-pdoconv-c8", channels=4).eval()
    finally:
        torch.set_default_dtype(default)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    missing, unexpected = part.load_state_dict(full.state_dict(), strict=False)
    assert not unexpected and all(".sampler." in k or k.startswith("lift.sampler") for k in missing)
    with torch.no_grad():
        y = full(x)
        assert (full(torch.rot90(x, 1, (-2, -1))) - y).abs().max() <= 1e-9 * y.abs().max()
        assert (full(x.transpose(-1, -2)) - y).abs().max() > 1e-6 * y.abs().max()  # C8 has no reflections
        assert (part(x) - y).abs().max() <= 1e-9 * y.abs().max()
    rows = part.partial_equivariance_report()
    assert [r["layer"] for r in rows] == ["lift.sampler", "convs.0.sampler", "convs.1.sampler"]
    assert all(r["theta"] == 1.0 and r["elements"] == 8 for r in rows)
