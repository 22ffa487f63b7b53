"""Where structures come from: files, perturbed crystals, thermal molecules, molecular clusters.

Every source returns a list of ``ase.Atoms`` whose ``atoms.info["name"]`` is set and
unique within the list, so each structure can become one labelled file of its own.
All sampling is seeded, so a restarted or chunked run rebuilds the same structures.

Molecular conformers are drawn from the classical harmonic (normal-mode) distribution at
temperature T: each vibrational normal coordinate q_k (mass-weighted) is Gaussian with
variance k_B T / omega_k^2, where omega_k^2 are eigenvalues of the mass-weighted Hessian
with translations and rotations projected out (Wilson, Decius & Cross, *Molecular
Vibrations*, ch. 2).  The Hessian comes from PySCF at the configured basis and
functional and is cached by geometry and level of theory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .atomic import replacing
from .basis import Basis
from .errors import UserError
from .structure import StructureError, read_structures, validate
from .units import BOHR_TO_ANGSTROM, BOLTZMANN_EV_PER_K, HARTREE_TO_EV

#: resampling attempts per structure before giving up on a too-hot or too-rattled source
MAX_ATTEMPTS = 100

#: mass-weighted eigenvalues below this fraction of the largest count as rigid-body modes
RIGID_BODY_TOLERANCE = 1e-10


class SourceError(UserError, ValueError):
    """A structure source that is misconfigured or cannot produce valid structures."""


def from_file(path: str | Path) -> list[Atoms]:
    """Every frame of any file ``ase.io.read`` understands, named ``<stem>`` or ``<stem>_<k>``."""
    return read_structures(path)


# ---------------------------------------------------------------------------
# Crystals


def rattled_supercells(
    atoms: Atoms,
    repeat=(1, 1, 1),
    n: int = 1,
    rattle_std: float = 0.0,
    strain_std: float = 0.0,
    seed: int = 0,
    prefix: str | None = None,
) -> list[Atoms]:
    """Supercells with random homogeneous strain and random atomic displacements.

    Args:
        atoms: the primitive or conventional cell.
        repeat: supercell multiples along the three lattice vectors.
        n: number of structures.
        rattle_std: standard deviation of each Cartesian displacement, in Å.
        strain_std: standard deviation of each of the six independent components of the
            symmetric strain tensor (fractional); the cell and positions are deformed by
            ``(1 + strain)`` so fractional coordinates are kept before rattling.
        seed: random seed.
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Returns:
        ``n`` structures named ``<prefix>_<k>``, each with all distances at least
        ``MIN_INTERATOMIC_DISTANCE``.
    """
    _check_positive_int(n, "n", prefix)
    check_spread(rattle_std, "rattle_std", prefix or "supercell")
    check_spread(strain_std, "strain_std", prefix or "supercell")
    base = atoms.repeat(tuple(int(r) for r in repeat))
    prefix = prefix or _default_prefix(atoms)
    rng = np.random.default_rng(seed)

    def sample() -> Atoms:
        eps = _symmetric_strain(rng, strain_std)  # [3, 3]
        deformation = np.eye(3) + eps
        new = base.copy()
        new.set_cell(base.cell[:] @ deformation, scale_atoms=False)
        noise = rng.normal(scale=rattle_std, size=base.positions.shape)  # [n_atoms, 3] Å
        new.positions = base.positions @ deformation + noise
        return new

    return _sample_valid(sample, n, prefix, "lower rattle_std or strain_std")


def check_spread(value, key: str, where: str) -> float:
    """``value`` as a float if it is a finite standard deviation (>= 0), else SourceError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number) or number < 0:
        raise SourceError(f"{where}: {key} must be a finite number >= 0, got {value!r}")
    return number


def rattle(atoms: Atoms, stdev: float, seed: int = 0, where: str = "--rattle") -> Atoms:
    """Displace every atom by a seeded Gaussian of ``stdev`` Å, in place; the name is kept.

    The same seed gives the same positions on every MPI rank.  A negative or non-finite
    ``stdev`` raises SourceError naming ``where`` (the option or spec key).
    """
    stdev = check_spread(stdev, "standard deviation", where)
    if stdev > 0:
        info = dict(atoms.info)
        atoms.rattle(stdev=stdev, seed=seed)
        atoms.info = info
    return atoms


