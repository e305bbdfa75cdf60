"""User-facing errors: one clear line, no traceback (the CLI prints them and exits non-zero)."""


class TenfoldError(Exception):
    """A problem the user can fix (bad input, missing data, unknown model)."""


class TrainingStopped(TenfoldError):
    """Training stopped after the step it was asked to (``stop_after``), leaving a checkpoint to resume from.

    The CLI exits with status 75 (EX_TEMPFAIL: not finished, run again with ``--resume``)."""
