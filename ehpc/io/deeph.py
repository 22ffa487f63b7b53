"""Import and export of the DeepH folder format (one folder per structure).

A DeepH structure folder holds:

- ``lat.dat``: lattice vectors as the COLUMNS of a 3x3 matrix, Å;
- ``rlat.dat``: reciprocal lattice vectors (with the 2 pi) as columns, 1/Å;
- ``element.dat``: atomic numbers, one per line;
- ``site_positions.dat``: Cartesian positions, 3 x n_atoms (columns are atoms), Å;
- ``orbital_types.dat``: per atom, one line with the l of each radial function;
- ``info.json``: at least ``isspinful`` and ``fermi_level`` (eV);
- ``hamiltonians.h5`` / ``overlaps.h5``: one dataset per atom pair, named
  ``"[Rx, Ry, Rz, i, j]"`` with 1-based atom indices, holding the block
  ``<phi_i(0)|H|phi_j(R)>`` in eV.

The order of the ``2l+1`` functions inside a shell differs between codes.  It is data
here: :data:`CONVENTIONS` maps a convention name to, per l, the signed permutation with
``phi_source[k] = signs[k] * phi_pyscf[perm[k]]``.  ehpc stores PySCF order, so import
applies ``Q^T B Q`` and export ``Q B Q^T`` with the block-diagonal ``Q`` of each atom.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..atomic import replacing
from ..basis import MAX_L, Basis, BasisError, atom_block_diag, signed_permutation
from ..errors import UserError
from .dataset import HAMILTONIAN, OVERLAP, HamiltonianRecord, block_offsets

HAMILTONIANS_FILE = "hamiltonians.h5"
OVERLAPS_FILE = "overlaps.h5"
MATRIX_FILES = {HAMILTONIAN: HAMILTONIANS_FILE, OVERLAP: OVERLAPS_FILE}

#: key under which info.json carries what DeepH has no place for (pbc, ehpc attrs)
EHPC_INFO = "ehpc"

#: ``phi_source[k] = signs[k] * phi_pyscf[perm[k]]`` for each convention and l
CONVENTIONS: dict[str, dict[int, tuple[tuple[int, ...], tuple[float, ...]]]] = {
    # PySCF / ehpc: p = (x, y, z); l >= 2 as m = -l..l
    "pyscf": {l: (tuple(range(2 * l + 1)), (1.0,) * (2 * l + 1)) for l in range(MAX_L + 1)},
    # DeepH-pack's common order (that of OpenMX): m = 0, +1, -1, +2, -2, ... with
    # p = (x, y, z); d = (z², x²-y², xy, xz, yz); f = (z³, xz², yz², z(x²-y²), xyz,
    # x(x²-3y²), y(3x²-y²)); every function with a positive leading coefficient.
    "deeph": {
        0: ((0,), (1.0,)),
        1: ((0, 1, 2), (1.0, 1.0, 1.0)),
        2: ((2, 4, 0, 3, 1), (1.0,) * 5),
        3: ((3, 4, 2, 5, 1, 6, 0), (1.0,) * 7),
    },
}
CONVENTIONS["ehpc"] = CONVENTIONS["pyscf"]
CONVENTIONS["openmx"] = CONVENTIONS["deeph"]


class DeepHError(UserError, ValueError):
    """A DeepH folder that is malformed or does not match the requested basis."""


def shell_matrix(l: int, convention: str) -> np.ndarray:
    """Q_l with ``phi_source = Q_l @ phi_pyscf`` for one shell.  # [2l+1, 2l+1]"""
    if convention not in CONVENTIONS:
        raise DeepHError(
            f"unknown orbital convention {convention!r}; choose from {sorted(CONVENTIONS)}"
        )
    if l not in CONVENTIONS[convention]:
        top = max(CONVENTIONS[convention])
        raise DeepHError(f"orbital convention {convention!r} has no l={l} shells (max l={top})")
    return signed_permutation(*CONVENTIONS[convention][l])


def atom_matrix(ls, convention: str) -> np.ndarray:
    """Block-diagonal Q for one atom's radial functions ``ls``.  # [nao, nao]"""
    return atom_block_diag(ls, lambda l: shell_matrix(l, convention))