def _symmetric_strain(rng: np.random.Generator, std: float) -> np.ndarray:
    """Strain tensor with six independent Gaussian (Voigt) components."""
    voigt = rng.normal(scale=std, size=6)  # [6]: xx, yy, zz, yz, xz, xy
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# ---------------------------------------------------------------------------
# Molecules


@dataclass(frozen=True)
class NormalModes:
    """Vibrational normal modes of a molecule at its reference geometry.

    Attributes:
        omega2: mass-weighted Hessian eigenvalues in eV / (Å² amu).  # [n_modes]
        vectors: orthonormal mass-weighted mode vectors.              # [3 n_atoms, n_modes]
        masses: atomic masses in amu.                                  # [n_atoms]
    """

    omega2: np.ndarray
    vectors: np.ndarray
    masses: np.ndarray

    def displacements(self, rng: np.random.Generator, temperature: float) -> np.ndarray:
        """One classical thermal sample of Cartesian displacements in Å.  # [n_atoms, 3]"""
        kt = BOLTZMANN_EV_PER_K * temperature  # eV
        q = rng.normal(size=len(self.omega2)) * np.sqrt(kt / np.abs(self.omega2))  # [n_modes]
        weighted = self.vectors @ q  # [3 n_atoms], Å amu^1/2
        return weighted.reshape(-1, 3) / np.sqrt(self.masses)[:, None]


def molecular_conformers(
    atoms: Atoms,
    n: int,
    temperature: float,
    seed: int = 0,
    method: str = "normal_modes",
    basis: Basis | str = "def2-svp",
    xc: str = "pbe",
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    prefix: str | None = None,
) -> list[Atoms]:
    """Thermal conformers of a molecule around its reference geometry.

    Args:
        atoms: the molecule (ideally near a minimum of the chosen level of theory; modes
            with negative curvature are sampled with their absolute curvature, with a
            warning).
        n: number of conformers.
        temperature: temperature in K of the classical harmonic distribution.
        seed: random seed.
        method: ``"normal_modes"`` (the only one implemented).
        basis: all-electron basis of the PySCF Hessian.
        xc: functional of the PySCF Hessian.
        charge: molecular charge.
        spin: 2S; defaults to 0 or 1 by electron parity.
        cache_dir: folder for Hessians on disk (shared by restarts and chunked jobs).
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Returns:
        ``n`` molecules named ``<prefix>_<k>`` with every distance at least
        ``MIN_INTERATOMIC_DISTANCE``.
    """
    prefix = prefix or _default_prefix(atoms)
    _check_positive_int(n, "n", prefix)
    if not np.isfinite(temperature) or temperature < 0:
        raise SourceError(f"{prefix}: temperature must be >= 0 K, got {temperature}")
    if method not in CONFORMER_METHODS:
        raise SourceError(
            f"{prefix}: unknown conformer method {method!r}; "
            f"choose from {sorted(CONFORMER_METHODS)}"
        )
    try:
        validate(atoms, prefix)
    except StructureError as err:
        raise SourceError(f"reference geometry: {err}") from None
    sampler = CONFORMER_METHODS[method]
    return sampler(atoms, n, temperature, seed, _as_basis(basis), xc, charge, spin, cache_dir,
                   prefix)


