"""Data parallelism is exact: W ranks x batch b make the steps of 1 process x batch W b.

Real ``torch.distributed`` (gloo on CPU) under the three launchers ``init_distributed``
reads: ``torchrun --standalone``, Open MPI's ``mpirun``, and srun's environment (two
processes given exactly the variables srun sets).  The reference is a single process
with the doubled batch.  With DDP averaging gradients and the loss normalised by the
*global* number of (weighted) entries, the two trajectories agree to round-off; in
float64 we require a relative 1e-9 over every step (observed ~1e-14), where a
per-rank normalisation would be off by percents (the molecules differ in size).

Validation is exact: 3 validation structures on 2 ranks (2 + 1, no padding) give the
single-process metrics, and the reported MAE of the exported model equals an
independent single-process evaluation (``ehpc.nn.fit.evaluate``).
"""

import socket
import subprocess
import sys
from dataclasses import astuple

import numpy as np
import pytest
import torch

from ehpc.cli import train as cli
from ehpc.io.dataset import Dataset
from ehpc.nn import HamiltonianModel
from ehpc.nn.fit import evaluate
from ehpc.train.batching import DistributedBatchSampler, pack, validation_shard
from ehpc.train.distributed import DEFAULT_PORT, DistributedError, first_host, launch_env

from .conftest import SPLITS, assert_rows_close, read_rows, run_trainer, train_env

RTOL = 1.0e-9
BATCH = 1  # per rank
STEPS_PER_EPOCH = len(SPLITS["train"]) // (2 * BATCH)


def common(config_file, out, batch: int, epochs: int = 3) -> list[str]:
    return ["--config", str(config_file), "--out-dir", str(out), "--set", f"train.epochs={epochs}",
            "--set", f"train.batch_size={batch}", "--set", "log.step_metrics=true"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
    """(one process with batch 2b, two torchrun ranks with batch b) run folders."""
    import yaml

    from .conftest import TINY

    folder = tmp_path_factory.mktemp("scaling")
    config = folder / "train.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": {"path": str(dataset)}}))
    single, double = folder / "one_rank", folder / "two_ranks"
    assert cli.main(common(config, single, 2 * BATCH)) == 0
    done = run_trainer(common(config, double, BATCH), ranks=2)
    assert done.returncode == 0, done.stderr
    assert "2 ranks via torchrun" in done.stdout
    return config, single, double


def test_two_ranks_follow_the_single_process_loss_curve(runs):
    _, single, double = runs
    steps = read_rows(double / "metrics.jsonl", "step")
    assert len(steps) == 3 * STEPS_PER_EPOCH
    assert_rows_close(read_rows(single / "metrics.jsonl", "step"), steps, RTOL)
    assert_rows_close(read_rows(single / "metrics.jsonl", "epoch"),
                      read_rows(double / "metrics.jsonl", "epoch"), RTOL)
    a = HamiltonianModel.load(single / "model.pt").state_dict()
    b = HamiltonianModel.load(double / "model.pt").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=RTOL, atol=1e-12)
    from matplotlib.image import imread

    height, width, channels = imread(double / "learning_curve.png").shape
    assert height > 100 and width > 100 and channels in (3, 4)


def test_validation_counts_every_structure_exactly_once(runs, dataset):
    _, single, double = runs
    data = Dataset(dataset)
    records = [data[name] for name in SPLITS["val"]]
    model = HamiltonianModel.load(double / "model.pt")
    # entries within the model cutoff, counted from the positions alone
    expected_entries = 0
    for record in records:
        nao = data.basis.nao_per_atom(record.numbers)
        for sx, sy, sz, i, j in record.atom_pairs:
            d = record.positions[j] + np.array([sx, sy, sz]) @ record.cell - record.positions[i]
            if i == j and not (sx or sy or sz) or np.linalg.norm(d) < model.cutoff:
                expected_entries += nao[i] * nao[j]
    for run in (single, double):
        rows = read_rows(run / "metrics.jsonl", "epoch")
        assert all(r["val_structures"] == len(SPLITS["val"]) == 3 for r in rows)
        assert all(r["val_entries"] == expected_entries for r in rows)
    # the best epoch's MAE is that of the exported (EMA) model, evaluated in one process
    best = min(read_rows(double / "metrics.jsonl", "epoch"), key=lambda r: r["val_loss"])
    reference = evaluate(model, records)
    assert reference["n_entries"] == expected_entries
    np.testing.assert_allclose(best["val_mae_eV"], reference["mae_eV"], rtol=RTOL)
    np.testing.assert_allclose(best["val_rmse_eV"], reference["rmse_eV"], rtol=RTOL)
    np.testing.assert_allclose(best["val_max_abs_eV"], reference["max_abs_eV"], rtol=RTOL)


def free_port(low: int = DEFAULT_PORT, high: int = DEFAULT_PORT + 1000) -> int:
    for port in range(low, high):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port for the rendezvous")


