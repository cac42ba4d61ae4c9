"""Training, evaluation, export and generation (built on `model`; see docs and the README)."""
