"""The one base class for errors caused by what a user asked for, and the few kinds that several
packages raise.

The CLI turns these into exit code 2 with their message; the app shows the message. Anything
else is a bug (exit 1, traceback in the log).
"""


import json


def first_line(err: BaseException, named: bool = False) -> str:
    """What a one-line report says of an exception: the first line of its message (its type's name
    when it has none); `named` puts the type's name first, for errors raised by a user's own code."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0][:200] if named else text.splitlines()[0]
    return f"{type(err).__name__}: {line}" if named else line


class UserError(Exception):
    """Bad input: a one-line message saying what is wrong and, where possible, what to do."""


def json_object(text: str | None, flag: str, error: type[UserError], example: str = "") -> dict | None:
    """The JSON object a command-line flag was given (None when it was not), or `error` in one
    line: the flag's name, and what is wrong with its value."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{flag} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise error(f"{flag} must be a JSON object{example}")
    return value


class RecipeError(UserError):
    """A training recipe with impossible values, or one this device cannot run (mixed precision)."""
