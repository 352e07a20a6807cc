"""User-facing errors.

Everything a user can get wrong (a path, a file format, a config value) is raised as a
:class:`DifflabError` at the boundary where it is detected; the CLI prints its message on one
line and exits non-zero.  Internal invariants use plain exceptions.
"""


class DifflabError(Exception):
    """An error caused by user input, with a message that names the problem."""
