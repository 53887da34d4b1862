"""Errors that reach the user as one line."""


class UsageError(Exception):
    """Bad input: the CLI prints the message on one line and exits 2.

    The message says what was wrong and what to do instead.
    """
