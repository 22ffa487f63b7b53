"""``ehpc-deeph import`` takes the basis, functional and orbital order from the folders'
``info.json`` (ehpc's export writes them) and refuses an option that contradicts them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ehpc.basis import Basis
from ehpc.cli import USAGE_ERROR
from ehpc.cli import deeph as deeph_cli
from ehpc.io.dataset import Dataset, DatasetWriter


@pytest.fixture
def exported(tmp_path, water_record):
    """An ehpc dataset (def2-svp, PBE) exported as DeepH folders in DeepH's orbital order."""
    with DatasetWriter(tmp_path / "in.h5", Basis("def2-svp"), "pbe", "pyscf", "test") as writer:
        writer.write(water_record)
    assert deeph_cli.main(["export", str(tmp_path / "in.h5"), str(tmp_path / "deeph"),
                           "--convention", "deeph"]) == 0
    return tmp_path / "deeph"


def test_import_reads_basis_xc_and_convention_from_info_json(tmp_path, exported, water_record):
    info = json.loads((exported / "water" / "info.json").read_text())["ehpc"]
    assert (info["basis"], info["xc"], info["orbital_convention"]) == ("def2-svp", "pbe", "deeph")
    out = tmp_path / "out.h5"
    assert deeph_cli.main(["import", str(exported), "--out", str(out)]) == 0
    data = Dataset(out)
    assert (data.basis, data.xc) == (Basis("def2-svp"), "pbe")
    back = data["water"]
    # the deeph order on disk was undone: the original PySCF-order matrices come back
    np.testing.assert_allclose(back.hamiltonian, water_record.hamiltonian, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.overlap, water_record.overlap, rtol=0, atol=1e-14)


def test_restating_the_same_values_is_accepted(tmp_path, exported):
    assert deeph_cli.main(["import", str(exported), "--basis", "DEF2-SVP", "--xc", "PBE",
                           "--convention", "openmx", "--out", str(tmp_path / "out.h5")]) == 0


@pytest.mark.parametrize("option, value, key", [
    ("--xc", "b3lyp", "xc pbe"),
    ("--basis", "sto-3g", "basis def2-svp"),
    ("--convention", "pyscf", "convention deeph"),
])
def test_contradicting_option_is_refused_in_one_line(tmp_path, exported, capsys, option, value,
                                                     key):
    out = tmp_path / "out.h5"
    status = deeph_cli.main(["import", str(exported), option, value, "--out", str(out)])
    assert status == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{option} {value} contradicts" in err[0] and key in err[0] and "info.json" in err[0]
    assert not out.exists()


def test_folder_that_states_nothing_needs_the_options(tmp_path, exported, capsys):
    info_path = exported / "water" / "info.json"
    info = json.loads(info_path.read_text())
    del info["ehpc"]  # as in DeepH-pack's own folders
    info_path.write_text(json.dumps(info))
    out = tmp_path / "out.h5"
    assert deeph_cli.main(["import", str(exported), "--out", str(out)]) == USAGE_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--basis is needed" in err[0], err
    assert deeph_cli.main(["import", str(exported), "--basis", "def2-svp", "--xc", "pbe",
                           "--convention", "deeph", "--out", str(out)]) == 0
    assert Dataset(out).xc == "pbe"
