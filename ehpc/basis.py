"""Orbital basis registry and the PySCF <-> e3nn orbital convention.

Every fact here is read from PySCF's own basis and pseudopotential definitions at run
time; nothing is typed in by hand.

Orbital order inside an atom follows PySCF: shells in the order of the basis file, each
contracted function of a shell in turn, and inside a function the ``2l+1`` real
spherical components.  PySCF orders p as (x, y, z) and l >= 2 as m = -l..l with z as the
polar axis.

e3nn's real spherical harmonics use y as the polar axis.  ehpc therefore hands e3nn
every vector in the frame ``E3NN_FRAME`` = (y, z, x): e3nn's polar axis is then the
physical z axis and, for every l, the e3nn components are a signed permutation of
PySCF's (``angular_map``).  ``tests/test_basis_rotation.py`` proves the resulting
rotation rule, ``H' = D(R) H D(R)^T``, against PySCF calculations on rotated and
inverted molecules and crystals.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .errors import UserError

#: permutation taking physical (x, y, z) to the frame e3nn sees: r_e3nn = r[E3NN_FRAME]
E3NN_FRAME = (1, 2, 0)

#: the pseudopotential PySCF pairs with each GTH basis unless told otherwise
DEFAULT_GTH_PSEUDO = "gth-pbe"

MAX_L = 5


class BasisError(UserError, ValueError):
    """An element or basis that the registry cannot provide."""


@dataclass(frozen=True)
class ElementBasis:
    """The orbitals of one element in one basis.

    Attributes:
        symbol: chemical symbol.
        number: atomic number Z.
        ls: angular momentum of each radial function, in PySCF AO order.
        n_valence: electrons the calculation treats explicitly (Z for all-electron
            bases, Z minus the pseudised core for GTH).
        n_core: electrons replaced by the pseudopotential.
    """

    symbol: str
    number: int
    ls: tuple[int, ...]
    n_valence: int
    n_core: int

    @property
    def nao(self) -> int:
        return sum(2 * l + 1 for l in self.ls)

    @property
    def shell_slices(self) -> list[slice]:
        """AO slice of each radial function within the atom's block."""
        out, start = [], 0
        for l in self.ls:
            out.append(slice(start, start + 2 * l + 1))
            start += 2 * l + 1
        return out

    def shell_counts(self) -> dict[int, int]:
        """Number of radial functions per l, e.g. {0: 2, 1: 2, 2: 1} for Si gth-dzvp."""
        counts: dict[int, int] = {}
        for l in self.ls:
            counts[l] = counts.get(l, 0) + 1
        return counts


@dataclass(frozen=True)
class Basis:
    """A named basis (and pseudopotential) whose per-element data come from PySCF.

    Args:
        name: PySCF basis name, e.g. ``"def2-svp"``, ``"gth-szv"``, ``"gth-dzvp"``.
        pseudo: PySCF pseudopotential name; GTH bases default to ``"gth-pbe"``,
            all-electron bases to ``None``.

    Example:
        >>> Basis("gth-dzvp").element("Si").ls
        (0, 0, 1, 1, 2)
    """

    name: str
    pseudo: str | None = None

    def __post_init__(self) -> None:
        name = self.name.lower()
        object.__setattr__(self, "name", name)
        if self.pseudo is None and name.startswith("gth-"):
            object.__setattr__(self, "pseudo", DEFAULT_GTH_PSEUDO)

    @property
    def is_pseudo(self) -> bool:
        return self.pseudo is not None

    def element(self, symbol_or_number: str | int) -> ElementBasis:
        return _element_basis(self.name, self.pseudo, _symbol(symbol_or_number))

    def elements(self, numbers) -> dict[int, ElementBasis]:
        """ElementBasis for each distinct atomic number in ``numbers``."""
        return {int(z): self.element(int(z)) for z in np.unique(np.asarray(numbers))}

    def nao_per_atom(self, numbers) -> np.ndarray:
        table = self.elements(numbers)
        return np.array([table[int(z)].nao for z in numbers], dtype=np.int64)

    def n_electrons(self, numbers, charge: int = 0) -> int:
        table = self.elements(numbers)
        return int(sum(table[int(z)].n_valence for z in numbers)) - int(charge)

    def check(self, numbers, where: str = "structure") -> None:
        """Raise BasisError naming the first element of ``numbers`` not in this basis."""
        for z in np.unique(np.asarray(numbers)):
            self.element(int(z))  # raises with a clear message
        del where

    def to_attrs(self) -> dict[str, str]:
        return {"basis": self.name, "pseudo": self.pseudo or ""}

    @classmethod
    def from_attrs(cls, attrs) -> "Basis":
        pseudo = attrs.get("pseudo", "")
        if isinstance(pseudo, bytes):
            pseudo = pseudo.decode()
        name = attrs["basis"]
        if isinstance(name, bytes):
            name = name.decode()
        return cls(str(name), str(pseudo) or None)