def test_mpirun_launch_matches(runs, tmp_path):
    config, single, _ = runs
    out = tmp_path / "mpi"
    env = train_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = ["mpirun", "--oversubscribe", "-n", "2", "-x", "MASTER_ADDR=localhost",
               "-x", f"MASTER_PORT={free_port()}", "-x", "OMP_NUM_THREADS=1",
               sys.executable, "-m", "ehpc.cli.train", *common(config, out, BATCH, epochs=1)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "2 ranks via mpirun" in done.stdout
    expected = read_rows(single / "metrics.jsonl", "step")[:STEPS_PER_EPOCH]
    got = read_rows(out / "metrics.jsonl", "step")
    # a run of one epoch has another cosine schedule than the reference's three, so
    # only the first step (same weights, same batch) is comparable
    assert len(got) == STEPS_PER_EPOCH
    np.testing.assert_allclose(got[0]["loss"], expected[0]["loss"], rtol=RTOL)


def test_srun_environment_launch_matches(runs, tmp_path):
    config, single, _ = runs
    out = tmp_path / "srun"
    port = free_port()
    processes = []
    for rank in range(2):
        env = train_env()
        # what srun sets for a 2-task step on one node; the port comes from the job id
        env.update(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_TASKS="2",
                   SLURM_NTASKS="2", SLURM_STEP_NODELIST="localhost",
                   SLURM_JOB_ID=str(port - DEFAULT_PORT))
        command = [sys.executable, "-m", "ehpc.cli.train", *common(config, out, BATCH, epochs=1)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][1] + outputs[1][1]
    assert "2 ranks via srun" in outputs[0][0]
    assert outputs[1][0] == ""  # rank 1 logs nothing
    got = read_rows(out / "metrics.jsonl", "step")
    expected = read_rows(single / "metrics.jsonl", "step")
    # one epoch: only the first step shares the reference's learning rate and weights
    assert len(got) == STEPS_PER_EPOCH
    np.testing.assert_allclose(got[0]["loss"], expected[0]["loss"], rtol=RTOL)


# ---------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 6, 7])
def test_shards_partition_and_step_in_lockstep(world, n):
    rng = np.random.default_rng(n)
    sizes = rng.integers(2, 13, size=n)
    # validation: every structure exactly once over the ranks
    shards = [validation_shard(n, r, world) for r in range(world)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    for batch, cap in ((1, None), (2, None), (3, 20)):
        per_rank = []
        for rank in range(world):
            sampler = DistributedBatchSampler(sizes, batch, cap, rank, world, seed=5)
            sampler.set_epoch(2)
            per_rank.append(sampler.batches())
        counts = {len(b) for b in per_rank}
        assert len(counts) == 1  # every rank makes the same number of steps
        seen = np.concatenate([np.concatenate(b) for b in per_rank])
        assert set(seen.tolist()) == set(range(n))  # every structure trained on
        assert len(seen) == -(-n // world) * world  # padded only to a multiple of W
        for batches in per_rank:
            for b in batches:
                assert len(b) <= batch
                assert cap is None or len(b) == 1 or sizes[b].sum() <= cap
        if cap is None:
            # the union of step s over ranks is step s of one process with batch W b
            one = DistributedBatchSampler(sizes, batch * world, None, 0, 1, seed=5)
            one.set_epoch(2)
            padded = -(-n // world) * world
            if padded == n:
                for s, together in enumerate(one.batches()):
                    union = np.concatenate([per_rank[r][s] for r in range(world)])
                    assert sorted(union.tolist()) == sorted(together.tolist())


def test_validation_batches_respect_the_orbital_cap():
    sizes = np.array([5, 5, 5, 30, 5])
    batches = pack(np.arange(5), sizes, batch_size=4, max_orbitals=12)
    assert [b.tolist() for b in batches] == [[0, 1], [2], [3], [4]]


def test_launcher_environments():
    srun = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "8",
            "SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "gpu[007-008,12],cpu1",
            "SLURM_JOB_ID": "4321"}
    env = launch_env(srun)
    assert (env.launcher, env.rank, env.world_size, env.local_rank) == ("srun", 3, 8, 1)
    assert env.master_addr == "gpu007" and env.master_port == 29500 + 321
    # a batch script's own environment is not an srun step: one process
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}
    assert launch_env(batch_script).world_size == 1
    mpi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "MASTER_ADDR": "n1"}
    assert astuple(launch_env(mpi))[:5] == ("mpirun", 1, 2, 1, "n1")
    with pytest.raises(DistributedError, match="MASTER_ADDR is not set"):
        launch_env({k: v for k, v in mpi.items() if k != "MASTER_ADDR"})
    torchrun = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "h",
                "MASTER_PORT": "1234", **srun}  # torchrun inside srun: torchrun's ranks win
    assert astuple(launch_env(torchrun)) == ("torchrun", 0, 4, 0, "h", 1234)
    assert first_host("node1") == "node1"
    assert first_host("rack[2-3]-n[01-04],x") == "rack2-n01"


def test_mpi_local_rank_reads_the_mpi_launchers_only():
    from ehpc.launch import mpi_local_rank

    # under srun with Open MPI both are set; Open MPI's own value is read first
    assert mpi_local_rank({"OMPI_COMM_WORLD_LOCAL_RANK": "1", "SLURM_LOCALID": "3"}) == 1
    assert mpi_local_rank({"MPI_LOCALRANKID": "2"}) == 2
    assert mpi_local_rank({"SLURM_LOCALID": "5"}) == 5
    assert mpi_local_rank({"LOCAL_RANK": "2"}) is None  # torchrun does not launch ehpc-infer
