"""What a user sees before any job runs: ``snakemake -n`` refuses a bad config with one
line, the README's ``./run.sh`` forms work, ``./run.sh setup`` sets up and links the
SLURM profile under its plain name, and the dry run plans the rank count of the config.

Every ``./run.sh`` here runs against a throw-away virtual environment marked current, so
no test ever installs anything (and never touches the environment the tests run in)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = ROOT / "Snakefile"
RUN_SH = ROOT / "run.sh"

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not found")


def snakemake(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "-s", str(SNAKEFILE), "--directory", str(cwd), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def default_config(tmp_path: Path) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    config["workdir"] = str(tmp_path / "run")
    config["train"]["config"] = str(ROOT / config["train"]["config"])
    return config


def dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return snakemake("-n", "--cores", "1", "--configfile", str(path), cwd=tmp_path)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and one line on stderr holding every fragment; nothing on stdout."""
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(err) == 1, err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert len(result.stdout.strip().splitlines()) <= 1
    return err[0]


# ---------------------------------------------------------------------- item 4, 14


def test_typo_in_train_set_is_refused_by_the_dry_run(tmp_path):
    config = default_config(tmp_path)
    config["train"]["set"] = {"train.epoch": 800}
    line = assert_refused(dry_run(tmp_path, config), "train.set", "train.epoch", "unknown key",
                          "train.epochs")
    assert "Traceback" not in line
    assert not (tmp_path / "run").exists()


def test_out_of_range_train_set_value_is_refused_by_the_dry_run(tmp_path):
    config = default_config(tmp_path)
    config["train"]["set"] = {"train.lr": -1}
    assert_refused(dry_run(tmp_path, config), "train.lr", "must be > 0")


def test_typo_in_the_train_config_file_is_refused_by_the_dry_run(tmp_path):
    train_file = tmp_path / "train.yaml"
    raw = yaml.safe_load((ROOT / "configs" / "train_default.yaml").read_text())
    raw["train"]["lrr"] = raw["train"].pop("lr", 1e-3)
    train_file.write_text(yaml.safe_dump(raw))
    config = default_config(tmp_path)
    config["train"]["config"] = str(train_file)
    assert_refused(dry_run(tmp_path, config), "train.config", str(train_file), "train.lrr",
                   "'train.lr'")


def test_missing_train_config_file_is_refused_by_the_dry_run(tmp_path):
    config = default_config(tmp_path)
    config["train"]["config"] = str(tmp_path / "nowhere.yaml")
    assert_refused(dry_run(tmp_path, config), "nowhere.yaml", "not found")


def test_schema_error_is_one_line_naming_the_key_and_the_schema(tmp_path):
    config = default_config(tmp_path)
    config["infer"]["rankz"] = 3
    assert_refused(dry_run(tmp_path, config), "infer.rankz", "unknown key", "'ranks'",
                   "configs/schema.yaml")


def test_schema_type_error_is_one_line(tmp_path):
    config = default_config(tmp_path)
    config["infer"]["ranks"] = "many"
    assert_refused(dry_run(tmp_path, config), "infer.ranks", "'many'", "integer",
                   "configs/schema.yaml")


def test_unknown_functional_is_refused_by_the_dry_run(tmp_path):
    config = default_config(tmp_path)
    config["dft"]["xc"] = "pbee"
    assert_refused(dry_run(tmp_path, config), "dft.xc 'pbee'", "not a functional")


def test_negative_rattle_in_a_spec_is_refused_by_the_dry_run(tmp_path):
    config = default_config(tmp_path)
    config["infer"]["structure"]["rattle"] = -0.1
    assert_refused(dry_run(tmp_path, config), "infer.structure", "rattle must be >= 0")


# ---------------------------------------------------------------------- item 11


def test_cluster_dry_run_launches_the_rank_count_of_the_config(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "silicon.yaml").read_text())
    ranks = config["infer"]["ranks"]
    config["workdir"] = str(tmp_path / "run")
    config["train"]["config"] = str(ROOT / config["train"]["config"])
    path = tmp_path / "silicon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake("--profile", str(ROOT / "cluster" / "slurm"), "-n", "--configfile",
                       str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert ranks == 16
    assert f"srun -n {ranks} ehpc-infer" in out
    block = out.split("rule infer:")[1].split("\nrule ")[0]
    assert f"tasks={ranks}" in block
    assert "srun -n 64" not in out


