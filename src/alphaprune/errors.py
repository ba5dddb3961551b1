"""User-facing errors: one line, names the problem and the fix, exit code 2."""

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input. The CLI prints it on one line and exits with 2."""
