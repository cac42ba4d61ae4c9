"""Downstream evaluation: lm-evaluation-harness over our models, its results and where they go."""
