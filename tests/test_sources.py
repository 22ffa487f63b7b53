"""Structure sources against independent references: PySCF's harmonic analysis,
equipartition, the Eckart conditions and the strain/rattle statistics they promise."""

import json

import ase.io
import ase.units
import numpy as np
import pytest
from ase.build import bulk, molecule
from pyscf import dft, gto
from pyscf.data import nist
from pyscf.hessian import thermo

from ehpc import sources
from ehpc.sources import (
    SourceError,
    from_file,
    from_spec,
    from_spec_file,
    molecular_conformers,
    normal_modes,
    rattled_supercells,
)
from ehpc.units import MIN_INTERATOMIC_DISTANCE

# a cheap level of theory: the tests check the sampling, not the chemistry
BASIS, XC = "sto-3g", "lda,vwn"


@pytest.fixture(scope="module")
def water():
    return molecule("H2O")


@pytest.fixture(scope="module")
def reference_hessian(water):
    """Cartesian Hessian in eV/Å² computed here straight from PySCF."""
    mol = gto.M(atom=[(s, p) for s, p in zip(water.get_chemical_symbols(), water.positions)],
                basis=BASIS, unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = XC
    mf.kernel()
    h = mf.Hessian().kernel()  # [n, n, 3, 3] Hartree/Bohr²
    return mol, h, h.transpose(0, 2, 1, 3).reshape(9, 9) * ase.units.Hartree / ase.units.Bohr**2


def hbar_omega(omega2: np.ndarray) -> np.ndarray:
    """Vibrational quanta in eV from eigenvalues in eV/(Å² amu), via ASE's unit system."""
    omega_per_second = np.sqrt(omega2) * ase.units.s  # ASE's time unit is Å sqrt(amu/eV)
    return ase.units._hbar * omega_per_second / ase.units._e


def quanta_ev(analysis: dict) -> np.ndarray:
    """PySCF's harmonic frequencies as sorted quanta in eV (its freq_au has masses in amu)."""
    return np.sort(analysis["freq_au"].real) / np.sqrt(nist.AMU2AU) * nist.HARTREE2EV


def min_distance(atoms) -> float:
    d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
    return float(d[np.triu_indices(len(atoms), 1)].min())


def test_frequencies_match_pyscf_harmonic_analysis(water, reference_hessian):
    mol, h, _ = reference_hessian
    expected = quanta_ev(thermo.harmonic_analysis(mol, h))
    modes = normal_modes(water, BASIS, XC)
    assert len(modes.omega2) == 3 * len(water) - 6
    np.testing.assert_allclose(np.sort(hbar_omega(modes.omega2)), expected, rtol=1e-4)


def test_linear_molecule_has_one_rotation_fewer():
    co2 = molecule("CO2")
    mol = gto.M(atom=[(s, p) for s, p in zip(co2.get_chemical_symbols(), co2.positions)],
                basis=BASIS, unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = XC
    mf.kernel()
    expected = quanta_ev(thermo.harmonic_analysis(mol, mf.Hessian().kernel()))
    modes = normal_modes(co2, BASIS, XC)
    assert len(expected) == len(modes.omega2) == 3 * len(co2) - 5
    np.testing.assert_allclose(np.sort(hbar_omega(modes.omega2)), expected, rtol=1e-4)


def test_conformers_obey_equipartition_and_eckart(water, reference_hessian):
    _, _, hessian = reference_hessian
    temperature = 300.0
    confs = molecular_conformers(water, 3000, temperature, seed=3, basis=BASIS, xc=XC)
    displacements = np.array([c.positions - water.positions for c in confs])  # [n, atoms, 3]
    flat = displacements.reshape(len(confs), -1)
    energy = 0.5 * np.einsum("si,ij,sj->s", flat, hessian, flat)  # harmonic energy, eV
    kt = ase.units.kB * temperature
    # classical equipartition: kT/2 per vibrational mode, nothing in rigid-body motion
    np.testing.assert_allclose(energy.mean(), 0.5 * (3 * len(water) - 6) * kt, rtol=0.06)
    masses = water.get_masses()
    com_shift = np.einsum("a,sak->sk", masses, displacements) / masses.sum()
    np.testing.assert_allclose(com_shift, 0.0, atol=1e-12)
    centred = water.positions - masses @ water.positions / masses.sum()
    angular = np.einsum("a,sak->sk", masses, np.cross(centred[None], displacements))
    np.testing.assert_allclose(angular, 0.0, atol=1e-10)
    assert len({c.info["name"] for c in confs}) == len(confs)


def test_hot_conformers_keep_minimum_distance(water):
    temperature = 1.0e5
    modes = normal_modes(water, BASIS, XC)
    rng = np.random.default_rng(0)
    raw = [water.positions + modes.displacements(rng, temperature) for _ in range(300)]
    too_close = [p for p in raw if min_distance(ase.Atoms(water.numbers, p)) < MIN_INTERATOMIC_DISTANCE]
    assert len(too_close) > 10  # the distribution itself does produce clashes at this temperature
    confs = molecular_conformers(water, 300, temperature, seed=0, basis=BASIS, xc=XC)
    assert min(min_distance(c) for c in confs) >= MIN_INTERATOMIC_DISTANCE


def test_hessian_cache_is_read_back(tmp_path, water):
    first = sources.molecular_hessian(water, BASIS, XC, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("hessian-*.npy")
    np.save(cached, 2.0 * first)
    sources.hessian._HESSIANS.clear()
    again = sources.molecular_hessian(water, BASIS, XC, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, 2.0 * first)
    sources.hessian._HESSIANS.clear()


def test_pseudopotential_basis_is_refused_for_hessian(water):
    with pytest.raises(SourceError, match="all-electron"):
        molecular_conformers(water, 2, 300, basis="gth-szv", xc="pbe", prefix="w")


def test_supercell_strain_statistics_keep_fractional_coordinates():
    si = bulk("Si", "diamond", a=5.43)
    base = si.repeat((2, 1, 1))
    out = rattled_supercells(si, (2, 1, 1), n=300, rattle_std=0.0, strain_std=0.01, seed=1)
    strains = []
    for atoms in out:
        deformation = np.linalg.solve(base.cell[:], atoms.cell[:])
        np.testing.assert_allclose(deformation, deformation.T, atol=1e-12)
        np.testing.assert_allclose(atoms.get_scaled_positions(wrap=False), base.get_scaled_positions(wrap=False),
                                   atol=1e-12)
        strains.append(deformation - np.eye(3))
    strains = np.array(strains)
    voigt = strains[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]  # xx yy zz yz xz xy
    np.testing.assert_allclose(voigt.std(axis=0), 0.01, rtol=0.2)
    np.testing.assert_allclose(voigt.mean(axis=0), 0.0, atol=0.003)


def test_supercell_rattle_statistics_and_seed():
    si = bulk("Si", "diamond", a=5.43)
    out = rattled_supercells(si, (1, 1, 2), n=50, rattle_std=0.05, seed=7, prefix="Si")
    base = si.repeat((1, 1, 2))
    shifts = np.array([a.positions - base.positions for a in out])
    np.testing.assert_allclose(shifts.std(), 0.05, rtol=0.1)
    assert all(np.array_equal(a.cell[:], base.cell[:]) for a in out)
    assert [a.info["name"] for a in out[:2]] == ["Si_00000", "Si_00001"]
    again = rattled_supercells(si, (1, 1, 2), n=50, rattle_std=0.05, seed=7, prefix="Si")
    other = rattled_supercells(si, (1, 1, 2), n=50, rattle_std=0.05, seed=8, prefix="Si")
    assert np.array_equal(again[3].positions, out[3].positions)
    assert not np.allclose(other[3].positions, out[3].positions)


def test_from_spec_bulk_matches_direct_call():
    spec = {"kind": "bulk", "name": "Si", "crystal": "diamond", "a": 5.43, "repeat": [1, 1, 1],
            "n": 4, "rattle": 0.05, "strain": 0.01, "seed": 0}
    out = from_spec(spec)
    direct = rattled_supercells(bulk("Si", "diamond", a=5.43), (1, 1, 1), 4, 0.05, 0.01, seed=0, prefix="Si")
    assert [a.info["name"] for a in out] == [a.info["name"] for a in direct]
    for a, b in zip(out, direct):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell[:], b.cell[:])


def test_from_spec_molecule_uses_configured_level(water):
    spec = {"kind": "molecule", "name": "H2O", "n": 3, "temperature": 300, "seed": 0}
    out = from_spec(spec, basis=BASIS, xc=XC)
    direct = molecular_conformers(water, 3, 300.0, seed=0, basis=BASIS, xc=XC, prefix="H2O")
    for a, b in zip(out, direct):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-12)
    with pytest.raises(SourceError, match="hessian_basis"):
        from_spec(spec)


def test_from_spec_file_and_prefix(tmp_path):
    frames = [molecule("H2O"), molecule("NH3")]
    ase.io.write(tmp_path / "mols.xyz", frames)
    spec = tmp_path / "spec.yaml"
    spec.write_text("structures:\n  - {kind: file, path: mols.xyz}\n  - {kind: file, path: mols.xyz, prefix: again}\n")
    out = from_spec_file(spec)
    assert [a.info["name"] for a in out] == ["mols_00000", "mols_00001", "again_00000", "again_00001"]
    assert [a.get_chemical_formula() for a in out[:2]] == ["H2O", "H3N"]
    assert [a.info["name"] for a in from_file(tmp_path / "mols.xyz")] == ["mols_00000", "mols_00001"]
    spec.write_text(json.dumps([{"kind": "file", "path": "mols.xyz"}] * 2))
    with pytest.raises(SourceError, match="mols_00000: structure name used twice"):
        from_spec_file(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "bulk", "name": "Si", "rattel": 0.1}, "unknown key 'rattel' for kind 'bulk'"),
        ({"kind": "crystal", "name": "Si"}, "unknown kind 'crystal'"),
        ({"name": "Si"}, "unknown kind None"),
        ({"kind": "bulk"}, "needs key 'name'"),
        ({"kind": "bulk", "name": "Si", "n": "4"}, "key 'n' has invalid value '4'"),
        ({"kind": "bulk", "name": "Si", "n": True}, "key 'n' has invalid value True"),
        ({"kind": "bulk", "name": "Si", "n": 0}, "n must be a positive integer"),
        ({"kind": "bulk", "name": "Si", "repeat": [1, 2]}, "'repeat' must be three positive integers"),
        ({"kind": "molecule", "name": "H2O", "temperature": -5}, "temperature must be >= 0"),
        ({"kind": "molecule", "name": "H2O", "method": "md"}, "unknown conformer method 'md'"),
        ({"kind": "molecule", "name": "Unobtainium"}, "not a molecule in ase.collections.g2"),
        ({"kind": "file", "path": "missing.xyz"}, "structure file not found"),
    ],
)
def test_from_spec_errors_name_the_problem(spec, message, tmp_path):
    with pytest.raises((SourceError, ValueError), match=message.replace("(", r"\(").replace("[", r"\[")):
        from_spec(spec, basis=BASIS, xc=XC, base_dir=tmp_path)


