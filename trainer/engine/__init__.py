"""Training engine: loop, hooks, optimizer/schedule, checkpoints, distributed helpers."""
