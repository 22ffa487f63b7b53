"""configs/schema.yaml owns the workflow's defaults: each one equals the code default it
stands in for (the library constant, and the default of the CLI option the rule passes it
to, so a workflow run and a hand-typed command mean the same), and a config that leaves
the keys out gets them when the Snakefile checks it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "configs" / "schema.yaml"


def schema_default(dotted: str):
    node = yaml.safe_load(SCHEMA.read_text())
    for key in dotted.split("."):
        node = node["properties"][key]
    assert "default" in node, f"{dotted}: no default in {SCHEMA}"
    return node["default"]


def cli_default(command: str, dest: str):
    import importlib

    return importlib.import_module(f"ehpc.cli.{command}").build_parser().get_default(dest)


def code_defaults(key: str) -> list:
    """Every default in the code that the schema's ``key`` stands in for."""
    from ehpc.analysis.bands import BAND_PATH_POINTS
    from ehpc.dft.floor import FLOOR_TOL_MEV
    from ehpc.dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE
    from ehpc.infer.overlap import OVERLAP_DROP_TOLERANCE
    from ehpc.infer.pipeline import InferenceOptions
    from ehpc.infer.predict import DEFAULT_CHUNK_ATOMS

    options = InferenceOptions()
    return {
        "dft.conv_tol": [SCF_CONV_TOL, cli_default("datagen", "conv_tol")],
        "dft.max_cycle": [SCF_MAX_CYCLE, cli_default("datagen", "max_cycle")],
        "dft.floor_tol": [FLOOR_TOL_MEV, cli_default("datagen", "floor_tol")],
        "dft.kmesh": [cli_default("datagen", "kmesh")],
        "dft.pseudo": [cli_default("datagen", "pseudo")],
        "dft.smearing": [cli_default("datagen", "smearing")],
        "dft.allow_large_floor": [cli_default("datagen", "allow_large_floor")],
        "datagen.n_chunks": [cli_default("datagen", "n_chunks")],
        "split.seed": [cli_default("dataset", "seed")],
        "evaluate.split": [cli_default("evaluate", "split")],
        "evaluate.band_points": [BAND_PATH_POINTS, cli_default("evaluate", "band_points")],
        "evaluate.band_kmesh": [cli_default("evaluate", "kmesh")],
        "infer.overlap_tol": [OVERLAP_DROP_TOLERANCE, options.overlap_tol,
                              cli_default("infer", "overlap_tol")],
        "infer.nev": [options.nev, cli_default("infer", "nev")],
        "infer.chunk_atoms": [DEFAULT_CHUNK_ATOMS, options.chunk_atoms,
                              cli_default("infer", "chunk_atoms")],
        "infer.fermi_method": [options.fermi_method, cli_default("infer", "fermi_method")],
        "infer.eigenvectors": [options.eigenvectors, cli_default("infer", "eigenvectors")],
    }[key]


MIRRORED = ["dft.conv_tol", "dft.max_cycle", "dft.floor_tol", "dft.kmesh", "dft.pseudo",
            "dft.smearing", "dft.allow_large_floor", "datagen.n_chunks", "split.seed",
            "evaluate.split", "evaluate.band_points", "evaluate.band_kmesh",
            "infer.overlap_tol", "infer.nev", "infer.chunk_atoms", "infer.fermi_method",
            "infer.eigenvectors"]


@pytest.mark.parametrize("key", MIRRORED)
def test_schema_default_is_the_code_default(key):
    expected = schema_default(key)
    for value in code_defaults(key):
        assert value == expected, f"{key}: schema default {expected!r}, code default {value!r}"


def sparse_config() -> dict:
    """The default config without any of the keys the schema has a default for."""
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    for key in ("pseudo", "kmesh", "conv_tol", "max_cycle", "floor_tol", "allow_large_floor",
                "smearing"):
        config["dft"].pop(key, None)
    config["datagen"] = {}
    config["split"].pop("seed")
    config["train"] = {"config": str(ROOT / config["train"]["config"])}
    config["evaluate"] = {}
    config["infer"] = {"structure": config["infer"]["structure"]}
    return config


def test_missing_keys_get_the_schema_defaults():
    from ehpc.config_schema import check_config
    from ehpc.dft.floor import FLOOR_TOL_MEV
    from ehpc.dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE
    from ehpc.infer.overlap import OVERLAP_DROP_TOLERANCE

    config = sparse_config()
    assert check_config(config, SCHEMA) is None
    dft, infer = config["dft"], config["infer"]
    assert (dft["conv_tol"], dft["max_cycle"], dft["floor_tol"]) == (
        SCF_CONV_TOL, SCF_MAX_CYCLE, FLOOR_TOL_MEV)
    assert dft["kmesh"] == [1, 1, 1] and dft["pseudo"] is None and dft["smearing"] is None
    assert infer["overlap_tol"] == OVERLAP_DROP_TOLERANCE
    assert (infer["ranks"], infer["mpi"], infer["petsc_options"]) == (2, "mpirun", [])
    assert config["datagen"]["n_chunks"] == 1 and config["split"]["seed"] == 0
    assert config["evaluate"]["band_structure"] is None
    assert config["train"]["set"] is None and config["train"]["processes"] == 1
    # a fresh copy each time: a rule that changed one config's list leaves the next alone
    again = sparse_config()
    check_config(again, SCHEMA)
    assert again["dft"]["kmesh"] is not dft["kmesh"]


def test_given_keys_are_kept_and_a_bad_section_is_still_one_message():
    from ehpc.config_schema import check_config

    config = sparse_config()
    config["dft"]["conv_tol"] = 1e-7
    config["infer"]["nev"] = 7
    assert check_config(config, SCHEMA) is None
    assert config["dft"]["conv_tol"] == 1e-7 and config["infer"]["nev"] == 7
    config["dft"] = 5
    message = check_config(config, SCHEMA)
    assert message.startswith("dft: ") and "object" in message, message


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not found")
def test_dry_run_passes_the_schema_defaults_to_the_commands(tmp_path):
    from ehpc.dft.floor import FLOOR_TOL_MEV
    from ehpc.dft.scf import SCF_CONV_TOL, SCF_MAX_CYCLE
    from ehpc.infer.overlap import OVERLAP_DROP_TOLERANCE

    config = sparse_config()
    config["workdir"] = str(tmp_path / "run")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(["snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                             str(tmp_path), "-n", "-p", "--cores", "1", "--configfile", str(path)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert (f"--kmesh 1 1 1 --conv-tol {SCF_CONV_TOL} --max-cycle {SCF_MAX_CYCLE} "
            f"--floor-tol {FLOOR_TOL_MEV} --out-dir") in out
    split = config["split"]  # the counts as configs/default.yaml gives them; the seed defaults
    counts = f"train={split['train']},val={split['val']},test={split['test']}"
    assert f"--split {counts} --seed 0 " in out
    assert "mpirun -n 2 ehpc-infer" in out and f"--overlap-tol {OVERLAP_DROP_TOLERANCE} " in out
    assert "--n-chunks 1 " in out and "--band-structure" not in out
