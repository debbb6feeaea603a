"""Tiny random Llama bases and MDU models for fast, offline tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from modeling_mdu import MDUSpeechForCausalLM

TEXT_VOCAB = 128
SPEECH_UNITS = 16
PLACEMENTS = ["interleaved", "bottom", "middle", "top", "sandwich"]
LAYER_TYPES = ["transformer", "e_branchformer"]
EBF_SMALL = dict(cgmlp_units=32, cgmlp_conv_kernel=3, merge_conv_kernel=5)


def tiny_base(num_layers=4, tie=True, seed=0, attn="sdpa") -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=TEXT_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).eval()


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text"]
WINDOW = 6  # sliding window of the tiny sliding-attention bases: shorter than the test sequences


def tiny_family_base(family: str, num_layers=4, tie=True, seed=0, attn="sdpa"):
    """A tiny random causal LM of `family` with the traits MDU must copy exactly: Mistral slides every layer,
    Qwen2 has q/k/v biases and slides its upper layers, Qwen3 has q/k norms, Gemma 3 text alternates sliding and
    full layers with two RoPEs, scales its embeddings, has norms around attention and MLP and caps its logits."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, MistralConfig, Qwen2Config, Qwen3Config

    if family == "llama":
        return tiny_base(num_layers=num_layers, tie=tie, seed=seed, attn=attn)
    common = dict(vocab_size=TEXT_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0)
    configs = {
        "mistral": lambda: MistralConfig(**common, sliding_window=WINDOW),
        "qwen2": lambda: Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW,
                                     max_window_layers=num_layers // 2),
        "qwen3": lambda: Qwen3Config(**common, head_dim=16),
        "gemma3_text": lambda: Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
                                                layer_types=["sliding_attention", "full_attention"] * (num_layers // 2),
                                                final_logit_softcapping=30.0),
    }
    torch.manual_seed(seed)
    config = configs[family]()
    config._attn_implementation = attn
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    with torch.no_grad():  # Gemma's norms start at zero (x * (1 + w)): move them so that a wrong norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tiny_mdu(base=None, layer_type="e_branchformer", placement="interleaved", **kwargs) -> MDUSpeechForCausalLM:
    base = base if base is not None else tiny_base()
    extra = dict(EBF_SMALL) if layer_type == "e_branchformer" else {}
    extra.update(kwargs)
    extra.setdefault("num_added_layers", 2)
    extra.setdefault("speech_vocab_size", SPEECH_UNITS)
    return MDUSpeechForCausalLM.from_text_model(base, placement=placement, layer_type=layer_type, **extra).eval()


@torch.no_grad()
def perturb_added_layers(model, std=0.05, seed=1) -> None:
    """Move the added layers away from the identity so that they change outputs (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for name in model.mdu_trainable_parameter_names():
        p = model.get_parameter(name)
        p.add_(torch.randn(p.shape, generator=g) * std)


def speech_prompt(batch=2, units=9, text_tokens=3, seed=0) -> torch.LongTensor:
    """[<|speech_start|>] units [<|speech_end|>] then a few text tokens, as an ASR prompt plus a transcript start."""
    g = torch.Generator().manual_seed(seed)
    start = torch.full((batch, 1), TEXT_VOCAB)
    end = torch.full((batch, 1), TEXT_VOCAB + 1)
    u = torch.randint(TEXT_VOCAB + 2, TEXT_VOCAB + 2 + SPEECH_UNITS, (batch, units), generator=g)
    t = torch.randint(3, TEXT_VOCAB, (batch, text_tokens), generator=g)
    return torch.cat([start, u, end, t], dim=1)


def text_ids(batch=2, length=10, seed=0) -> torch.LongTensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, TEXT_VOCAB, (batch, length), generator=g)


def tiny_text_tokenizer():
    """A character-level PreTrainedTokenizerFast over TEXT_VOCAB ids (pad 0, bos 1, eos 2), built offline.
    Lower-case letters, digits, space (as '▁') and some punctuation; anything else maps to <unk>."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = list("▁abcdefghijklmnopqrstuvwxyz0123456789'.,?!-")
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    assert len(vocab) <= TEXT_VOCAB
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
