"""The one error type users see: a message that says what is wrong and how to fix it."""


class UserError(Exception):
    """Bad input or environment (not root, missing binary, bad topology...).

    The CLI prints ``pfslab: <message>`` on one line to stderr and exits with code 2.
    """
