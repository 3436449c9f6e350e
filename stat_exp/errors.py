"""UserError: a bad input that the user can fix; run.py prints its one-line message and exits 2."""


class UserError(Exception):
    """A one-line, actionable message (what is wrong, and how to fix it)."""
