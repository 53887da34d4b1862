"""Errors that reach the user as one line."""

from __future__ import annotations

import contextvars
import re


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2.

    The message says what was wrong and what to do instead. Messages name command-line
    options (`--batch-size`); called from Python, `api_message` names the parameter instead.
    Control characters typed by the user (a newline in a spec) are shown escaped, so the
    message stays one line.
    """

    def __init__(self, message: str = ""):
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
        super().__init__(message)


# Set by the command line: its users typed options, the API's users passed parameters.
FROM_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar("quantbench_from_cli", default=False)

_FLAG = re.compile(r"(?<![\w-])--(no-)?([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")


def api_message(message: str, parameters) -> str:
    """The message with each `--option` that is an API parameter written as that parameter
    (`--no-quality` as `quality=False`); options the API does not take are left as they are."""
    if FROM_CLI.get():
        return message

    def name(match: re.Match) -> str:
        param = match.group(2).replace("-", "_")
        aliases = {"out": "out", "run": "run_id"}
        param = aliases.get(param, param)
        if param not in parameters:
            return match.group(0)
        return f"{param}=False" if match.group(1) else param

    return _FLAG.sub(name, message)


def error_text(exc: BaseException) -> str:
    """`Name: first line of the message`, as every recorded failure shows it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = "CUDA out of memory" if type(exc).__name__ == "OutOfMemoryError" else type(exc).__name__
    return f"{name}: {message}".rstrip(": ")
