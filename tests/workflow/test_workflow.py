"""The Snakemake workflow as users run it: config validation, the SLURM profile's plan,
and a whole run on a small water set that is killed midway and resumed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not found")


def snakemake(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "-s", str(SNAKEFILE), "--directory", str(cwd), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def default_config(workdir: Path) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    config["workdir"] = str(workdir)
    config["train"]["config"] = str(ROOT / config["train"]["config"])
    return config


def water_config(workdir: Path) -> dict:
    """Water in sto-3g: seconds per PySCF label, so the whole pipeline runs in a test."""
    return {
        "workdir": str(workdir),
        "dft": {"basis": "sto-3g", "xc": "pbe"},
        "cutoff": 4.0,
        "structures": [{"kind": "molecule", "name": "H2O", "n": 16, "temperature": 300,
                        "seed": 0}],
        "datagen": {"n_chunks": 2},
        "split": {"train": 10, "val": 3, "test": 3, "seed": 0},
        "train": {"config": str(ROOT / "configs" / "train_default.yaml"),
                  "set": {"train.epochs": 3, "model.channels": 4, "log.tensorboard": False},
                  "threads": 1},
        "evaluate": {"split": "test", "band_structure": None},
        "infer": {"structure": {"kind": "cluster", "name": "H2O", "grid": [3, 2, 2],
                                "spacing": 3.1, "seed": 0},
                  "ranks": 2, "nev": 6},
    }


def planned_jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> count."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def job_resources(output: str, rule: str) -> dict[str, str]:
    block = output.split(f"rule {rule}:")[1].split("\nrule ")[0]
    line = re.search(r"resources: (.*)", block).group(1)
    return dict(item.split("=", 1) for item in line.split(", "))


def job_shell(output: str, rule: str) -> str:
    block = output.split(f"rule {rule}:")[1]
    return re.search(r"Shell command: (.*)", block).group(1)


def test_slurm_profile_dry_run_plans_every_stage_with_its_resources(tmp_path):
    config = write_config(tmp_path / "config.yaml", default_config(tmp_path / "run"))
    result = snakemake("--profile", str(ROOT / "cluster" / "slurm"), "-n", "--configfile",
                       str(config), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert planned_jobs(out) == {"structures": 1, "labels": 2, "dataset": 1, "train": 1,
                                 "band_cell": 1, "evaluate": 1, "infer_structure": 1,
                                 "infer": 1, "report": 1, "all": 1}
    train = job_resources(out, "train")
    assert (train["gpu"], train["tasks_per_gpu"], train["slurm_partition"]) == ("1", "0", "gpu")
    infer = job_resources(out, "infer")
    assert (infer["mpi"], infer["tasks"]) == ("srun", "2")  # infer.ranks of the config
    assert "srun -n 2 ehpc-infer" in job_shell(out, "infer")
    labels = job_resources(out, "labels")
    assert (labels["cpus_per_task"], labels["runtime"]) == ("8", "720")
    assert job_resources(out, "dataset")["slurm_account"] == "my_account"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(epochs=3), "epochs"),
    (lambda c: c["infer"].update(ranks=0), "ranks"),
    (lambda c: c["structures"][0].update(rattel=0.1), "rattel"),
    (lambda c: c["infer"]["structure"].update(kind="cluster", path="missing.xyz"), "grid"),
])
def test_bad_config_is_refused_before_any_job(tmp_path, edit, message):
    config = default_config(tmp_path / "run")
    edit(config)
    path = write_config(tmp_path / "config.yaml", config)
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()


def label_files(workdir: Path) -> dict[str, tuple[int, int]]:
    """Finished per-structure label files: name -> (inode, mtime_ns)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (workdir / "labels").glob("*.h5")}


@pytest.mark.slow
@pytest.mark.mpi
def test_killed_workflow_resumes_without_repeating_finished_dft(tmp_path):
    """Kill the whole workflow while labels are being computed, rerun it: the finished
    labels are kept (same files), the rest of the pipeline completes, and every output a
    user looks at is there and readable."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found")
    workdir = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", water_config(workdir))
    command = ["snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), "--cores", "2",
               "--configfile", str(config)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while len(label_files(workdir)) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    kept = label_files(workdir)
    assert 3 <= len(kept) < 16, "the kill should land while labels are being computed"
    assert not (workdir / "dataset.h5").exists()

    # as after any SIGKILL of Snakemake: release its stale lock, then rerun
    unlock = subprocess.run(command + ["--unlock"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = subprocess.run(command + ["--rerun-incomplete"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    logs = "\n".join(p.read_text() for p in sorted((workdir / "logs").glob("*.log")))
    assert rerun.returncode == 0, rerun.stderr[-3000:] + logs[-3000:]
    after = label_files(workdir)
    assert len(after) == 16
    assert {name: after[name] for name in kept} == kept  # finished DFT untouched
    skipped = sum(json.loads((workdir / "labels" / f"chunk_{k}.done").read_text())["skipped"]
                  for k in range(2))
    assert skipped == len(kept)
    # the label logs say which structure is running and how it ended (issue 12)
    label_logs = "".join(p.read_text() for p in (workdir / "logs").glob("labels_*.log"))
    assert re.search(r"structure \d+ of 8, done in [\d.]+ s, \d+ SCF cycles", label_logs)
    assert re.search(r"structure \d+ of 8, already labelled", label_logs)

    for name in ("summary.txt", "plots/parity.png", "plots/dos.png", "plots/learning_curve.png",
                 "evaluation/metrics.json", "train/model.pt", "infer/results.h5", "dataset.h5"):
        assert (workdir / name).is_file(), name
    from ehpc.io.results import read_results

    results = read_results(workdir / "infer" / "results.h5")
    assert len(results.atoms) == 36 and results.n_ranks == 2
    assert results.homo < results.fermi_level < results.lumo
    metrics = json.loads((workdir / "evaluation" / "metrics.json").read_text())
    assert metrics["metrics"]["n_structures"] == 3
    with h5py.File(workdir / "dataset.h5") as f:
        assert len(f["structures"]) == 16
    summary = (workdir / "summary.txt").read_text()
    assert f"{results.fermi_level:10.4f}" in summary
    assert "H MAE" in summary

    # a third run has nothing left to do
    again = subprocess.run(command + ["-n"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("name, chunks, stages", [
    ("water", 20, {"band_cell": 0}),
    ("silicon", 32, {"band_cell": 1}),
    ("graphene", 16, {"band_cell": 1}),
])
def test_production_configs_plan_the_whole_pipeline(tmp_path, name, chunks, stages):
    """The shipped production configs are valid on their own (not merged into the
    default) and plan every stage."""
    config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    config["workdir"] = str(tmp_path / "run")
    config["train"]["config"] = str(ROOT / config["train"]["config"])
    path = write_config(tmp_path / "config.yaml", config)
    result = snakemake("-n", "--cores", "2", "--configfile", str(path), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result.stdout + result.stderr)
    assert jobs["labels"] == chunks
    assert jobs.get("band_cell", 0) == stages["band_cell"]
    for rule in ("structures", "dataset", "train", "evaluate", "infer_structure", "infer", "report"):
        assert jobs[rule] == 1, rule
