"""The root of the suite's own errors: the CLI reports a :class:`SoftclipError` in one line (``-v`` adds the
traceback) and exits with its ``exit_code``."""

from __future__ import annotations


class SoftclipError(Exception):
    """An error a user can act on (bad input, an unreachable service); ``exit_code`` is the CLI's exit status.

    ``label`` prefixes the CLI's one line (``softclip: config error: ...``).
    """

    exit_code = 1
    label = "error"
