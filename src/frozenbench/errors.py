"""Errors that reach the user as one clear line instead of a traceback."""


class UserError(Exception):
    """Bad input or environment: the message names the file and the problem."""
