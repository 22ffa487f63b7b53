"""``ehpc-datagen``: chunking, resume after deletion, and a SIGKILL mid-run."""

import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from ehpc.cli import datagen
from ehpc.io.dataset import Dataset
from ehpc.sources import molecular_conformers

LEVEL = ["--basis", "def2-svp", "--xc", "pbe", "--cutoff", "6.0"]


def conformer_file(folder, n: int):
    """``n`` thermal water conformers in one extxyz file, named ``water_0000k``."""
    confs = molecular_conformers(molecule("H2O"), n, 300.0, seed=11, basis="sto-3g", xc="lda,vwn", prefix="water")
    path = folder / "water.extxyz"
    ase.io.write(path, confs, format="extxyz")
    return path, [a.info["name"] for a in confs], confs


def test_chunks_then_resume_recomputes_only_the_missing_file(tmp_path, capsys):
    path, names, confs = conformer_file(tmp_path, 3)
    out = tmp_path / "labels"
    argv = ["--structures", str(path), *LEVEL, "--out-dir", str(out)]
    assert datagen.main([*argv, "--chunk", "1", "--n-chunks", "2"]) == 0
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.h5")) == [f"{names[1]}.h5"]
    assert datagen.main([*argv, "--chunk", "0", "--n-chunks", "2"]) == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    files = {name: out / f"{name}.h5" for name in names}
    for name, atoms in zip(names, confs):
        record = Dataset(files[name])[name]
        np.testing.assert_allclose(record.positions, atoms.positions, atol=1e-7)  # extxyz precision
    before = {name: p.stat().st_mtime_ns for name, p in files.items()}
    reference = Dataset(files[names[1]])[0]

    files[names[1]].unlink()
    time.sleep(0.05)
    assert datagen.main(argv) == 0
    captured = capsys.readouterr()
    assert "1 done, 2 skipped, 0 failed" in captured.out
    assert "skipped 2 structure(s)" in captured.err
    for name in (names[0], names[2]):
        assert files[name].stat().st_mtime_ns == before[name]
    redone = Dataset(files[names[1]])[0]
    np.testing.assert_array_equal(redone.atom_pairs, reference.atom_pairs)
    np.testing.assert_allclose(redone.hamiltonian, reference.hamiltonian, atol=1e-5)


def test_rerun_relabels_a_structure_whose_geometry_or_settings_changed(tmp_path, capsys):
    """Same names, different content: the old label must not be kept."""
    path, names, confs = conformer_file(tmp_path, 2)
    out = tmp_path / "labels"
    argv = ["--structures", str(path), *LEVEL, "--out-dir", str(out)]
    assert datagen.main(argv) == 0
    capsys.readouterr()
    moved = [a.copy() for a in ase.io.read(path, index=":")]
    moved[1].positions[0] += [0.05, 0.0, 0.0]
    ase.io.write(path, moved, format="extxyz")
    assert datagen.main(argv) == 0
    captured = capsys.readouterr()
    assert "1 done, 1 skipped, 0 failed" in captured.out
    assert "the structure changed since it was labelled" in captured.err
    record = Dataset(out / f"{names[1]}.h5")[names[1]]
    np.testing.assert_allclose(record.positions, moved[1].positions, atol=1e-7)

    wider = [*argv[:-4], "--cutoff", "7.0", "--out-dir", str(out)]
    assert wider[:4] == ["--structures", str(path), "--basis", "def2-svp"]
    assert datagen.main(wider) == 0
    captured = capsys.readouterr()
    assert "2 done, 0 skipped, 0 failed" in captured.out
    assert "its pair cutoff is 6 Å, not 7 Å" in captured.err