def test_molecular_cluster_keeps_each_molecule_rigid_and_refuses_overlaps():
    from ase.build import molecule as g2_molecule

    from ehpc.sources import molecular_cluster

    water = g2_molecule("H2O")
    cluster = molecular_cluster(water, [3, 2, 2], 3.1, seed=1)
    assert len(cluster) == 36 and not cluster.pbc.any()
    assert cluster.info["name"] == "H2O_cluster_12"
    reference = water.get_all_distances()
    orientations = []
    for k in range(12):
        copy = cluster[3 * k: 3 * k + 3]
        np.testing.assert_allclose(copy.get_all_distances(), reference, atol=1e-12)
        orientations.append(copy.positions[1] - copy.positions[0])
    assert len({tuple(np.round(v, 6)) for v in orientations}) == 12  # randomly rotated
    again = molecular_cluster(water, [3, 2, 2], 3.1, seed=1)
    np.testing.assert_array_equal(again.positions, cluster.positions)
    with pytest.raises(SourceError, match="increase 'spacing'"):
        molecular_cluster(water, [3, 3, 3], 0.8)
    with pytest.raises(SourceError, match="grid"):
        molecular_cluster(water, [3, 3], 3.1)


def test_sheet_spec_builds_periodic_layers_with_vacuum():
    """2-D sheets come out fully periodic (as labels need) with the vacuum asked for
    between a layer and its periodic copy, and ASE's in-plane lattice."""
    from ehpc.sources import SourceError, from_spec

    sheets = from_spec({"kind": "sheet", "name": "C2", "repeat": [2, 2, 1], "n": 2,
                        "rattle": 0.02, "seed": 0, "vacuum": 12.0})
    assert len(sheets) == 2 and all(s.pbc.all() for s in sheets)
    flat = from_spec({"kind": "sheet", "name": "C2", "vacuum": 12.0})[0]
    z = flat.positions[:, 2]
    assert flat.cell[2, 2] - (z.max() - z.min()) == pytest.approx(12.0)
    assert np.linalg.norm(flat.cell[0]) == pytest.approx(2.46)
    assert len(sheets[0]) == 8
    mos2 = from_spec({"kind": "sheet", "name": "MoS2", "crystal": "mx2", "vacuum": 10.0})[0]
    assert mos2.get_chemical_formula() == "MoS2"
    for bad, message in [({"repeat": [1, 1, 2]}, "ending in 1"), ({"crystal": "hex"}, "not one of"),
                         ({"vacuum": -1.0}, "vacuum must be")]:
        with pytest.raises(SourceError, match=message):
            from_spec({"kind": "sheet", "name": "C2", **bad})
