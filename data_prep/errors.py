"""data_prep's user error is the project's one UserError (common/errors.py), under its old name.

The command line prints it as a single `data_prep: ...` line (no traceback) and exits 2;
every other exception is a bug and keeps its traceback.
"""
from common.errors import UserError

__all__ = ["UserError"]
