"""``ehpc-basis`` output against PySCF and e3nn evaluated here directly."""

import json

import numpy as np
import pytest
import torch
from e3nn import o3
from pyscf import gto
from pyscf.pbc import gto as pbcgto

from ehpc.cli import basis as basis_cli


def pyscf_cell(symbol: str, basis: str) -> pbcgto.Cell:
    cell = pbcgto.Cell(atom=f"{symbol} 0 0 0", basis=basis, pseudo="gth-pbe", a=np.eye(3) * 10.0, verbose=0)
    cell.spin = 0
    cell.build()
    return cell


def test_json_matches_pyscf_and_e3nn(capsys):
    assert basis_cli.main(["gth-dzvp", "Si", "8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["basis"] == "gth-dzvp" and info["pseudo"] == "gth-pbe"
    for symbol, z in (("Si", 14), ("O", 8)):
        cell = pyscf_cell(symbol, "gth-dzvp")
        entry = info["elements"][symbol]
        assert entry["Z"] == z
        assert entry["nao"] == cell.nao_nr()
        assert entry["n_valence"] == round(cell.atom_charge(0))
        assert entry["n_core"] == z - round(cell.atom_charge(0))
        ls = [int(cell.bas_angular(b)) for b in range(cell.nbas) for _ in range(cell.bas_nctr(b))]
        assert entry["ls"] == ls
        assert sum(entry["shells_per_l"].values()) == len(ls)
    frame = info["e3nn_frame"]
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    for l_text, entry in info["pyscf_to_e3nn"].items():
        l = int(l_text)
        mol = gto.M(atom="H 0 0 0", basis={"H": [[l, [1.0, 1.0]]]}, spin=1, verbose=0)
        y_pyscf = mol.eval_gto("GTOval_sph", points)  # [n, 2l+1]
        y_e3nn = o3.spherical_harmonics(l, torch.as_tensor(points[:, frame]), normalize=True).numpy()
        for k, (p, s) in enumerate(zip(entry["perm"], entry["signs"])):
            ratio = y_e3nn[:, k] / (s * y_pyscf[:, p])
            assert np.all(ratio > 0)
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-8)


def test_text_output(capsys):
    assert basis_cli.main(["def2-svp", "O", "H"]) == 0
    out = capsys.readouterr().out
    assert "O (Z=8): nao 14, valence 8, core 0" in out
    assert "H (Z=1): nao 5, valence 1, core 0" in out
    assert "l=1: perm [1, 2, 0]" in out


@pytest.mark.parametrize(("argv", "message"), [(["gth-szv", "U"], "element U is not available in basis 'gth-szv'"),
                                              (["gth-szv", "Xx"], "'Xx' is not a chemical symbol")])
def test_unknown_element_is_one_line(capsys, argv, message):
    assert basis_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ehpc-basis: error: ") and message in err[0]


@pytest.mark.slow
def test_locality_table_scores_cutoffs_against_the_scf(capsys):
    """``--locality`` on primitive Si in gth-szv: one SCF, then the floor of each cutoff.

    Checked independently: the neighbour counts against ASE's neighbour list, and the
    size physics demands (a minimal basis cut at 5-6 Å misses the bands by an eV or more)."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    argv = ["gth-szv", "Si", "--locality", "--kmesh", "2", "2", "2", "--cutoffs", "5", "6",
            "--json"]
    assert basis_cli.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {row["cutoff"]: row for row in doc["rows"]}
    si = bulk("Si")
    for cutoff, row in rows.items():
        expected = (len(neighbor_list("i", si, cutoff)) + len(si)) / len(si)
        assert row["neighbours"] == pytest.approx(expected)
    assert min(rows[5.0]["exact_s_max"], rows[6.0]["exact_s_max"]) > 500.0
    assert min(rows[5.0]["exact_s_mae"], rows[6.0]["exact_s_mae"]) > 100.0
    assert doc["cutoff_for_meV"]["10.0"] is None  # neither cutoff reaches 10 meV
    assert 0.0 < doc["gap"] < 3.0 and doc["decay_radius"] > 6.0


def test_locality_of_several_elements_needs_a_structure(capsys):
    assert basis_cli.main(["gth-szv", "Si", "O", "--locality"]) == 2
    assert "need --structure" in capsys.readouterr().err


@pytest.mark.slow
def test_kmesh_convergence_scores_each_mesh_against_the_densest(capsys):
    """``--kmesh-convergence 1 2`` on primitive Si in gth-szv: the Γ-only row's level at Γ
    is that SCF's own eigenvalue (PySCF's RKS, run here apart), and a Γ-only density is
    far from converged (levels hundreds of meV off), so no coarser mesh qualifies."""
    from ase.build import bulk
    from pyscf.pbc import dft

    from ehpc.basis import Basis
    from ehpc.dft.periodic import build_cell
    from ehpc.units import HARTREE_TO_EV

    assert basis_cli.main(["gth-szv", "Si", "--kmesh-convergence", "2", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [row["kmesh"] for row in doc["rows"]] == [[1, 1, 1], [2, 2, 2]]
    assert doc["points"][0] == "G" and "X" in doc["points"] and "L" in doc["points"]
    coarse = doc["rows"][0]
    pcell = build_cell(bulk("Si"), Basis("gth-szv"), "si")
    mf = dft.RKS(pcell.cell, xc="pbe").multigrid_numint()
    mf.conv_tol = 1e-10
    mf.kernel()
    own = np.sort(mf.mo_energy)[doc["bands"]] * HARTREE_TO_EV
    assert np.allclose(coarse["levels_eV"][0], own, atol=2e-3)  # SCF tolerances apart
    assert coarse["max_meV"] > 200.0 and coarse["mae_meV"] > 100.0
    assert doc["mesh_for_meV"] == {"10.0": None, "1.0": None}


@pytest.mark.parametrize("argv, message", [
    (["--kmesh-convergence", "3"], "give at least two meshes"),
    (["--kmesh-convergence", "0", "2"], "must be positive"),
])
def test_kmesh_convergence_bad_input_is_one_line(capsys, argv, message):
    assert basis_cli.main(["gth-szv", "Si", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_scaled_meshes_keep_the_vacuum_axis_at_one_point():
    from ehpc.dft.mesh_convergence import scaled_meshes

    assert scaled_meshes([6, 3, 3], [True, True, False]) == [(3, 3, 1), (6, 6, 1)]