def _symbol(symbol_or_number: str | int) -> str:
    if isinstance(symbol_or_number, (int, np.integer)):
        z = int(symbol_or_number)
        if not 0 < z < len(chemical_symbols):
            raise BasisError(f"atomic number {z} is not a chemical element")
        return chemical_symbols[z]
    if symbol_or_number not in atomic_numbers:
        raise BasisError(f"{symbol_or_number!r} is not a chemical symbol")
    return symbol_or_number


@functools.lru_cache(maxsize=None)
def _element_basis(name: str, pseudo: str | None, symbol: str) -> ElementBasis:
    """Build a one-atom PySCF object and read the orbitals and electrons off it."""
    z = atomic_numbers[symbol]
    try:
        if pseudo is None:
            from pyscf import gto

            mol = gto.Mole(atom=f"{symbol} 0 0 0", basis=name, spin=z % 2, unit="Angstrom")
            mol.verbose = 0
            mol.build()
        else:
            from pyscf.pbc import gto as pbcgto

            mol = pbcgto.Cell(atom=f"{symbol} 0 0 0", basis=name, pseudo=pseudo, a=np.eye(3) * 10.0)
            mol.verbose = 0
            with warnings.catch_warnings():
                # the spin is unknown until the pseudopotential is read; only counts are used
                warnings.simplefilter("ignore")
                mol.build()
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
        hint = f" with pseudopotential {pseudo!r}" if pseudo else ""
        raise BasisError(
            f"element {symbol} is not available in basis {name!r}{hint} ({err}); "
            "choose a basis that covers every element of the structure"
        ) from None
    if mol.nbas == 0:
        raise BasisError(f"element {symbol} has no functions in basis {name!r}")
    ls: list[int] = []
    for b in range(mol.nbas):
        ls += [int(mol.bas_angular(b))] * int(mol.bas_nctr(b))
    if max(ls) > MAX_L:
        raise BasisError(f"basis {name!r} has l={max(ls)} on {symbol}; ehpc supports l <= {MAX_L}")
    n_valence = int(round(mol.atom_charge(0)))
    return ElementBasis(symbol=symbol, number=z, ls=tuple(ls), n_valence=n_valence, n_core=z - n_valence)


# ---------------------------------------------------------------------------
# Angular convention


