"""One exception type for every user-facing failure.

The command line turns a :class:`GpmaskError` into a single ``gpmask: error: ...``
line and a non-zero exit; anything else is a bug and keeps its traceback.
"""


class GpmaskError(Exception):
    """Bad input or an environment that cannot do what was asked; the message says which."""
