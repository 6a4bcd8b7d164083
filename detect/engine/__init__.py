"""Training engine: the loop, checkpoints, schedules, logs and evaluation of any detector."""
