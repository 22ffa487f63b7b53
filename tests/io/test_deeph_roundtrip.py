"""DeepH folders: exact round trips of PySCF-labelled records, the on-disk layout read
back with plain h5py/numpy, the orbital-convention table against explicit polynomials,
and clear failures on mismatched or malformed folders."""

import json

import h5py
import numpy as np
import pytest
from ase.build import bulk
from pyscf import gto

from ehpc.basis import Basis
from ehpc.cli import deeph as deeph_cli
from ehpc.graph import neighbour_list
from ehpc.io.dataset import Dataset, DatasetWriter, HamiltonianRecord, block_offsets
from ehpc.io.deeph import CONVENTIONS, DeepHError, atom_matrix, export_deeph, import_deeph
from ehpc.units import HARTREE_TO_EV

ARRAYS = ("numbers", "positions", "cell", "pbc", "atom_pairs", "block_offsets", "hamiltonian", "overlap")


def assert_records_equal(a: HamiltonianRecord, b: HamiltonianRecord) -> None:
    for key in ARRAYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype.kind == y.dtype.kind, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert a.attrs == b.attrs


def silicon_record() -> tuple[HamiltonianRecord, Basis]:
    """A periodic record with real PySCF lattice-summed blocks: S(R) and T(R) of Si gth-szv."""
    basis = Basis("gth-szv")
    atoms = bulk("Si", "diamond", a=5.43)
    edges = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, 4.0, self_edges=True)
    pairs = edges.atom_pairs()  # [n_pairs, 5]
    mols = {}

    def mol_at(shift):
        key = tuple(int(s) for s in shift)
        if key not in mols:
            pos = atoms.positions + np.asarray(shift) @ atoms.cell[:]
            mols[key] = gto.M(atom=[("Si", p) for p in pos], basis="gth-szv", unit="Angstrom", verbose=0)
        return mols[key]

    nao = basis.nao_per_atom(atoms.numbers)
    ao = np.concatenate([[0], np.cumsum(nao)])
    h, s = [], []
    for rx, ry, rz, i, j in pairs:
        m0, m1 = mol_at((0, 0, 0)), mol_at((rx, ry, rz))
        block = np.s_[ao[i]:ao[i + 1], ao[j]:ao[j + 1]]
        s.append(gto.intor_cross("int1e_ovlp", m0, m1)[block].ravel())
        h.append((gto.intor_cross("int1e_kin", m0, m1)[block] * HARTREE_TO_EV).ravel())
    record = HamiltonianRecord(
        name="Si", numbers=atoms.numbers.copy(), positions=atoms.positions.copy(), cell=atoms.cell[:].copy(),
        pbc=atoms.pbc.copy(), atom_pairs=pairs, block_offsets=block_offsets(pairs, nao),
        hamiltonian=np.concatenate(h), overlap=np.concatenate(s), attrs={"fermi_level": 6.25, "converged": True},
    )
    return record, basis


@pytest.mark.parametrize("convention", ["pyscf", "deeph"])
def test_water_roundtrip_is_exact(tmp_path, water_record, convention):
    basis = Basis("def2-svp")
    folder = export_deeph(water_record, basis, tmp_path / "water", convention)
    back = import_deeph(folder, basis, "water", convention)
    assert_records_equal(water_record, back)


def test_water_files_on_disk(tmp_path, water_record, water_pyscf):
    basis = Basis("def2-svp")
    folder = export_deeph(water_record, basis, tmp_path / "water", "pyscf")
    np.testing.assert_array_equal(np.loadtxt(folder / "element.dat"), [8, 1, 1])
    np.testing.assert_array_equal(np.loadtxt(folder / "site_positions.dat"), water_record.positions.T)
    lines = (folder / "orbital_types.dat").read_text().split("\n")
    assert lines[0].split() == ["0", "0", "0", "1", "1", "2"] and lines[1].split() == ["0", "0", "1"]
    info = json.loads((folder / "info.json").read_text())
    assert info["isspinful"] is False and info["fermi_level"] == water_record.attrs["fermi_level"]
    assert info["norbits"] == 24
    slices, fock, overlap = water_pyscf
    with h5py.File(folder / "hamiltonians.h5", "r") as f:
        expected = {f"[0, 0, 0, {i}, {j}]" for i in (1, 2, 3) for j in (1, 2, 3)}
        assert set(f.keys()) == expected
        # 1-based: "[0, 0, 0, 1, 2]" is oxygen (atom 0) with the first hydrogen (atom 1)
        assert f["[0, 0, 0, 1, 2]"].shape == (14, 5)
        for i in range(3):
            for j in range(3):
                np.testing.assert_allclose(f[f"[0, 0, 0, {i + 1}, {j + 1}]"][()],
                                           fock[slices[i], slices[j]], atol=1e-3)  # SCF settings
    with h5py.File(folder / "overlaps.h5", "r") as f:
        for i in range(3):
            for j in range(3):
                np.testing.assert_allclose(f[f"[0, 0, 0, {i + 1}, {j + 1}]"][()],
                                           overlap[slices[i], slices[j]], atol=1e-12)


