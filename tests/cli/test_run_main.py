"""One mark of bad input: every UserError ends a console script in one line and status 2."""

from __future__ import annotations

import argparse
import importlib

import pytest

from ehpc.cli import run_main
from ehpc.errors import UserError


class NewKindOfBadInput(UserError, RuntimeError):
    """A user error no console script lists by name."""


def raising(err: BaseException):
    def run(args: argparse.Namespace) -> int:
        raise err
    return run


def test_a_new_user_error_subclass_gives_status_2_and_one_line(capsys):
    status = run_main("ehpc-x", argparse.ArgumentParser(), raising(
        NewKindOfBadInput("structure 'w1', atom 3:\n   element Xx is not in basis gth-szv")), [])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "ehpc-x: error: structure 'w1', atom 3: element Xx is not in basis gth-szv\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_main("ehpc-x", argparse.ArgumentParser(), raising(ZeroDivisionError("bug")), [])


#: the errors that name bad input (module, class): each was listed by hand in one of the
#: console scripts before they shared one base
USER_FACING = [
    ("ehpc.basis", "BasisError"), ("ehpc.structure", "StructureError"),
    ("ehpc.sources", "SourceError"), ("ehpc.cli", "CLIError"),
    ("ehpc.dft.scf", "SCFNotConverged"), ("ehpc.dft.floor", "TruncationFloorError"),
    ("ehpc.io.dataset", "DatasetError"), ("ehpc.io.splits", "SplitError"),
    ("ehpc.io.deeph", "DeepHError"), ("ehpc.nn.model", "ModelCompatibilityError"),
    ("ehpc.nn.model", "ModelFileError"), ("ehpc.nn.data", "GraphError"),
    ("ehpc.train.config", "ConfigError"), ("ehpc.train.checkpoint", "CheckpointError"),
    ("ehpc.train.distributed", "DistributedError"), ("ehpc.train.loop", "TrainingDiverged"),
    ("ehpc.infer.fermi", "FermiError"), ("ehpc.integrals", "IntegralError"),
    ("ehpc.infer.solve", "SolveError"), ("ehpc.infer.pipeline", "StructureMismatch"),
    ("ehpc.infer.pipeline", "InputRefused"),
]
#: internal inconsistencies: bugs, reported with a traceback
BUGS = [("ehpc.infer.assemble", "AssemblyError"), ("ehpc.infer.predict", "PredictionError")]


@pytest.mark.parametrize(("module", "name"), USER_FACING + BUGS)
def test_which_errors_are_user_errors(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, UserError) == ((module, name) in USER_FACING)
