"""The package's rooms follow the data flow: label generation never reaches inference.

Imports are read from the source with ``ast`` (function-level imports included, since a
lazy import is still a dependency) and followed transitively through ``ehpc``.
"""

import ast
from pathlib import Path

import pytest

import ehpc

ROOT = Path(ehpc.__file__).parent


def _module_file(name: str) -> Path | None:
    """The source file of ``ehpc.a.b`` (a module or a package's ``__init__``), if any."""
    parts = name.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _name_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``ehpc`` module ``path`` imports, anywhere in the file, with its packages."""
    name = _name_of(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # `from . import x`
    out = set()
    for module in found:
        if module == "ehpc" or module.startswith("ehpc."):
            parts = module.split(".")
            out.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return {m for m in out if _module_file(m) is not None}


def _reachable(start: list[str]) -> dict[str, str]:
    """Every ehpc module reachable from ``start``, with the module that first imports it."""
    seen = {m: m for m in start}
    todo = list(start)
    while todo:
        current = todo.pop()
        for module in _imports(_module_file(current)):
            if module not in seen:
                seen[module] = current
                todo.append(module)
    return seen


def _chain(seen: dict[str, str], module: str) -> str:
    chain = [module]
    while seen[chain[-1]] != chain[-1]:
        chain.append(seen[chain[-1]])
    return " <- ".join(chain)


DFT_MODULES = sorted(_name_of(p) for p in (ROOT / "dft").glob("*.py"))


@pytest.mark.parametrize("forbidden", ["ehpc.infer", "ehpc.analysis", "ehpc.cli", "ehpc.train"])
def test_label_generation_does_not_reach(forbidden):
    """ehpc/dft (PySCF labels) imports nothing of inference, analysis, training or the CLI,
    directly or through another module."""
    seen = _reachable(DFT_MODULES)
    bad = [m for m in seen if m == forbidden or m.startswith(forbidden + ".")]
    assert not bad, f"ehpc.dft reaches {forbidden}: " + "; ".join(_chain(seen, m) for m in bad)


def test_import_reader_follows_lazy_imports():
    """The reader sees an import inside a function (ehpc.dft.periodic's libcint range scan)."""
    assert "ehpc.integrals" in _imports(ROOT / "dft" / "periodic.py")