def test_sigkill_then_rerun_completes(tmp_path):
    n = 5
    path, names, _ = conformer_file(tmp_path, n)
    out = tmp_path / "labels"
    argv = ["--structures", str(path), *LEVEL, "--out-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ehpc.cli.datagen", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.h5")):
        if proc.poll() is not None:
            pytest.fail(f"ehpc-datagen ended before writing anything: {proc.stderr.read().decode()}")
        assert time.monotonic() < deadline, "no output within 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    finished = sorted(out.glob("*.h5"))
    assert 1 <= len(finished) < n
    for p in finished:  # anything that looks finished is complete
        assert Dataset(p).names == [p.stem]
    assert all(p.name.startswith(".") and p.name.endswith(".tmp")
               for p in out.iterdir() if p.suffix != ".h5")
    assert datagen.main(argv) == 0
    assert sorted(p.stem for p in out.glob("*.h5")) == names
    for name in names:
        assert len(Dataset(out / f"{name}.h5")) == 1
    assert not list(out.glob(".*.tmp"))


def test_spec_molecules_reuse_cached_hessian(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("- {kind: molecule, name: H2O, n: 2, temperature: 300, seed: 5,\n"
                    "   hessian_basis: sto-3g, hessian_xc: 'lda,vwn'}\n")
    out = tmp_path / "labels"
    argv = ["--spec", str(spec), *LEVEL, "--out-dir", str(out)]
    assert datagen.main(argv) == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    (cached,) = (out / ".hessians").glob("hessian-*.npy")
    expected = molecular_conformers(molecule("H2O"), 2, 300.0, seed=5, basis="sto-3g", xc="lda,vwn",
                                    prefix="H2O")
    for atoms in expected:
        record = Dataset(out / f"{atoms.info['name']}.h5")[0]
        np.testing.assert_allclose(record.positions, atoms.positions, atol=1e-10)
    stamp = cached.stat().st_mtime_ns
    assert datagen.main(argv) == 0
    assert "0 done, 2 skipped, 0 failed" in capsys.readouterr().out
    assert cached.stat().st_mtime_ns == stamp


def test_a_crystal_rerun_continues_from_the_scf_checkpoint(tmp_path, capsys):
    """A crystal job killed after (part of) its SCF leaves ``NAME.scf.chk``; the rerun
    starts from those orbitals, and a checkpoint of another cell size is not used."""
    from ase.build import bulk

    from ehpc.basis import Basis
    from ehpc.dft.periodic import build_cell, run_krks
    from ehpc.units import HARTREE_TO_EV

    cubic = bulk("Si", "diamond", a=5.43, cubic=True)
    cubic.positions += np.random.default_rng(4).normal(scale=0.05, size=cubic.positions.shape)
    cubic.info["name"] = "si8"
    path = tmp_path / "si8.extxyz"
    ase.io.write(path, [cubic], format="extxyz")
    out = tmp_path / "labels"
    out.mkdir()
    checkpoint = out / f"si8{datagen.CHECKPOINT_SUFFIX}"
    argv = ["--structures", str(path), "--basis", "gth-szv", "--xc", "pbe", "--cutoff", "4.0",
            "--conv-tol", "1e-9", "--allow-large-floor", "--out-dir", str(out)]

    def cycles() -> int:
        assert datagen.main(argv) == 0
        line = [x for x in capsys.readouterr().err.splitlines() if " done in " in x]
        assert line, "no 'done' line"
        return int(line[-1].split(" SCF cycles")[0].rsplit(" ", 1)[-1])

    other = bulk("Si", "diamond", a=5.43)  # a 2-atom cell's orbitals under the same name
    run_krks(build_cell(other, Basis("gth-szv"), "si2"), "pbe", (1, 1, 1), "si2",
             chkfile=checkpoint)
    fresh = cycles()
    assert fresh > 2 and not checkpoint.exists()
    energy = Dataset(out / "si8.h5")["si8"].attrs["energy"]

    (out / "si8.h5").unlink()  # as if killed after the SCF: its checkpoint is left
    mf = run_krks(build_cell(cubic, Basis("gth-szv"), "si8"), "pbe", (1, 1, 1), "si8",
                  conv_tol=1e-9, chkfile=checkpoint)
    assert mf.e_tot * HARTREE_TO_EV == pytest.approx(energy, abs=1e-6)
    assert cycles() <= 2 < fresh
    assert not checkpoint.exists()
    assert Dataset(out / "si8.h5")["si8"].attrs["energy"] == pytest.approx(energy, abs=1e-6)
