"""The one exception root for "the user asked for something we cannot do".

A command prints it as a single `<prog>: <message>` line and exits 2 (common/cli.py); every other
exception is a bug and keeps its traceback. It is a ValueError, so a check that raised ValueError
before still does. Each package may subclass it (PipelineError, ConvertError) to say where.
"""


class UserError(ValueError):
    """A problem with the config, the input or the output that the user can fix."""


class ConfigError(UserError):
    """A key, value, override or config file that the schema refuses (common/config_loader.py)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named (a config, a preset, a run dir) is not there."""
