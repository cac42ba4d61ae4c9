"""Errors whose message says all a user needs: the entry points print them without a traceback."""


class PipelineError(RuntimeError):
    pass
