"""Evaluation of mdu-speech models (not part of exported checkpoints): ASR WER/CER, text capability and its Δ,
layer-wise text importance (arXiv 2509.23755), comparison reports. Model cards live in `model_cards/`."""
