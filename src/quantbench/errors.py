"""Errors that reach the user as one line."""


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2.

    The message says what was wrong and what to do instead.
    """


def error_text(exc: BaseException) -> str:
    """`Name: first line of the message`, as every recorded failure shows it."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = "CUDA out of memory" if type(exc).__name__ == "OutOfMemoryError" else type(exc).__name__
    return f"{name}: {message}".rstrip(": ")