@functools.lru_cache(maxsize=None)
def angular_map(l: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Signed permutation from PySCF's real spherical order to e3nn's.

    Returns ``(perm, signs)`` with ``Y_e3nn(r[E3NN_FRAME])[k] ∝ signs[k] * Y_pyscf(r)[perm[k]]``.

    Derived by evaluating one PySCF shell of angular momentum ``l`` and e3nn's spherical
    harmonics on the same random unit vectors and matching the two sets of functions.
    """
    import torch
    from e3nn import o3
    from pyscf import gto

    rng = np.random.default_rng(1234 + l)
    points = rng.normal(size=(64, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    mol = gto.M(atom="H 0 0 0", basis={"H": [[l, [1.0, 1.0]]]}, spin=1, verbose=0)
    y_pyscf = mol.eval_gto("GTOval_sph", points)  # [n_points, 2l+1], equal radial part
    y_e3nn = o3.spherical_harmonics(
        l, torch.as_tensor(points[:, list(E3NN_FRAME)]), normalize=True
    ).numpy()  # [n_points, 2l+1]
    # Solve Y_e3nn = Y_pyscf @ M exactly; M must be a scaled signed permutation.
    m, *_ = np.linalg.lstsq(y_pyscf, y_e3nn, rcond=None)  # [2l+1 (pyscf), 2l+1 (e3nn)]
    m = m.T / np.abs(m).max()  # [e3nn, pyscf]
    perm = np.argmax(np.abs(m), axis=1)
    signs = np.sign(m[np.arange(2 * l + 1), perm])
    q = signed_permutation(perm, signs)
    if len(set(perm.tolist())) != 2 * l + 1 or np.abs(m - q).max() > 1e-8:
        raise AssertionError(f"PySCF and e3nn l={l} harmonics are not a signed permutation")
    return tuple(int(p) for p in perm), tuple(float(s) for s in signs)


def angular_matrix(l: int) -> np.ndarray:
    """Q_l with ``Y_e3nn = Q_l @ Y_pyscf`` (orthogonal signed permutation)."""
    return signed_permutation(*angular_map(l))


def signed_permutation(perm, signs) -> np.ndarray:
    """Q with ``(Q @ v)[k] = signs[k] * v[perm[k]]``: one shell's change of order and sign."""
    n = len(perm)
    q = np.zeros((n, n))  # [n, n]
    q[np.arange(n), np.asarray(perm, dtype=np.int64)] = signs
    return q


def atom_block_diag(ls, shell: Callable[[int], np.ndarray]) -> np.ndarray:
    """One atom's block-diagonal matrix, ``shell(l)`` per radial function of ``ls``.

    With ``shell = angular_matrix`` it is the atom's PySCF -> e3nn signed permutation;
    DeepH's orbital conventions and the Wigner D of a rotation are built the same way.
    """
    blocks = [shell(l) for l in ls]
    n = sum(b.shape[0] for b in blocks)
    out = np.zeros((n, n))  # [nao, nao]
    start = 0
    for b in blocks:
        k = b.shape[0]
        out[start : start + k, start : start + k] = b
        start += k
    return out


def frame_matrix() -> np.ndarray:
    """P with ``r_e3nn = P @ r`` for physical vectors r."""
    return np.eye(3)[list(E3NN_FRAME)]


def pyscf_to_e3nn(ls) -> np.ndarray:
    """Block-diagonal matrix taking one atom's PySCF AO vector to e3nn order."""
    return atom_block_diag(ls, angular_matrix)


def e3nn_wigner_d(l: int, rotation: np.ndarray) -> np.ndarray:
    """Real Wigner matrix, in e3nn's order and frame, of a physical orthogonal ``rotation``.

    ``Y_e3nn(P R r) = D @ Y_e3nn(P r)`` with ``P = frame_matrix()``; improper rotations
    pick up ``(-1)^l``.  Fitted from e3nn's polynomial spherical harmonics in float64,
    which is exact to round-off (``o3.wigner_D`` carries float32 tables, ~1e-7).
    """
    import torch
    from e3nn import o3

    rotation = np.asarray(rotation, dtype=np.float64)
    p = frame_matrix()
    points = _fit_points()  # [n, 3]
    y = o3.spherical_harmonics(l, torch.as_tensor(points @ p.T), normalize=True).numpy()
    y_rot = o3.spherical_harmonics(
        l, torch.as_tensor(points @ rotation.T @ p.T), normalize=True
    ).numpy()  # [n, 2l+1]
    d_t, *_ = np.linalg.lstsq(y, y_rot, rcond=None)  # y_rot = y @ D^T
    return d_t.T


def wigner_d(l: int, rotation: np.ndarray) -> np.ndarray:
    """Real Wigner matrix of an orthogonal 3x3 ``rotation`` in PySCF's AO convention.

    ``Y_pyscf(R r) = D @ Y_pyscf(r)``; improper rotations pick up ``(-1)^l``.
    """
    q = angular_matrix(l)
    return q.T @ e3nn_wigner_d(l, rotation) @ q


@functools.lru_cache(maxsize=1)
def _fit_points() -> np.ndarray:
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(4 * (2 * MAX_L + 1), 3))
    return pts / np.linalg.norm(pts, axis=1, keepdims=True)


def atom_rotation(ls, rotation: np.ndarray) -> np.ndarray:
    """Block-diagonal D(R) for one atom's orbitals in PySCF order."""
    return atom_block_diag(ls, lambda l: wigner_d(l, rotation))
