"""Structure specs (YAML/JSON): their keys, their checks and the builders behind each kind.

A spec names one source (``file``, ``molecule``, ``cluster``, ``bulk`` or ``sheet``);
:data:`SPEC_KEYS` holds each kind's keys with their types and defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from ..basis import Basis
from ..structure import read_structures
from .common import SourceError, check_unique_names, from_file
from .conformers import molecular_cluster, molecular_conformers
from .supercells import rattled_supercells

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