def molecular_cluster(
    atoms: Atoms, grid, spacing: float, seed: int = 0, prefix: str | None = None
) -> Atoms:
    """Copies of a molecule, each randomly rotated, on a cubic grid: a finite cluster.

    A quick stand-in for a liquid droplet when testing inference at scale (water at
    ``spacing`` 3.1 Å has about the density of liquid water).

    Args:
        atoms: the molecule.
        grid: copies along x, y and z.
        spacing: distance in Å between neighbouring molecular centres.
        seed: random seed of the orientations.
        prefix: name stem; defaults to ``atoms.info["name"]`` or the formula.

    Raises:
        SourceError: a bad grid or spacing, or two copies closer than
            ``MIN_INTERATOMIC_DISTANCE``.
    """
    from scipy.spatial.transform import Rotation

    prefix = prefix or _default_prefix(atoms)
    if len(grid) != 3 or not all(isinstance(g, int) and g >= 1 for g in grid):
        raise SourceError(f"{prefix}: 'grid' must be three positive integers, got {grid!r}")
    if not np.isfinite(spacing) or spacing <= 0:
        raise SourceError(f"{prefix}: 'spacing' must be a positive length in Å, got {spacing}")
    rng = np.random.default_rng(seed)
    centred = atoms.positions - atoms.get_center_of_mass()  # [n_mol, 3]
    centres = spacing * np.array(list(itertools.product(*[range(g) for g in grid])), float)
    rotations = Rotation.random(len(centres), random_state=rng).as_matrix()  # [n_copies, 3, 3]
    positions = np.einsum("cij,aj->cai", rotations, centred) + centres[:, None, :]
    cluster = Atoms(numbers=np.tile(atoms.numbers, len(centres)),
                    positions=positions.reshape(-1, 3), pbc=False)
    cluster.info["name"] = f"{prefix}_cluster_{len(centres)}"
    try:
        validate(cluster, cluster.info["name"])
    except StructureError as err:
        raise SourceError(f"{err}; increase 'spacing'") from None
    return cluster


def _normal_mode_conformers(
    atoms, n, temperature, seed, basis, xc, charge, spin, cache_dir, prefix
) -> list[Atoms]:
    modes = normal_modes(atoms, basis, xc, charge, spin, cache_dir, prefix)
    rng = np.random.default_rng(seed)

    def sample() -> Atoms:
        new = atoms.copy()
        new.positions = atoms.positions + modes.displacements(rng, temperature)
        return new

    return _sample_valid(sample, n, prefix, "lower the temperature")


#: conformer samplers by name; each takes the arguments of :func:`molecular_conformers`
CONFORMER_METHODS: dict[str, Callable[..., list[Atoms]]] = {"normal_modes": _normal_mode_conformers}


def normal_modes(
    atoms: Atoms,
    basis: Basis | str,
    xc: str,
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> NormalModes:
    """Vibrational modes from the PySCF Hessian, rigid-body motions projected out.

    Args:
        atoms: the molecule (``pbc`` must be off).
        basis: all-electron basis.
        xc: functional.
        charge: molecular charge.
        spin: 2S; defaults to electron parity.
        cache_dir: optional on-disk Hessian cache.
        name: structure name for messages.
    """
    name = name or _default_prefix(atoms)
    basis = _as_basis(basis)
    if len(atoms) < 2:
        raise SourceError(f"{name}: a single atom has no vibrations; use more than one atom")
    hessian = molecular_hessian(atoms, basis, xc, charge, spin, cache_dir, name)  # [3N, 3N] eV/Å²
    masses = atoms.get_masses()  # [n_atoms] amu
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)  # [3N]
    weighted = hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]  # [3N, 3N]
    complement = _vibrational_subspace(atoms.positions, masses)  # [3N, n_vib]
    omega2, v = np.linalg.eigh(complement.T @ weighted @ complement)
    scale = max(np.abs(omega2).max(), np.finfo(float).tiny)
    soft = np.abs(omega2) < RIGID_BODY_TOLERANCE * scale
    if soft.any():
        raise SourceError(
            f"{name}: Hessian has {int(soft.sum())} vibrational mode(s) with zero curvature"
        )
    if (omega2 < 0).any():
        warnings.warn(
            f"{name}: {int((omega2 < 0).sum())} imaginary mode(s) at {basis.name}/{xc}; the "
            "geometry is not a minimum, those modes are sampled with their absolute curvature",
            stacklevel=2,
        )
    return NormalModes(omega2=omega2, vectors=complement @ v, masses=masses)