def pair_key(shift, i: int, j: int) -> str:
    """DeepH's dataset name for the block of atoms ``i``, ``j`` (0-based) at cell shift R."""
    rx, ry, rz = (int(s) for s in shift)
    return f"[{rx}, {ry}, {rz}, {i + 1}, {j + 1}]"


def parse_key(key: str, n_atoms: int, where: str) -> tuple[int, int, int, int, int]:
    """``"[Rx, Ry, Rz, i, j]"`` (1-based atoms) -> ``(Rx, Ry, Rz, i, j)`` (0-based)."""
    try:
        values = json.loads(key)
    except json.JSONDecodeError:
        values = None
    well_formed = isinstance(values, list) and len(values) == 5
    if not (well_formed and all(isinstance(v, int) for v in values)):
        raise DeepHError(f"{where}: dataset name {key!r} is not of the form '[Rx, Ry, Rz, i, j]'")
    rx, ry, rz, i, j = values
    if not (1 <= i <= n_atoms and 1 <= j <= n_atoms):
        raise DeepHError(
            f"{where}: pair {key!r} names an atom outside 1..{n_atoms} (indices are 1-based)"
        )
    return rx, ry, rz, i - 1, j - 1


# ---------------------------------------------------------------------------
# Export


def export_deeph(
    record: HamiltonianRecord,
    basis: Basis,
    folder: str | Path,
    convention: str = "pyscf",
    overwrite: bool = False,
    xc: str | None = None,
) -> Path:
    """Write one structure as a DeepH folder.

    The folder is assembled under a temporary name and renamed at the end, so an
    interrupted export never leaves a folder that looks complete.

    Args:
        record: a labelled structure (H and S in PySCF order, eV).
        basis: the basis of ``record``.
        folder: the structure folder to create.
        convention: orbital order inside each shell on disk (see :data:`CONVENTIONS`).
        overwrite: replace an existing folder.
        xc: the functional of the labels, recorded in ``info.json`` with the basis so that
            an import needs neither restated (default: the record's ``xc`` attribute).
    """
    folder = Path(folder)
    record.check(basis)
    if record.hamiltonian is None:
        raise DeepHError(f"{record.name}: record has no Hamiltonian to export")
    if "fermi_level" not in record.attrs:
        raise DeepHError(
            f"{record.name}: record has no 'fermi_level' attribute, which DeepH's info.json needs"
        )
    if folder.exists() and not overwrite:
        raise DeepHError(f"{folder}: already exists; remove it or pass overwrite")
    with replacing(folder) as tmp:  # a folder already there is replaced (overwrite)
        tmp.mkdir()
        ls = _atom_ls(basis, record.numbers)
        _write_geometry(tmp, record, ls)
        _write_info(tmp, record, basis, convention, xc)
        qs = [atom_matrix(l, convention) for l in ls]
        nao = basis.nao_per_atom(record.numbers)
        for key, filename in MATRIX_FILES.items():
            if getattr(record, key) is not None:
                _write_blocks(tmp / filename, record, key, nao, qs)
    return folder


def _atom_ls(basis: Basis, numbers) -> list[tuple[int, ...]]:
    table = basis.elements(numbers)
    return [table[int(z)].ls for z in numbers]


def _write_geometry(folder: Path, record: HamiltonianRecord, ls) -> None:
    cell = np.asarray(record.cell, dtype=np.float64).reshape(3, 3)
    np.savetxt(folder / "lat.dat", cell.T, fmt="%.17g")
    if abs(np.linalg.det(cell)) > 0:
        np.savetxt(folder / "rlat.dat", 2 * np.pi * np.linalg.inv(cell), fmt="%.17g")  # columns b_j
    np.savetxt(folder / "element.dat", np.asarray(record.numbers, dtype=np.int64), fmt="%d")
    positions = np.asarray(record.positions, dtype=np.float64)  # [n_atoms, 3]
    np.savetxt(folder / "site_positions.dat", positions.T, fmt="%.17g")
    lines = ["  ".join(str(l) for l in atom) + "\n" for atom in ls]
    (folder / "orbital_types.dat").write_text("".join(lines))


