from .modeling_mdu import MDUSpeechForCausalLM, MDUSpeechModel, MDUSpeechPreTrainedModel
from .processing_mdu import MDUSpeechProcessor
from .speech_tokenizer import MDUSpeechTokenizer

__all__ = ["MDUSpeechForCausalLM", "MDUSpeechModel", "MDUSpeechPreTrainedModel", "MDUSpeechProcessor", "MDUSpeechTokenizer"]
