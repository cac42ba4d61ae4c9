"""What a run records about itself: MLflow tracking, run tags, and plots."""