def test_silicon_roundtrip_keeps_cell_shifts(tmp_path):
    record, basis = silicon_record()
    folder = export_deeph(record, basis, tmp_path / "si", "deeph")
    back = import_deeph(folder, basis, "Si", "deeph")
    assert_records_equal(record, back)
    np.testing.assert_array_equal(np.loadtxt(folder / "lat.dat"), record.cell.T)
    rlat = np.loadtxt(folder / "rlat.dat")
    np.testing.assert_allclose(record.cell @ rlat, 2 * np.pi * np.eye(3), atol=1e-12)
    with h5py.File(folder / "hamiltonians.h5", "r") as f:
        keys = [json.loads(k) for k in f]
        assert len(keys) == record.n_pairs
        assert {tuple(k[3:]) for k in keys} == {(1, 1), (1, 2), (2, 1), (2, 2)}
        for rx, ry, rz, i, j in keys:  # hermiticity links (i, j, R) and (j, i, -R)
            np.testing.assert_allclose(f[f"[{rx}, {ry}, {rz}, {i}, {j}]"][()],
                                       f[f"[{-rx}, {-ry}, {-rz}, {j}, {i}]"][()].T, atol=1e-12)


def test_import_restores_dropped_blocks(tmp_path):
    record, basis = silicon_record()
    folder = export_deeph(record, basis, tmp_path / "si", "pyscf")
    rx, ry, rz = next(row[:3] for row in record.atom_pairs if row[3] == 0 and row[4] == 1 and row[:3].any())
    with h5py.File(folder / "hamiltonians.h5", "a") as f:
        del f[f"[{rx}, {ry}, {rz}, 1, 2]"]  # its reverse [-R, 2, 1] stays
    with h5py.File(folder / "overlaps.h5", "a") as f:
        del f["[0, 0, 0, 1, 2]"]
        del f["[0, 0, 0, 2, 1]"]  # both directions gone: zero block
    back = import_deeph(folder, basis, "Si", "pyscf")
    np.testing.assert_array_equal(back.atom_pairs, record.atom_pairs)
    nao = basis.nao_per_atom(record.numbers)
    dropped = next(k for k, row in enumerate(record.atom_pairs) if tuple(row) == (rx, ry, rz, 0, 1))
    reverse = next(k for k, row in enumerate(record.atom_pairs) if tuple(row) == (-rx, -ry, -rz, 1, 0))
    np.testing.assert_array_equal(back.block(dropped, nao), record.block(reverse, nao).T)
    np.testing.assert_allclose(back.hamiltonian, record.hamiltonian, atol=1e-14)
    p = next(k for k, row in enumerate(record.atom_pairs) if tuple(row) == (0, 0, 0, 0, 1))
    assert np.all(back.block(p, nao, "overlap") == 0)
    assert np.abs(record.block(p, nao, "overlap")).max() > 0.1