def _vibrational_subspace(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis of mass-weighted displacements with no translation or rotation.

    Translations are ``sqrt(m_a) e_k`` and infinitesimal rotations ``sqrt(m_a) e_k x r_a``
    (r from the centre of mass); the Eckart conditions make the vibrations orthogonal to
    both.  Linear molecules have one rotation fewer, found from the rank.
    """
    n = len(masses)
    sqrt_m = np.sqrt(masses)[:, None]  # [n, 1]
    centred = positions - masses @ positions / masses.sum()  # [n, 3]
    rigid = []
    for k in range(3):
        axis = np.eye(3)[k]
        rigid.append((sqrt_m * axis).ravel())
        rigid.append((sqrt_m * np.cross(axis, centred)).ravel())
    u, s, _ = np.linalg.svd(np.array(rigid).T, full_matrices=True)  # u: [3N, 3N]
    rank = int((s > RIGID_BODY_TOLERANCE ** 0.5 * s.max()).sum())
    return u[:, rank:3 * n]


_HESSIANS: dict[str, np.ndarray] = {}


def molecular_hessian(
    atoms: Atoms,
    basis: Basis | str,
    xc: str,
    charge: int = 0,
    spin: int | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Cartesian Hessian in eV/Å² from a PySCF Kohn-Sham calculation, cached.  # [3N, 3N]

    The cache key is the geometry, charge, spin, basis and functional, so a restarted
    job or another chunk of the same run reuses the result from ``cache_dir``.
    """
    basis = _as_basis(basis)
    name = name or _default_prefix(atoms)
    if basis.is_pseudo:
        raise SourceError(
            f"{name}: basis {basis.name!r} uses a pseudopotential; the molecular Hessian needs an "
            "all-electron basis (set 'hessian_basis', e.g. def2-svp)"
        )
    if np.asarray(atoms.pbc).any():
        raise SourceError(f"{name}: normal-mode sampling is for molecules; set pbc=False")
    spin = _default_spin(atoms, charge) if spin is None else int(spin)
    key = _hessian_key(atoms, basis, xc, charge, spin)
    path = Path(cache_dir) / f"hessian-{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        hessian = np.load(path)
    elif key in _HESSIANS:
        hessian = _HESSIANS[key]
    else:
        hessian = _pyscf_hessian(atoms, basis, xc, charge, spin, name)
    if path is not None and not path.is_file():
        _save_atomic(path, hessian)
    _HESSIANS[key] = hessian
    return hessian.copy()


def _pyscf_hessian(atoms, basis: Basis, xc: str, charge: int, spin: int, name: str) -> np.ndarray:
    from pyscf import dft, gto

    mol = gto.M(
        atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
        unit="Angstrom", basis=basis.name, charge=charge, spin=spin, verbose=0,
    )
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = xc
    mf.kernel()
    if not mf.converged:
        raise SourceError(
            f"{name}: SCF for the normal-mode Hessian did not converge at {basis.name}/{xc}"
        )
    hessian = mf.Hessian().kernel()  # [n_atoms, n_atoms, 3, 3] Hartree/Bohr²
    n = len(atoms)
    hessian = hessian.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)  # [3N, 3N]
    hessian = 0.5 * (hessian + hessian.T)
    return hessian * HARTREE_TO_EV / BOHR_TO_ANGSTROM**2


def _hessian_key(atoms: Atoms, basis: Basis, xc: str, charge: int, spin: int) -> str:
    payload = json.dumps({
        "numbers": atoms.numbers.tolist(),
        "positions": [f"{x:.10f}" for x in atoms.positions.ravel()],
        "basis": basis.name, "pseudo": basis.pseudo, "xc": xc.lower(),
        "charge": charge, "spin": spin,
    })
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _default_spin(atoms: Atoms, charge: int) -> int:
    return int((atoms.numbers.sum() - charge) % 2)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# ---------------------------------------------------------------------------
# Shared helpers


def _sample_valid(sample: Callable[[], Atoms], n: int, prefix: str, fix: str) -> list[Atoms]:
    """Draw ``n`` structures, redrawing any that fail :func:`ehpc.structure.validate`."""
    out = []
    for k in range(n):
        name = f"{prefix}_{k:05d}"
        for _ in range(MAX_ATTEMPTS):
            atoms = sample()
            try:
                validate(atoms, name)
            except StructureError:
                continue
            break
        else:
            raise SourceError(f"{name}: no valid structure in {MAX_ATTEMPTS} draws; {fix}")
        atoms.info = {"name": name}
        out.append(atoms)
    return out


