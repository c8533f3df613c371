"""What a run leaves on disk and how it is read back, below both training and inference:
the fitted assets (item index + tokenizer), Orbax checkpoints, and loading a checkpoint as a
model ready to decode."""