# ---------------------------------------------------------------------- ./run.sh, items 8-10b


@pytest.fixture(scope="module")
def setup_env(tmp_path_factory) -> dict[str, str]:
    """The environment for ./run.sh: a fresh virtual environment (no pip, so nothing can be
    installed into it by mistake) that ``./run.sh setup --check`` names the stamp of, marked
    current; a private config home for the profile link."""
    base = tmp_path_factory.mktemp("setup")
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable,
                    "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    env = dict(os.environ, EHPC_VENV=str(venv), XDG_CONFIG_HOME=str(base / "config"),
               EHPC_CORES="1")
    check = subprocess.run(["bash", str(RUN_SH), "setup", "--check"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert check.returncode == 1, check.stderr
    assert f"{venv} is not set up" in check.stderr
    stamp = re.search(r"wanted stamp (\w+)", check.stderr).group(1)
    (venv / ".ehpc-installed").write_text(stamp + "\n")
    return env


def run_sh(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_setup_only_command_sets_up_and_links_the_slurm_profile(setup_env):
    check = run_sh("setup", "--check", env=setup_env)
    assert check.returncode == 0 and "environment ready" in check.stderr, check.stderr
    result = run_sh("setup", env=setup_env)
    assert result.returncode == 0, result.stderr
    assert f"environment ready: {setup_env['EHPC_VENV']}" in result.stderr
    assert "Snakemake" not in result.stdout + result.stderr  # set-up only: no workflow run
    link = Path(setup_env["XDG_CONFIG_HOME"]) / "snakemake" / "slurm"
    assert link.resolve() == (ROOT / "cluster" / "slurm").resolve()
    # idempotent
    assert run_sh("setup", env=setup_env).returncode == 0


def test_another_torch_requirement_makes_the_setup_stale(setup_env):
    """EHPC_TORCH (a CUDA wheel on a cluster) is part of what the set-up installed from."""
    torch = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    cuda = dict(setup_env, EHPC_TORCH=torch)
    check = run_sh("setup", "--check", env=cuda)
    assert check.returncode == 1 and "is not set up" in check.stderr, check.stderr


def test_setup_leaves_a_users_own_slurm_profile_alone(tmp_path, setup_env):
    env = dict(setup_env, XDG_CONFIG_HOME=str(tmp_path))
    own = tmp_path / "snakemake" / "slurm"
    own.mkdir(parents=True)
    (own / "config.yaml").write_text("jobs: 1\n")
    result = run_sh("setup", env=env)
    assert result.returncode == 0, result.stderr
    assert "left as it is" in result.stderr
    assert (own / "config.yaml").read_text() == "jobs: 1\n" and not own.is_symlink()


def test_env_prints_the_exports_of_the_chosen_environment(setup_env):
    result = run_sh("env", env=setup_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("export ")
    assert f"VIRTUAL_ENV={setup_env['EHPC_VENV']}" in result.stdout


def test_plain_slurm_profile_name_works_after_setup(tmp_path, setup_env):
    assert run_sh("setup", env=setup_env).returncode == 0
    config = default_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake("--profile", "slurm", "-n", "--configfile", str(path), cwd=tmp_path,
                       env=setup_env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert f"srun -n {config['infer']['ranks']} ehpc-infer" in out  # the profile's launcher
    assert "slurm_account=my_account" in out


def test_readme_run_sh_forms_pass_their_options_to_snakemake(setup_env):
    plan = run_sh("-n", env=setup_env)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "This was a dry-run" in plan.stdout + plan.stderr
    assert re.search(r"^labels\s+2$", plan.stdout, re.M)  # configs/default.yaml: 2 chunks
    water = run_sh("--configfile", "configs/water.yaml", "-n", env=setup_env)
    assert water.returncode == 0, water.stderr[-3000:]
    assert re.search(r"^labels\s+20$", water.stdout, re.M)  # configs/water.yaml: 20 chunks
