"""What every PySCF label shares: the convergence error and the per-structure scalars."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..units import HARTREE_TO_EV

#: the SCF's default energy tolerance (Hartree) and iteration limit, for every labelling path
SCF_CONV_TOL = 1e-9
SCF_MAX_CYCLE = 100

#: occupation smearings PySCF offers
SMEARING_METHODS = ("fermi", "gaussian")


@dataclass(frozen=True)
class Smearing:
    """Fractional occupations for metals and semimetals.

    Attributes:
        method: ``"fermi"`` (Fermi-Dirac) or ``"gaussian"``.
        width_eV: the smearing width (kT for Fermi-Dirac, σ for Gaussian), eV.
    """

    method: str
    width_eV: float

    def __post_init__(self):
        if self.method not in SMEARING_METHODS:
            raise ValueError(f"smearing method {self.method!r} is not one of {SMEARING_METHODS}")
        if not self.width_eV > 0:
            raise ValueError(f"smearing width must be positive, got {self.width_eV} eV")

    @classmethod
    def parse(cls, text: str) -> "Smearing":
        """``"fermi:0.1"`` (method, width in eV) as a :class:`Smearing`."""
        method, _, width = text.partition(":")
        try:
            return cls(method.strip().lower(), float(width))
        except ValueError as err:
            raise ValueError(f"smearing {text!r}: {err}; write METHOD:WIDTH_EV, e.g. fermi:0.1") \
                from None

    def apply(self, mf):
        """``mf`` with these occupations (PySCF's smearing, width in Hartree)."""
        from pyscf.pbc.scf.addons import smearing_

        return smearing_(mf, sigma=self.width_eV / HARTREE_TO_EV, method=self.method)

    def occupation(self, energies: np.ndarray, mu: float) -> np.ndarray:
        """Occupation (0..1 per spin orbital) of ``energies`` at chemical potential ``mu`` (Ha)."""
        from scipy.special import erfc, expit

        x = (np.asarray(energies) - mu) / (self.width_eV / HARTREE_TO_EV)
        return expit(-x) if self.method == "fermi" else 0.5 * erfc(x)

    def chemical_potential(self, mo_energy, n_electrons: float) -> float:
        """μ (Hartree) at which the smeared occupations of ``mo_energy`` (one array per
        k-point, equal weights) hold ``n_electrons`` per cell, two per orbital.

        PySCF solves the same equation inside its SCF but does not keep μ.
        """
        from scipy.optimize import brentq

        per_k = _per_k(mo_energy)
        energies = np.concatenate([np.ravel(e) for e in per_k])  # [n_orbitals_total]

        def excess(mu: float) -> float:
            return 2.0 * self.occupation(energies, mu).sum() / len(per_k) - n_electrons

        width = 50.0 * self.width_eV / HARTREE_TO_EV
        return float(brentq(excess, energies.min() - width, energies.max() + width, xtol=1e-14))


class SCFNotConverged(UserError, RuntimeError):
    """The SCF of one structure did not converge; callers keep it out of the dataset.

    Args:
        message: one line that names the structure and what to change.
        name: the structure; read off the message's ``"<name>: ..."`` prefix if omitted.
    """

    def __init__(self, message: str, name: str | None = None):
        super().__init__(message)
        self.name = name if name is not None else message.split(":", 1)[0]


def pyscf_version() -> str:
    """Version of the PySCF that produced the labels (stamped into every dataset file)."""
    import pyscf

    return str(pyscf.__version__)


def pyscf_atoms(atoms) -> list[tuple[str, tuple[float, float, float]]]:
    """The ``atom=`` list PySCF takes, positions in Å exactly as given (never wrapped)."""
    return [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]


def check_orbital_count(name: str, basis, numbers, nao_pyscf: int) -> None:
    """The registry and PySCF must agree on the orbitals, or every block would be misplaced."""
    expected = int(basis.nao_per_atom(numbers).sum())
    if expected != nao_pyscf:
        raise RuntimeError(
            f"{name}: PySCF built {nao_pyscf} orbitals but the {basis.name!r} registry expects "
            f"{expected}"
        )


def check_converged(mf, name: str, conv_tol: float, max_cycle: int) -> None:
    """Raise :class:`SCFNotConverged` naming ``name`` unless ``mf`` converged."""
    if not mf.converged:
        raise SCFNotConverged(
            f"{name}: SCF did not converge in {max_cycle} cycles to conv_tol={conv_tol:g} Ha; "
            "raise max_cycle, loosen conv_tol or check the geometry",
            name,
        )


def frontier_levels(mo_energy, mo_occ) -> tuple[float, float]:
    """HOMO and LUMO in Hartree over all k-points (LUMO is NaN with no empty orbital).

    Args:
        mo_energy: orbital energies, one array or one per k-point.
        mo_occ: matching occupations.
    """
    energies = np.concatenate([np.ravel(e) for e in _per_k(mo_energy)])  # [n_orbitals_total]
    occupations = np.concatenate([np.ravel(o) for o in _per_k(mo_occ)])  # [n_orbitals_total]
    occupied = energies[occupations > 0]
    empty = energies[occupations == 0]
    homo = float(occupied.max())
    lumo = float(empty.min()) if len(empty) else float("nan")
    return homo, lumo


def smeared_frontier(mo_energy, mu: float) -> tuple[float, float]:
    """HOMO and LUMO (Hartree) of a smeared calculation: the levels either side of μ."""
    energies = np.concatenate([np.ravel(e) for e in _per_k(mo_energy)])  # [n_orbitals_total]
    below, above = energies[energies <= mu], energies[energies > mu]
    homo = float(below.max()) if len(below) else float("nan")
    lumo = float(above.min()) if len(above) else float("nan")
    return homo, lumo


def midgap(homo: float, lumo: float) -> float:
    """The Fermi level of a gapped system: the HOMO/LUMO midpoint, or the HOMO with no LUMO."""
    return homo if np.isnan(lumo) else 0.5 * (homo + lumo)


def fermi_and_frontier(mf) -> tuple[float, float, float]:
    """E_F, HOMO and LUMO of a converged SCF, in Hartree: with smearing the chemical
    potential and the levels either side of it, else the HOMO/LUMO midpoint."""
    mu = getattr(mf, "mu", None)
    if getattr(mf, "sigma", None) and mu is not None:
        homo, lumo = smeared_frontier(mf.mo_energy, float(mu))
        return float(mu), homo, lumo
    homo, lumo = frontier_levels(mf.mo_energy, mf.mo_occ)
    return midgap(homo, lumo), homo, lumo


def scf_attrs(mf, name: str, xc: str, n_electrons: int, wall_time_s: float) -> dict:
    """The per-structure scalars the dataset stores, energies in eV.

    The Fermi level of a gapped system is the HOMO/LUMO midpoint; with every orbital
    occupied it is the HOMO.
    """
    fermi, homo, lumo = fermi_and_frontier(mf)
    return {
        "fermi_level": fermi * HARTREE_TO_EV,
        "homo": homo * HARTREE_TO_EV,
        "lumo": lumo * HARTREE_TO_EV,
        "n_electrons": int(n_electrons),
        "energy": float(mf.e_tot) * HARTREE_TO_EV,
        "converged": bool(mf.converged),
        "xc": xc,
        "source": name,
        "scf_cycles": int(getattr(mf, "cycles", -1)),
        "wall_time_s": float(wall_time_s),
    }


def _per_k(values) -> list:
    """One array per k-point, whether PySCF returned one array or a list of them."""
    if isinstance(values, (list, tuple)):
        return list(values)
    array = np.asarray(values)
    return [array] if array.ndim == 1 else list(array)
