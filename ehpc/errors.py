"""The one mark of a user error: input that is wrong, as opposed to ehpc being wrong.

Every error class that names bad input (a structure, a basis, a config key, a model
file, an option) derives from :class:`UserError`; the console scripts catch
:data:`USER_ERRORS` and print one line with exit status 2 instead of a traceback.
Anything else is a bug and keeps its traceback.

``UserError`` is a mark only: each class keeps its built-in base (``ValueError`` or
``RuntimeError``), so code that catches those catches it as before.  Standard library
only: ``train/config.py`` imports it when the Snakefile loads that file on its own.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input; the message names it and what would fix it."""


#: what the console scripts report in one line: our user errors, and files that cannot
#: be opened or written (missing, unreadable, a full disk)
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)