def _write_info(folder: Path, record: HamiltonianRecord, basis: Basis, convention: str,
                xc: str | None = None) -> None:
    nao = basis.nao_per_atom(record.numbers)
    xc = xc or _json_value(record.attrs.get("xc"))
    info = {
        "nsites": int(record.n_atoms),
        "isorthogonal": False,
        "isspinful": False,
        "norbits": int(nao.sum()),
        "fermi_level": float(record.attrs["fermi_level"]),
        EHPC_INFO: {
            "name": record.name,
            "pbc": [bool(p) for p in np.asarray(record.pbc).reshape(3)],
            "basis": basis.name,
            "pseudo": basis.pseudo,
            "xc": xc,
            "orbital_convention": convention,
            "attrs": {k: _json_value(v) for k, v in record.attrs.items()},
        },
    }
    (folder / "info.json").write_text(json.dumps(info, indent=1) + "\n")


def _write_blocks(path: Path, record: HamiltonianRecord, which: str, nao, qs) -> None:
    with h5py.File(path, "w", track_order=True) as f:
        for p, (rx, ry, rz, i, j) in enumerate(record.atom_pairs):
            block = record.block(p, nao, which)  # [nao_i, nao_j], PySCF order
            f.create_dataset(pair_key((rx, ry, rz), i, j), data=qs[i] @ block @ qs[j].T)


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    return value


# ---------------------------------------------------------------------------
# Import


def import_deeph(
    folder: str | Path,
    basis: Basis,
    name: str | None = None,
    convention: str = "pyscf",
) -> HamiltonianRecord:
    """Read one DeepH structure folder into a record in PySCF orbital order.

    Pairs present in only one of the two matrix files get a zero block in the other
    (codes drop blocks below a threshold independently); a pair whose reverse
    ``(j, i, -R)`` is missing gets the transpose, since real H and S are symmetric.

    Args:
        folder: the structure folder.
        basis: the basis the data were computed in; ``orbital_types.dat`` must list,
            for every atom, exactly the shells of ``basis`` for that element.
        name: record name; defaults to the folder name.
        convention: orbital order inside each shell in the files (see
            :data:`CONVENTIONS`); DeepH-pack's preprocessed data use ``"deeph"``.

    Raises:
        DeepHError: missing or malformed files, spinful data, or a basis mismatch.
    """
    folder = Path(folder)
    name = name or folder.name
    if not folder.is_dir():
        raise DeepHError(f"{folder}: DeepH folder not found")
    numbers = _load(folder, "element.dat", int, ndmin=1)
    n = len(numbers)
    positions = _load(folder, "site_positions.dat", float, ndmin=2)
    cell = _load(folder, "lat.dat", float, ndmin=2)
    if positions.shape != (3, n):
        raise DeepHError(
            f"{folder}/site_positions.dat: shape {positions.shape}, expected (3, {n}) for {n} atoms"
        )
    if cell.shape != (3, 3):
        raise DeepHError(f"{folder}/lat.dat: shape {cell.shape}, expected (3, 3)")
    info = _read_info(folder)
    ls = _check_orbital_types(folder, basis, numbers)
    qs = [atom_matrix(l, convention) for l in ls]
    nao = basis.nao_per_atom(numbers)
    blocks = {key: _read_blocks(folder / filename, n, nao) for key, filename in MATRIX_FILES.items()
              if (folder / filename).is_file()}
    if HAMILTONIAN not in blocks:
        raise DeepHError(f"{folder}: no {HAMILTONIANS_FILE}")
    pairs = _complete_pairs(blocks, nao)  # [n_pairs, 5]
    offsets = block_offsets(pairs, nao)
    flat = {key: _flatten(blocks[key], pairs, qs) for key in blocks}
    extra = info.get(EHPC_INFO, {})
    attrs = dict(extra.get("attrs", {}))
    if "fermi_level" in info:
        attrs["fermi_level"] = float(info["fermi_level"])
    return HamiltonianRecord(
        name=name,
        numbers=numbers.astype(np.int64),
        positions=np.ascontiguousarray(positions.T),
        cell=np.ascontiguousarray(cell.T),
        pbc=np.array(extra.get("pbc", [True, True, True]), dtype=bool),
        atom_pairs=pairs,
        block_offsets=offsets,
        hamiltonian=flat[HAMILTONIAN],
        overlap=flat.get(OVERLAP),
        attrs=attrs,
    )


