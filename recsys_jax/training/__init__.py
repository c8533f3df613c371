class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss, gradient norm or validation metric; the message
    names the step and the last good checkpoint."""
