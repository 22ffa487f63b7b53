"""Console scripts: one module per command, ``main(argv)`` parses and ``run(args)`` works.

Bad input (a broken structure, a missing file, a wrong option value: any
:class:`ehpc.errors.UserError`, or an ``OSError``) ends the command with one line
``<prog>: error: <message>`` on stderr and exit status 2, never a traceback; anything
else is a bug and keeps its traceback.  ``run_main`` is that one place for the plain
scripts; ``ehpc-train`` and ``ehpc-infer`` apply the same :data:`ehpc.errors.USER_ERRORS`
per MPI rank.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from ..atomic import write_text
from ..errors import USER_ERRORS, UserError

#: exit status for bad input, as argparse uses for bad options
USAGE_ERROR = 2


class CLIError(UserError, ValueError):
    """An option value that is well-formed but unusable (e.g. ``--chunk`` past ``--n-chunks``)."""


def summary(doc: str) -> str:
    """First line of a module docstring, without reST markup, for ``--help``."""
    return doc.strip().splitlines()[0].replace("``", "")


def check_xc(xc: str, option: str = "--xc") -> None:
    """Refuse a functional name libxc does not know, before any SCF starts.

    PySCF would otherwise fail inside the first SCF with a long libxc traceback.
    """
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(xc)
    except (KeyError, ValueError, TypeError) as err:
        detail = " ".join(str(err).strip("'\"").split())
        raise CLIError(f"{option} {xc!r}: not a functional PySCF/libxc knows ({detail}); "
                       "e.g. pbe, b3lyp, pbe0, 'lda,vwn'") from None


#: text written atomically (kept here for the CLIs and bench/ that import it from ehpc.cli)
write_atomic = write_text


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse ``argv``, call ``run`` and turn user errors into one line and status 2.

    Returns:
        the exit status (argparse's own status for ``--help`` or bad options).
    """
    # PySCF advertises basis-set-exchange when a basis lacks an element; the one-line
    # error below already says the element is missing.
    warnings.filterwarnings("ignore", message="Basis may be available in basis-set-exchange")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return int(run(args))
    except USER_ERRORS as err:
        message = " ".join(str(err).split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
