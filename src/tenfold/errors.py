"""User-facing errors: one clear line, no traceback (the CLI prints them and exits non-zero)."""


class TenfoldError(Exception):
    """A problem the user can fix (bad input, missing data, unknown model)."""
