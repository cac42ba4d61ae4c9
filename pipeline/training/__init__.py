"""The pieces of the training loop: the DeepSpeed engine and optimizer, freezing phases,
checkpoints and resume, the guards run at start-up, preemption, progress and metrics."""
