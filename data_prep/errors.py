"""The one exception type that means "the user asked for something we cannot do".

The command line prints it as a single `data_prep: ...` line (no traceback) and exits non-zero;
every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the config, the input or the output dir that the user can fix."""
