"""Using a trained model: loading a run's checkpoint or an export, and sampling from it."""
