"""Training code for mdu-speech (not part of the exported checkpoints): arguments, methods, data, collator, Trainer."""
