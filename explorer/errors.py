"""The one base class for errors caused by what a user asked for, and the few kinds that several
packages raise.

The CLI turns these into exit code 2 with their message; the app shows the message. Anything
else is a bug (exit 1, traceback in the log).
"""


class UserError(Exception):
    """Bad input: a one-line message saying what is wrong and, where possible, what to do."""


class RecipeError(UserError):
    """A training recipe with impossible values, or one this device cannot run (mixed precision)."""
