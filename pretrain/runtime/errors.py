"""User-facing errors: the CLI prints these as one line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a field, a config key); the message names it and what was expected."""


class ConfigError(UserError):
    """A config key or value that is unknown or of the wrong type."""


class DataError(UserError):
    """A dataset path or file that is missing or malformed as a whole (single corrupt samples are skipped)."""


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient; raised before the optimizer update."""


class StopRequested(RuntimeError):
    """A SIGTERM stopped training before its last step; the loop saved a checkpoint first (exit status 143)."""
