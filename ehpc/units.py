"""Units: the single conversion point between PySCF's atomic units and ehpc's eV/Å.

Everything ehpc writes to disk or prints is in eV and Å, as in ASE.  PySCF works in
Hartree and Bohr; conversions happen only through the names below.
"""

from __future__ import annotations

import ase.units

HARTREE_TO_EV: float = float(ase.units.Hartree)
EV_TO_HARTREE: float = 1.0 / HARTREE_TO_EV
BOHR_TO_ANGSTROM: float = float(ase.units.Bohr)
ANGSTROM_TO_BOHR: float = 1.0 / BOHR_TO_ANGSTROM
EV_TO_MICROHARTREE: float = EV_TO_HARTREE * 1.0e6
EV_TO_MEV: float = 1.0e3
BOLTZMANN_EV_PER_K: float = float(ase.units.kB)

ENERGY_UNIT = "eV"
LENGTH_UNIT = "Angstrom"

#: attributes stamped on every file ehpc writes
FILE_UNITS = {"energy_unit": ENERGY_UNIT, "length_unit": LENGTH_UNIT, "overlap_unit": "dimensionless"}

#: the closest two atoms may be before a structure is rejected as unphysical
MIN_INTERATOMIC_DISTANCE = 0.5  # Å


def pyscf_bohr_to_angstrom() -> float:
    """PySCF's own Bohr radius in Å, for coordinates handed to PySCF/libcint in Bohr.

    PySCF converts Å input with its CODATA value, which differs from ASE's by ~1e-9
    relative; integrals computed from Bohr coordinates must use the same value as the
    reference calculations or they drift by ~1e-9.
    """
    from pyscf.data import nist

    return float(nist.BOHR)
