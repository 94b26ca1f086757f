"""User-facing errors: raised anywhere, printed by the CLI as one line with exit code 2."""


class UserError(Exception):
    """Bad input from the user (unknown preset, malformed table, missing data...).

    The CLI prints ``scalinglab: error: <message>`` on stderr and exits with code 2;
    no traceback, no partial output files.
    """
