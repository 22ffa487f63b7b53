"""The cutoff envelopes: where they are 1, where 0, and how smoothly they get there."""

import numpy as np
import pytest
import torch

from ehpc.nn.radial import PolynomialCutoff, SwitchCutoff


def _u_and_derivatives(envelope, r: np.ndarray):
    x = torch.tensor(r, dtype=torch.float64, requires_grad=True)
    u = envelope(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    return u.detach().numpy(), du.detach().numpy(), d2u.numpy()


def test_switch_is_one_inside_and_falls_smoothly_to_zero_in_the_last_width():
    envelope = SwitchCutoff(9.0, 0.5)
    inside = np.array([0.5, 2.35, 6.0, 8.0, 8.5])
    u, du, d2u = _u_and_derivatives(envelope, inside)
    assert np.array_equal(u, np.ones(5)) and not du.any() and not d2u.any()
    # the quintic smoothstep: u(8.75) = 1/2 by symmetry, u(9) = 0 with flat ends
    u, du, d2u = _u_and_derivatives(envelope, np.array([8.5 + 1e-9, 8.75, 9.0 - 1e-9]))
    assert u == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    assert du[[0, 2]] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert d2u[[0, 2]] == pytest.approx([0.0, 0.0], abs=1e-4)
    assert du[1] == pytest.approx(-15 / 8 / 0.5)  # smoothstep slope 15/8 at the middle
    assert envelope(torch.tensor([9.0, 12.0], dtype=torch.float64)).tolist() == [0.0, 0.0]


def test_polynomial_envelope_damps_well_inside_the_cutoff():
    # the reason for the switch: 1 - 28 x^6 + 48 x^7 - 21 x^8 (p = 6) is 0.20308224 at
    # x = 0.8 and 0.03809179 at x = 0.9
    u = PolynomialCutoff(9.0)(torch.tensor([0.8 * 9.0, 0.9 * 9.0], dtype=torch.float64))
    assert u.tolist() == pytest.approx([0.20308224, 0.03809179], abs=1e-8)


@pytest.mark.filterwarnings("ignore:channels raised")
def test_new_models_switch_and_saved_models_keep_their_envelope(tmp_path):
    from ehpc.basis import Basis
    from ehpc.nn.model import HamiltonianModel

    model = HamiltonianModel(Basis("gth-szv"), [14], cutoff=5.0, n_layers=1, channels=2)
    assert isinstance(model.radial.envelope, SwitchCutoff)
    meta = dict(model.metadata)
    meta["hparams"] = {k: v for k, v in meta["hparams"].items() if k != "envelope_width"}
    old = HamiltonianModel.from_metadata(meta)  # a file written before the switch existed
    assert isinstance(old.radial.envelope, PolynomialCutoff)
    reloaded = HamiltonianModel.load(model.save(tmp_path / "m.pt"))
    assert isinstance(reloaded.radial.envelope, SwitchCutoff)