@pytest.mark.parametrize("l", [1, 2, 3])
def test_deeph_convention_matches_real_harmonic_polynomials(l):
    """DeepH/OpenMX order: p (x,y,z); d (3z²-r², x²-y², xy, xz, yz); f (z(5z²-3r²), x(5z²-r²),
    y(5z²-r²), z(x²-y²), xyz, x(x²-3y²), y(3x²-y²)), all with positive coefficients."""
    rng = np.random.default_rng(l)
    pts = rng.normal(size=(50, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    x, y, z = pts.T
    polynomials = {
        1: [x, y, z],
        2: [3 * z * z - 1, x * x - y * y, x * y, x * z, y * z],
        3: [z * (5 * z * z - 3), x * (5 * z * z - 1), y * (5 * z * z - 1), z * (x * x - y * y), x * y * z,
            x * (x * x - 3 * y * y), y * (3 * x * x - y * y)],
    }[l]
    mol = gto.M(atom="H 0 0 0", basis={"H": [[l, [1.0, 1.0]]]}, spin=1, verbose=0)
    values = mol.eval_gto("GTOval_sph", pts)  # [n_points, 2l+1], PySCF order
    deeph = values @ atom_matrix([l], "deeph").T  # [n_points, 2l+1], DeepH order
    for k, poly in enumerate(polynomials):
        ratio = deeph[:, k] / poly
        assert np.all(ratio > 0), f"l={l} component {k} has the wrong sign"
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-8)


def test_pyscf_convention_is_identity():
    for l, (perm, signs) in CONVENTIONS["pyscf"].items():
        assert list(perm) == list(range(2 * l + 1)) and set(signs) == {1.0}


def test_basis_mismatch_names_atom_and_shells(tmp_path, water_record):
    folder = export_deeph(water_record, Basis("def2-svp"), tmp_path / "water", "pyscf")
    with pytest.raises(DeepHError, match=r"atom 1 \(Z=8\) has shells l=\[0, 0, 0, 1, 1, 2\] but basis 'sto-3g'"):
        import_deeph(folder, Basis("sto-3g"), "water")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("spinful", "spinful"),
        ("zero_based", r"outside 1..3 \(indices are 1-based\)"),
        ("bad_key", "is not of the form"),
        ("no_positions", "site_positions.dat: missing"),
        ("shape", r"has shape \(2, 2\), the basis needs \(14, 14\)"),
        ("convention", "unknown orbital convention 'siesta'"),
    ],
)
def test_malformed_folders_fail_clearly(tmp_path, water_record, damage, message):
    folder = export_deeph(water_record, Basis("def2-svp"), tmp_path / "water", "pyscf")
    convention = "pyscf"
    if damage == "spinful":
        info = json.loads((folder / "info.json").read_text())
        (folder / "info.json").write_text(json.dumps({**info, "isspinful": True}))
    elif damage in ("zero_based", "bad_key", "shape"):
        with h5py.File(folder / "hamiltonians.h5", "a") as f:
            if damage == "shape":
                del f["[0, 0, 0, 1, 1]"]
                f["[0, 0, 0, 1, 1]"] = np.zeros((2, 2))
            else:
                f["[0, 0, 0, 0, 1]" if damage == "zero_based" else "H_0_1"] = np.zeros((14, 5))
    elif damage == "no_positions":
        (folder / "site_positions.dat").unlink()
    else:
        convention = "siesta"
    with pytest.raises(DeepHError, match=message):
        import_deeph(folder, Basis("def2-svp"), "water", convention)


def test_cli_export_import_roundtrip(tmp_path, water_record, capsys):
    basis = Basis("def2-svp")
    with DatasetWriter(tmp_path / "in.h5", basis, "pbe", "pyscf", "test") as writer:
        writer.write(water_record)
    assert deeph_cli.main(["export", str(tmp_path / "in.h5"), str(tmp_path / "deeph"), "--convention", "deeph"]) == 0
    assert (tmp_path / "deeph" / "water" / "hamiltonians.h5").is_file()
    assert deeph_cli.main(["import", str(tmp_path / "deeph"), "--basis", "def2-svp", "--xc", "pbe",
                           "--convention", "deeph", "--out", str(tmp_path / "out.h5")]) == 0
    assert_records_equal(water_record, Dataset(tmp_path / "out.h5")[0])
    capsys.readouterr()
    assert deeph_cli.main(["import", str(tmp_path / "deeph"), "--basis", "sto-3g", "--xc", "pbe",
                           "--convention", "deeph", "--out", str(tmp_path / "bad.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ehpc-deeph: error:") and "def2-svp" in err[0]
    assert not (tmp_path / "bad.h5").exists()