def stated_level(folder: str | Path) -> dict[str, str | None]:
    """What the folder's ``info.json`` says of how its data were computed.

    Keys, each only when stated: ``basis``, ``pseudo`` (None: all-electron), ``xc`` and
    ``convention`` (the orbital order on disk).  ehpc's export writes all four;
    DeepH-pack's own folders state none of them.
    """
    extra = _read_info(Path(folder)).get(EHPC_INFO) or {}
    stated = {key: extra[key] for key in ("basis", "pseudo", "xc") if key in extra}
    if stated.get("xc") is None and (extra.get("attrs") or {}).get("xc"):
        stated["xc"] = extra["attrs"]["xc"]  # written before info.json carried xc itself
    if stated.get("xc") is None:
        stated.pop("xc", None)
    if extra.get("orbital_convention"):
        stated["convention"] = extra["orbital_convention"]
    return stated


def _load(folder: Path, filename: str, dtype, ndmin: int) -> np.ndarray:
    path = folder / filename
    if not path.is_file():
        raise DeepHError(f"{path}: missing (every DeepH folder needs it)")
    try:
        values = np.loadtxt(path, ndmin=ndmin)
    except ValueError as err:
        raise DeepHError(f"{path}: unreadable ({err})") from None
    if dtype is int:
        if not np.all(values == np.round(values)):
            raise DeepHError(f"{path}: expected integers")
        return values.astype(np.int64)
    return values.astype(dtype)


def _read_info(folder: Path) -> dict:
    path = folder / "info.json"
    if not path.is_file():
        raise DeepHError(f"{path}: missing (every DeepH folder needs it)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DeepHError(f"{path}: not valid JSON ({err})") from None
    if info.get("isspinful", False):
        raise DeepHError(f"{path}: spinful (spin-orbit) data are not supported by ehpc")
    return info


def _check_orbital_types(folder: Path, basis: Basis, numbers) -> list[tuple[int, ...]]:
    path = folder / "orbital_types.dat"
    if not path.is_file():
        raise DeepHError(f"{path}: missing (every DeepH folder needs it)")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != len(numbers):
        raise DeepHError(f"{path}: {len(lines)} lines for {len(numbers)} atoms")
    try:
        expected = _atom_ls(basis, numbers)
    except BasisError as err:
        raise DeepHError(f"{folder}: {err}") from None
    for k, (line, ls) in enumerate(zip(lines, expected)):
        found = tuple(int(v) for v in line.split())
        if found != ls:
            raise DeepHError(
                f"{path}: atom {k + 1} (Z={numbers[k]}) has shells l={list(found)} but basis "
                f"{basis.name!r} has l={list(ls)}; import with the basis the data were computed in"
            )
    return expected


def _read_blocks(path: Path, n_atoms: int, nao) -> dict[tuple[int, ...], np.ndarray]:
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for key in f:
                pair = parse_key(key, n_atoms, str(path))
                block = f[key][()]
                if np.iscomplexobj(block):
                    raise DeepHError(
                        f"{path}: block {key} is complex; only real, spinless H is supported"
                    )
                shape = (int(nao[pair[3]]), int(nao[pair[4]]))
                if block.shape != shape:
                    raise DeepHError(
                        f"{path}: block {key} has shape {block.shape}, the basis needs {shape}"
                    )
                out[pair] = np.asarray(block, dtype=np.float64)
    except OSError as err:
        raise DeepHError(f"{path}: unreadable HDF5 file ({err})") from None
    return out


def _complete_pairs(blocks: dict[str, dict], nao) -> np.ndarray:
    """Union of the pairs of all matrices plus missing reverse pairs, sorted as (i, j, R)."""
    pairs = set()
    for table in blocks.values():
        pairs |= set(table)
    pairs |= {(-rx, -ry, -rz, j, i) for rx, ry, rz, i, j in pairs}
    for table in blocks.values():
        for pair in pairs - set(table):
            rx, ry, rz, i, j = pair
            reverse = (-rx, -ry, -rz, j, i)
            table[pair] = table[reverse].T if reverse in table else np.zeros((nao[i], nao[j]))
    rows = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 5)  # [n_pairs, 5]
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0], rows[:, 4], rows[:, 3]))
    return rows[order]


def _flatten(table: dict, pairs: np.ndarray, qs) -> np.ndarray:
    parts = []
    for row in pairs:
        rx, ry, rz, i, j = (int(v) for v in row)
        parts.append(qs[i].T @ table[(rx, ry, rz, i, j)] @ qs[j])  # [nao_i, nao_j], PySCF order
    return np.concatenate([p.ravel() for p in parts]) if parts else np.zeros(0)
