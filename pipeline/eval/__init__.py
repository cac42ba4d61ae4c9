"""Evaluating trained models: lm-evaluation-harness over our models, its results and where
they go, and the report of the architecture comparison."""
