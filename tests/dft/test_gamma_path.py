"""Γ-only crystal labels: the real-arithmetic RKS route agrees with a one-k-point KRKS.

``run_krks`` solves a Γ-only SCF as a real RKS (PySCF's pair multigrid) and hands it on as
a one-k-point KRKS object; the reference here is PySCF's own KRKS at k = 0 with the
multigrid integrator, labelled by the same ``crystal_record``.
"""

import numpy as np
import pytest
from ase.build import bulk

from ehpc.basis import Basis
from ehpc.dft.periodic import build_cell, crystal_record, run_krks
from ehpc.units import HARTREE_TO_EV

BASIS = Basis("gth-szv")
XC = "pbe"
CUTOFF = 4.0
CONV_TOL = 1e-11
#: eV; the two routes integrate on different multigrids, which agree to ~1e-7 eV on H
TOL_EV = 1e-5


@pytest.fixture(scope="module")
def silicon():
    """Strained primitive Si with displaced atoms: gapped at Γ, no symmetry left."""
    rng = np.random.default_rng(3)
    si = bulk("Si", "diamond", a=5.43)
    si.set_cell(si.cell[:] @ (np.eye(3) + rng.normal(scale=0.03, size=(3, 3))), scale_atoms=True)
    si.positions += rng.normal(scale=0.03, size=si.positions.shape)
    return si


@pytest.fixture(scope="module")
def both_routes(silicon):
    from pyscf.pbc import dft

    pcell = build_cell(silicon, BASIS, "si")
    fast = run_krks(pcell, XC, (1, 1, 1), "si", conv_tol=CONV_TOL)
    reference = dft.KRKS(pcell.cell, np.zeros((1, 3)), xc=XC).multigrid_numint()
    reference.conv_tol = CONV_TOL
    reference.kernel()
    assert reference.converged
    return [crystal_record(silicon, BASIS, mf, pcell, CUTOFF, "si", XC, (1, 1, 1))
            for mf in (fast, reference)]


def test_gamma_route_gives_the_same_blocks(both_routes):
    fast, reference = both_routes
    np.testing.assert_array_equal(fast.atom_pairs, reference.atom_pairs)
    np.testing.assert_array_equal(fast.overlap, reference.overlap)
    assert np.abs(fast.hamiltonian - reference.hamiltonian).max() < TOL_EV
    assert np.abs(reference.hamiltonian).max() > 1.0  # the blocks are not trivially small


def test_gamma_route_gives_the_same_levels(both_routes):
    fast, reference = both_routes
    for key in ("homo", "lumo", "fermi_level"):
        assert fast.attrs[key] == pytest.approx(reference.attrs[key], abs=1e-3), key
    assert fast.attrs["energy"] == pytest.approx(reference.attrs["energy"], abs=1e-5 * HARTREE_TO_EV)
    assert fast.attrs["converged"] and fast.attrs["scf_cycles"] > 0


def test_a_rerun_starts_from_the_checkpoint(tmp_path):
    """The SCF's checkpoint lets a rerun (after a failure past the SCF) skip the SCF.

    The rattled 8-atom cell needs a few cycles from PySCF's default guess (the primitive
    cell converges in one, which would prove nothing).
    """
    cubic = bulk("Si", "diamond", a=5.43, cubic=True)
    cubic.positions += np.random.default_rng(4).normal(scale=0.05, size=cubic.positions.shape)
    chk = tmp_path / "si8.chk"

    def scf():
        return run_krks(build_cell(cubic, BASIS, "si8"), XC, (1, 1, 1), "si8", conv_tol=1e-9,
                        chkfile=chk)

    first = scf()
    assert chk.is_file()
    rerun = scf()
    assert first.cycles > 2 and rerun.cycles <= 2, (first.cycles, rerun.cycles)
    assert rerun.e_tot == pytest.approx(first.e_tot, abs=1e-8)
    np.testing.assert_allclose(rerun.mo_energy[0], first.mo_energy[0], atol=1e-5)
