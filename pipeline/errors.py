"""Errors whose message says all a user needs: the entry points print them without a traceback."""
from common.errors import UserError


class PipelineError(UserError, RuntimeError):
    """A user error found by the pipeline (a RuntimeError too, as it always was)."""
