"""Metals label with smeared occupations: fcc aluminium, Fermi-Dirac, a small k-mesh."""

from types import SimpleNamespace

import numpy as np
import pytest
from ase.build import bulk

from ehpc.basis import Basis
from ehpc.dft import Smearing, label_structure
from ehpc.dft.periodic import build_cell, crystal_record, run_krks
from ehpc.units import HARTREE_TO_EV

BASIS = Basis("gth-szv")
KMESH = (3, 3, 3)
SMEARING = Smearing("fermi", 0.2)


@pytest.fixture(scope="module")
def aluminium():
    return bulk("Al", "fcc", a=4.05)


@pytest.fixture(scope="module")
def smeared(aluminium):
    pcell = build_cell(aluminium, BASIS, "al")
    return pcell, run_krks(pcell, "pbe", KMESH, "al", conv_tol=1e-8, smearing=SMEARING)


def test_stored_fermi_level_holds_the_electron_count(aluminium, smeared):
    """Fermi-Dirac occupations at the stored E_F over the SCF mesh give Al's 3 electrons."""
    pcell, mf = smeared
    record = crystal_record(aluminium, BASIS, mf, pcell, 5.0, "al", "pbe", KMESH,
                            smearing=SMEARING)
    assert record.attrs["converged"] and record.attrs["smearing"] == "fermi"
    assert record.attrs["smearing_width_eV"] == pytest.approx(0.2)
    energies = np.concatenate(mf.mo_energy) * HARTREE_TO_EV  # [n_k * nao]
    x = (energies - record.attrs["fermi_level"]) / SMEARING.width_eV
    electrons = 2.0 * np.sum(1.0 / (1.0 + np.exp(x))) / np.prod(KMESH)
    assert electrons == pytest.approx(3.0, abs=1e-4)
    # a metal: some band crosses E_F, and no gap shift is defined
    bands = record.reference_bands
    assert ((bands.min(axis=0) < record.attrs["fermi_level"])
            & (bands.max(axis=0) > record.attrs["fermi_level"])).any()
    assert np.isnan(record.attrs["floor_gap_shift_meV"])
    assert record.attrs["homo"] <= record.attrs["fermi_level"] < record.attrs["lumo"]


def test_smearing_reaches_the_public_labeller(aluminium):
    record = label_structure(aluminium, BASIS, "pbe", 5.0, "al", kmesh=(2, 2, 2), conv_tol=1e-7,
                             smearing=Smearing.parse("gaussian:0.3"))
    assert record.attrs["smearing"] == "gaussian" and record.attrs["converged"]


@pytest.mark.parametrize("text, problem", [("fermi", "METHOD:WIDTH"), ("cold:0.1", "method"),
                                           ("fermi:-1", "positive")])
def test_bad_smearing_is_named(text, problem):
    with pytest.raises(ValueError, match=problem):
        Smearing.parse(text)


def test_band_reference_uses_the_labels_smearing(aluminium, smeared):
    """The band reference of ``ehpc-evaluate`` runs the smeared SCF the labels ran: its E_F
    is that SCF's chemical potential and its bands at the SCF mesh are that SCF's levels."""
    from ehpc.analysis.dft_bands import dft_bands
    from ehpc.cli.evaluate import band_smearing

    pcell, mf = smeared
    labelled = SimpleNamespace(attrs={"smearing": "fermi", "smearing_width_eV": 0.2})
    smearing = band_smearing(None, [labelled])
    assert smearing == SMEARING and band_smearing("none", [labelled]) is None
    kpts = pcell.cell.get_scaled_kpts(np.asarray(mf.kpts))[:, np.argsort(pcell.order)]
    reference = dft_bands(aluminium, BASIS, "pbe", KMESH, kpts, "al", conv_tol=1e-8,
                          smearing=smearing)
    assert reference.fermi_level == pytest.approx(float(mf.mu) * HARTREE_TO_EV, abs=1e-4)
    assert reference.homo <= reference.fermi_level < reference.lumo
    np.testing.assert_allclose(reference.energies, np.asarray(mf.mo_energy) * HARTREE_TO_EV,
                               atol=1e-4)


def test_metal_frontier_errors_are_the_levels_either_side_of_its_fermi_level(aluminium, smeared):
    """Model-vs-label errors of a smeared crystal count levels from its stored E_F (the
    chemical potential), not from half its electron count: H + c S moves every level by c."""
    from ehpc.analysis.evaluate import compare, summarise

    pcell, mf = smeared
    record = crystal_record(aluminium, BASIS, mf, pcell, 5.0, "al", "pbe", KMESH,
                            smearing=SMEARING)
    shift = 0.01  # eV
    errors = compare(SimpleNamespace(basis=BASIS), record,
                     predicted=record.hamiltonian + shift * record.overlap)
    fermi = record.attrs["fermi_level"]
    # at Γ, Al's four levels all lie below its E_F: a HOMO, and no LUMO rather than a
    # filled level counted as empty (half the electron count would make the second one it)
    assert errors.homo_dft <= fermi and np.isnan(errors.lumo_dft) and np.isnan(errors.lumo_model)
    assert errors.homo_model - errors.homo_dft == pytest.approx(shift, abs=1e-9)
    # nor any Γ level within 2 eV of E_F: the eigenvalue error is no number, not a zero
    assert errors.n_eig == 0 and np.isnan(summarise([errors])["eigenvalue_mae_eV"])
