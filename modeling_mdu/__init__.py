from .modeling_mdu import MDUSpeechForCausalLM, MDUSpeechModel, MDUSpeechPreTrainedModel

__all__ = ["MDUSpeechForCausalLM", "MDUSpeechModel", "MDUSpeechPreTrainedModel"]