def _default_prefix(atoms: Atoms) -> str:
    return str(atoms.info.get("name") or atoms.get_chemical_formula())


def _as_basis(basis: Basis | str) -> Basis:
    return basis if isinstance(basis, Basis) else Basis(str(basis))


def _check_positive_int(value, key: str, where: str | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SourceError(f"{where or 'source'}: {key} must be a positive integer, got {value!r}")


def check_unique_names(structures: Iterable[Atoms]) -> None:
    """Raise SourceError naming the first structure name used twice."""
    seen: set[str] = set()
    for atoms in structures:
        name = atoms.info.get("name")
        if not name:
            formula = atoms.get_chemical_formula()
            raise SourceError(f"structure {formula} has no name (set atoms.info['name'])")
        if name in seen:
            raise SourceError(
                f"{name}: structure name used twice; give each source a distinct 'prefix'"
            )
        seen.add(name)


# ---------------------------------------------------------------------------
# Config specs

#: Å of empty space between periodic copies of a 2-D sheet
SHEET_VACUUM = 15.0

#: allowed keys of each spec kind, with their type and default (``REQUIRED`` if none)
REQUIRED = object()
SPEC_KEYS: dict[str, dict[str, tuple[type | tuple[type, ...], object]]] = {
    "file": {"path": (str, REQUIRED), "prefix": (str, None)},
    "molecule": {
        "name": (str, REQUIRED), "path": (str, None), "prefix": (str, None),
        "n": (int, 1), "temperature": ((int, float), 300.0), "seed": (int, 0),
        "method": (str, "normal_modes"), "charge": (int, 0), "spin": (int, None),
        "hessian_basis": (str, None), "hessian_xc": (str, None),
    },
    "cluster": {
        "name": (str, REQUIRED), "path": (str, None), "prefix": (str, None),
        "grid": ((list, tuple), REQUIRED), "spacing": ((int, float), REQUIRED), "seed": (int, 0),
    },
    "bulk": {
        "name": (str, REQUIRED), "crystal": (str, None), "a": ((int, float), None),
        "c": ((int, float), None), "cubic": (bool, False), "orthorhombic": (bool, False),
        "repeat": ((list, tuple), [1, 1, 1]), "n": (int, 1), "rattle": ((int, float), 0.0),
        "strain": ((int, float), 0.0), "seed": (int, 0), "prefix": (str, None),
    },
    "sheet": {
        "name": (str, REQUIRED), "crystal": (str, "graphene"), "a": ((int, float), None),
        "thickness": ((int, float), None), "vacuum": ((int, float), SHEET_VACUUM),
        "repeat": ((list, tuple), [1, 1, 1]), "n": (int, 1), "rattle": ((int, float), 0.0),
        "strain": ((int, float), 0.0), "seed": (int, 0), "prefix": (str, None),
    },
}


#: numeric spec keys with a lower bound: key -> (bound, whether the bound itself is excluded)
SPEC_RANGES = {
    "n": (1, False), "rattle": (0, False), "strain": (0, False), "temperature": (0, False),
    "spacing": (0, True), "a": (0, True), "c": (0, True), "thickness": (0, True),
    "vacuum": (0, True),
}

def from_spec(
    spec: dict,
    basis: Basis | str | None = None,
    xc: str | None = None,
    base_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> list[Atoms]:
    """Structures described by one config entry.

    Examples of ``spec``::

        {"kind": "molecule", "name": "H2O", "n": 10, "temperature": 300, "seed": 0}
        {"kind": "bulk", "name": "Si", "crystal": "diamond", "a": 5.43, "repeat": [1, 1, 1],
         "n": 4, "rattle": 0.05, "strain": 0.01, "seed": 0}
        {"kind": "file", "path": "structures.extxyz"}

    Args:
        spec: the entry; unknown kinds or keys raise SourceError naming them.
        basis: level of theory of molecular Hessians unless the spec sets
            ``hessian_basis``.
        xc: functional of molecular Hessians unless the spec sets ``hessian_xc``.
        base_dir: folder that relative ``path`` values are relative to.
        cache_dir: on-disk Hessian cache.
    """
    values = check_spec(spec)
    base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
    return SPEC_BUILDERS[spec["kind"]](values, basis, xc, base_dir, cache_dir)


def check_spec(spec: dict) -> dict:
    """The spec's values with defaults filled in; SourceError names a bad kind, key or value.

    Cheap (nothing is built), so a workflow can check every spec before any job starts.
    """
    if not isinstance(spec, dict):
        raise SourceError(f"structure spec must be a mapping, got {type(spec).__name__}: {spec!r}")
    kind = spec.get("kind")
    if kind not in SPEC_KEYS:
        raise SourceError(
            f"structure spec {_label(spec)}: unknown kind {kind!r}; choose from {sorted(SPEC_KEYS)}"
        )
    return _spec_values(spec, kind)


def _spec_values(spec: dict, kind: str) -> dict:
    allowed = SPEC_KEYS[kind]
    label = _label(spec)
    for key in spec:
        if key != "kind" and key not in allowed:
            raise SourceError(
                f"structure spec {label}: unknown key {key!r} for kind {kind!r} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
    values = {}
    for key, (types, default) in allowed.items():
        if key not in spec or spec[key] is None:
            if default is REQUIRED:
                raise SourceError(f"structure spec {label}: kind {kind!r} needs key {key!r}")
            values[key] = default
            continue
        value = spec[key]
        bool_for_number = isinstance(value, bool) and bool not in _as_tuple(types)
        if not isinstance(value, types) or bool_for_number:
            raise SourceError(f"structure spec {label}: key {key!r} has invalid value {value!r}")
        values[key] = value
    for key, (low, strict) in SPEC_RANGES.items():
        value = values.get(key)
        if key not in allowed or value is None:
            continue
        if not np.isfinite(value) or value < low or (strict and value == low):
            bound = "a positive integer" if key == "n" else f"{'>' if strict else '>='} {low}"
            raise SourceError(f"structure spec {label}: {key} must be {bound}, got {value!r}")
    return values


def _build_file(values, basis, xc, base_dir: Path, cache_dir) -> list[Atoms]:
    path = Path(values["path"])
    frames = from_file(path if path.is_absolute() else base_dir / path)
    if values["prefix"]:
        for k, atoms in enumerate(frames):
            atoms.info["name"] = f"{values['prefix']}_{k:05d}"
    return frames


def _reference_molecule(name: str, path: str | None, base_dir: Path) -> Atoms:
    """The molecule of a spec: first frame of ``path``, or ``name`` from ASE's g2 set."""
    if path:
        path = Path(path)
        return read_structures(path if path.is_absolute() else base_dir / path, index="0")[0]
    from ase.build import molecule

    try:
        return molecule(name)
    except KeyError:
        raise SourceError(
            f"structure spec {name!r}: not a molecule in ase.collections.g2; "
            "give 'path' to a geometry file"
        ) from None


def _build_molecule(values, basis, xc, base_dir: Path, cache_dir) -> list[Atoms]:
    name = values["name"]
    atoms = _reference_molecule(name, values["path"], base_dir)
    hessian_basis = values["hessian_basis"] or basis
    hessian_xc = values["hessian_xc"] or xc
    if hessian_basis is None or hessian_xc is None:
        raise SourceError(
            f"structure spec {name!r}: set 'hessian_basis' and 'hessian_xc' for the normal modes"
        )
    return molecular_conformers(
        atoms, values["n"], float(values["temperature"]), seed=values["seed"],
        method=values["method"], basis=hessian_basis, xc=hessian_xc, charge=values["charge"],
        spin=values["spin"], cache_dir=cache_dir, prefix=values["prefix"] or name,
    )


def _build_bulk(values, basis, xc, base_dir: Path, cache_dir) -> list[Atoms]:
    from ase.build import bulk

    name = values["name"]
    repeat = values["repeat"]
    if len(repeat) != 3 or not all(isinstance(r, int) and r >= 1 for r in repeat):
        raise SourceError(
            f"structure spec {name!r}: 'repeat' must be three positive integers, got {repeat!r}"
        )
    try:
        atoms = bulk(name, crystalstructure=values["crystal"], a=values["a"], c=values["c"],
                     cubic=values["cubic"], orthorhombic=values["orthorhombic"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise SourceError(
            f"structure spec {name!r}: ase.build.bulk cannot build it ({err})"
        ) from None
    return rattled_supercells(
        atoms, repeat, values["n"], rattle_std=float(values["rattle"]),
        strain_std=float(values["strain"]), seed=values["seed"], prefix=values["prefix"] or name,
    )


def _build_sheet(values, basis, xc, base_dir: Path, cache_dir) -> list[Atoms]:
    """A 2-D sheet (ASE's graphene or MX2 builders) with vacuum, periodic along all three
    axes as periodic labels need, then rattled and strained like a bulk crystal."""
    from ase.build import graphene, mx2

    name, crystal = values["name"], values["crystal"]
    builders = {"graphene": graphene, "mx2": mx2}
    if crystal not in builders:
        raise SourceError(f"structure spec {name!r}: sheet crystal {crystal!r} is not one of "
                          f"{sorted(builders)}")
    options = {k: float(values[k]) for k in ("a", "thickness") if values[k] is not None}
    if crystal == "graphene" and "thickness" in options:
        raise SourceError(f"structure spec {name!r}: a graphene-type sheet has no 'thickness'")
    try:
        atoms = builders[crystal](formula=name, vacuum=0.5 * float(values["vacuum"]), **options)
    except (KeyError, ValueError) as err:
        raise SourceError(f"structure spec {name!r}: cannot build a {crystal} sheet ({err})") \
            from None
    atoms.pbc = True
    repeat = values["repeat"]
    if len(repeat) != 3 or not all(isinstance(r, int) and r >= 1 for r in repeat) or repeat[2] != 1:
        raise SourceError(f"structure spec {name!r}: 'repeat' of a sheet must be three positive "
                          f"integers ending in 1, got {repeat!r}")
    return rattled_supercells(
        atoms, repeat, values["n"], rattle_std=float(values["rattle"]),
        strain_std=float(values["strain"]), seed=values["seed"], prefix=values["prefix"] or name,
    )


def _build_cluster(values, basis, xc, base_dir: Path, cache_dir) -> list[Atoms]:
    molecule_atoms = _reference_molecule(values["name"], values["path"], base_dir)
    return [molecular_cluster(molecule_atoms, values["grid"], float(values["spacing"]),
                              values["seed"], values["prefix"] or values["name"])]


SPEC_BUILDERS = {"file": _build_file, "molecule": _build_molecule, "bulk": _build_bulk,
                 "cluster": _build_cluster, "sheet": _build_sheet}


def load_specs(path: str | Path) -> list[dict]:
    """Structure specs from a YAML or JSON file: a list, ``{"structures": [...]}`` or one spec."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: spec file not found")
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        kind = type(err).__name__
        raise SourceError(f"{path}: cannot parse spec file ({kind}: {reason})") from None
    if isinstance(content, dict) and "structures" in content:
        content = content["structures"]
    elif isinstance(content, dict):
        content = [content]
    if not isinstance(content, list) or not content:
        raise SourceError(f"{path}: expected a list of structure specs (or a 'structures' list)")
    return content


def from_spec_file(
    path: str | Path,
    basis: Basis | str | None = None,
    xc: str | None = None,
    cache_dir: str | Path | None = None,
) -> list[Atoms]:
    """All structures of a spec file, relative paths resolved against its folder."""
    path = Path(path)
    structures = []
    for spec in load_specs(path):
        try:
            structures += from_spec(spec, basis, xc, base_dir=path.parent, cache_dir=cache_dir)
        except SourceError as err:
            raise SourceError(f"{path}: {err}") from None
    check_unique_names(structures)
    return structures


def _label(spec: dict) -> str:
    return repr(spec.get("name") or spec.get("path") or spec.get("kind"))


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)
