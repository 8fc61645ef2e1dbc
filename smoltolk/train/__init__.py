"""Training: the two-stage recipe (``smoltolk train``), distributed helpers and checkpoints."""
