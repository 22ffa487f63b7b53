"""ehpc.atomic: a failed write leaves the old file and no temporary; a kill's leftovers are found."""

import os

import pytest

from ehpc.atomic import leftovers, replacing, write_text


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]


def test_a_failing_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.dat").write_text("1")
    with pytest.raises(KeyError):
        with replacing(target) as tmp:
            tmp.mkdir()
            (tmp / "new.dat").write_text("2")
            raise KeyError("element")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    assert sorted(p.name for p in target.iterdir()) == ["old.dat"]


def test_a_successful_write_replaces_file_and_folder(tmp_path):
    assert write_text(tmp_path / "sub" / "a.txt", "new\n").read_text() == "new\n"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "old.dat").write_text("1")
    with replacing(tmp_path / "dir") as tmp:
        tmp.mkdir()
        (tmp / "new.dat").write_text("2")
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["new.dat"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "sub"]


def test_leftovers_are_the_killed_writers_temporaries_only(tmp_path):
    killed = tmp_path / f".last.pt.{os.getpid() + 1}.tmp"
    killed.write_bytes(b"torn")
    (tmp_path / ".last.pt.bak").write_bytes(b"not ours")
    (tmp_path / ".best.pt.7.tmp").write_bytes(b"another target")
    assert leftovers(tmp_path, "last.pt") == [killed]
