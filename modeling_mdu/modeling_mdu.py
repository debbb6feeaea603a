"""MDUSpeechModel / MDUSpeechForCausalLM: a frozen text LLM with new decoder layers inserted between its layers.

Build one from a text LLM (Llama, Mistral, Qwen2, Qwen3 or Gemma 3 text; base_families.py) with
`MDUSpeechForCausalLM.from_text_model(...)`; get the untouched text LLM back with `model.to_text_model()`. Right after
`from_text_model` the model computes exactly what the base computed on text: its layers are the base family's own
classes, and the forward below is the family's (masks per attention type, RoPE per attention type for Gemma 3,
scaled embeddings, final-logit soft-capping) with the added layers in between.
"""

import copy
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import (
    create_causal_mask,
    create_sliding_window_causal_mask,
    find_packed_sequence_indices,
)
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from . import pipeline_mdu  # noqa: F401  (pipeline(task, model=<MDU model object>) builds the MDU pipeline)
from .base_families import base_family, check_supported_base
from .causal_conv import PackedSequences
from .e_branchformer_layer import ConvolutionalSpatialGatingUnit, EBranchformerLayer
from .hf_compat import cache_kwarg, output_cache, take_cache
from .remote_code import AUTO_MAP, CUSTOM_PIPELINES, export_remote_code
from .speech_vocab import MDUEmbedding, MDULMHead, init_new_rows, init_rows_from_text
from .transformer_layer import zero_residual_writers
from .upscaling import base_to_upscaled_keys, upscaled_to_base_keys

try:  # flat trust_remote_code checkpoint
    from .configuration_mdu import MDUSpeechConfig
except ImportError:  # source tree
    from configuration_mdu import MDUSpeechConfig

# Keyword arguments the HF Trainer / generate may pass that are not meant for the attention kernels.
_NOT_FOR_LAYERS = ("num_items_in_batch", "return_dict", "output_attentions", "output_hidden_states", "cache_position")


def cache_holds_tokens(cache) -> bool:
    """Whether `cache` already holds earlier tokens (the forward is a decoding step), read without a device sync
    where the cache allows it: E-Branchformer cache layers flag their conv states in Python, and a dynamic cache's
    length is a Python int. A static cache without conv layers keeps its length on the device (one sync)."""
    for layer in getattr(cache, "layers", []):
        if any(getattr(layer, "has_previous_state", {}).values()):
            return True
    return bool(cache.get_seq_length() > 0)


def layer_segments(layer_is_added: list[bool]) -> list[tuple[int, int]]:
    """The stack as [start, end) runs: each added layer alone, each run of consecutive base layers together."""
    segments = []
    for pos, added in enumerate(layer_is_added):
        if added or not segments or layer_is_added[segments[-1][0]]:
            segments.append((pos, pos + 1))
        else:
            segments[-1] = (segments[-1][0], pos + 1)
    return segments


# ---------------------------------------------------------------- FP8 frozen linears (config.fp8_frozen_linears)
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn


@functools.cache
def cpu_has_rowwise_fp8_matmul() -> bool:
    """Whether this torch's CPU `_scaled_mm` takes one scale per row (torch 2.14 does; 2.11 takes one per tensor)."""
    a, scale = torch.ones(16, 16).to(FP8), torch.ones(16, 1)
    try:
        torch._scaled_mm(a, a.t(), scale_a=scale, scale_b=scale.t(), out_dtype=torch.bfloat16)
    except RuntimeError:
        return False
    return True


def check_fp8_device(device: torch.device, capability: tuple[int, int] | None = None) -> None:
    """FP8 matmuls with row-wise scales (`torch._scaled_mm`) run on GPUs of compute capability >= 8.9 (Ada, Hopper
    and newer) and on CPUs where torch has them there (2.14 does, 2.11 does not); raise a clear error elsewhere
    rather than a kernel failure deep inside a step."""
    if device.type == "cpu" and not cpu_has_rowwise_fp8_matmul():
        raise RuntimeError(
            f"fp8_frozen_linears on the CPU needs row-wise scaled FP8 matmuls, which torch {torch.__version__} has "
            f"only on GPUs (torch 2.14 has them on the CPU too). Set config.fp8_frozen_linears = False, or train on a "
            f"GPU of compute capability >= 8.9."
        )
    if device.type != "cuda":
        return
    capability = capability or torch.cuda.get_device_capability(device)
    if tuple(capability) < (8, 9):
        raise RuntimeError(
            f"fp8_frozen_linears needs FP8 matmuls (GPU compute capability >= 8.9: Ada, Hopper H100/H200 or newer); "
            f"this GPU ({device}) has {capability[0]}.{capability[1]}. Set config.fp8_frozen_linears = False."
        )


def quantize_rows(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn values and float32 dequantisation scales, one scale per slice along `dim` (amax / 448)."""
    scale = x.abs().amax(dim=dim, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class _FP8FrozenMatmul(torch.autograd.Function):
    """y = x W^T with W frozen: forward and input gradient as FP8 matmuls with row-wise scales (tokens x output
    channels forward, tokens x input channels backward); nothing of x is saved (W needs no gradient)."""

    @staticmethod
    def forward(ctx, x, linear):
        w8, w_scale, w8_t, w_t_scale = linear.fp8_weights()
        x8, x_scale = quantize_rows(x.reshape(-1, x.shape[-1]))
        out = torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=w_scale.t(), out_dtype=torch.bfloat16)
        ctx.fp8_input_weight = (w8_t, w_t_scale)
        ctx.input_shape, ctx.input_dtype = x.shape, x.dtype
        return out.to(x.dtype).view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_output):
        w8_t, w_t_scale = ctx.fp8_input_weight
        g8, g_scale = quantize_rows(grad_output.reshape(-1, grad_output.shape[-1]))
        grad_input = torch._scaled_mm(g8, w8_t, scale_a=g_scale, scale_b=w_t_scale, out_dtype=torch.bfloat16)
        return grad_input.to(ctx.input_dtype).view(ctx.input_shape), None


class FP8FrozenLinear(nn.Linear):
    """An `nn.Linear` of a frozen base layer that computes in FP8 (same `weight` / `bias` parameters, so state dicts,
    `to_text_model()` and checkpoints are unchanged). The FP8 copies of the weight (one per matmul direction) are made
    on first use and again whenever the weight changes (e.g. weights loaded after construction). A weight that
    requires grad (full fine-tuning) takes the plain path: only frozen weights may skip their gradient."""

    @classmethod
    def wrap(cls, linear: nn.Linear) -> "FP8FrozenLinear":
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight, new.bias = linear.weight, linear.bias
        new._fp8 = None
        return new

    def fp8_weights(self):
        w = self.weight
        key = (w.data_ptr(), w._version, w.device, w.dtype)
        if self._fp8 is None or self._fp8[0] != key:
            with torch.no_grad():
                w8, w_scale = quantize_rows(w, dim=1)  # per output channel: [N, K], scales [N, 1]
                w8_t, w_t_scale = quantize_rows(w, dim=0)  # per input channel: [N, K], scales [1, K]
                w8_t = w8_t.t().contiguous().t()  # column-major, as _scaled_mm's second operand
            self._fp8 = (key, (w8, w_scale, w8_t, w_t_scale))
        return self._fp8[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.requires_grad:
            return F.linear(x, self.weight, self.bias)
        check_fp8_device(x.device)
        out = _FP8FrozenMatmul.apply(x, self)
        return out if self.bias is None else out + self.bias


def use_fp8_frozen_linears(layers: nn.ModuleList, layer_is_added: list[bool]) -> int:
    """Swaps every `nn.Linear` of the base (not added) layers for an `FP8FrozenLinear` on the same parameters; FP8
    matmuls need both dims divisible by 16 (others stay as they are). Returns how many were swapped."""
    swapped = 0
    for layer, added in zip(layers, layer_is_added):
        if added:
            continue
        for parent in layer.modules():
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                    setattr(parent, name, FP8FrozenLinear.wrap(child))
                    swapped += 1
    return swapped


@dataclass
class MDUSpeechModelOutput(BaseModelOutputWithPast):
    r"""text_only_rows (`torch.BoolTensor` [batch], with `text_bypass`): the sequences that skipped the added layers;
    None when none did. In a packed batch [batch, seq]: the positions whose packed sequence skipped them."""

    text_only_rows: torch.BoolTensor | None = None


class MDUSpeechPreTrainedModel(PreTrainedModel):
    config_class = MDUSpeechConfig
    config: MDUSpeechConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "EBranchformerLayer"]  # per model: the base family's layer class
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    input_modalities = ("audio", "text")  # audio enters as speech units (MDUSpeechProcessor), text as text ids

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (MDUEmbedding, MDULMHead)):
            init.normal_(module.weight, mean=0.0, std=std)
            init.normal_(module.speech_weight, mean=0.0, std=std)
        elif isinstance(module, ConvolutionalSpatialGatingUnit):  # ESPnet: near-zero conv, bias 1 (gate open)
            init.normal_(module.conv.conv.weight, mean=0.0, std=1e-6)
            init.ones_(module.conv.conv.bias)
        elif isinstance(module, EBranchformerLayer):  # W_merge = [I; 0]: the merge starts as the global branch
            d = module.hidden_size
            init.copy_(module.merge_proj.weight, torch.cat([torch.eye(d), torch.zeros(d, d)], dim=1))
            init.zeros_(module.merge_proj.bias)
            init.zeros_(module.merge_conv.conv.bias)
        elif "RotaryEmbedding" in type(module).__name__:
            # RoPE buffers are not in checkpoints: compute them as the family's class does (Gemma 3 keeps one set per
            # attention type, which the generic init does not know)
            with torch.device("cpu"):
                fresh = type(module)(config=module.config)
            for name, buffer in fresh.named_buffers():
                init.copy_(module.get_buffer(name), buffer)
        else:
            super()._init_weights(module)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves safetensors weights plus the flat `configuration_mdu.py` / `modeling_mdu.py` (and friends) and an
        `auto_map`, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` works without this package."""
        if kwargs.get("safe_serialization") is False:
            raise ValueError("MDU checkpoints are saved as safetensors only (safe_serialization=False is not supported)")
        self.config.auto_map = dict(AUTO_MAP)
        if isinstance(self, GenerationMixin):
            suppress_speech_in_generation(self)
        self.config.custom_pipelines = {**(getattr(self.config, "custom_pipelines", None) or {}), **CUSTOM_PIPELINES}
        auto_class, type(self)._auto_class = type(self)._auto_class, None  # we write the code files ourselves
        try:
            out = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            type(self)._auto_class = auto_class
        if kwargs.get("is_main_process", True):
            export_remote_code(save_directory)
        return out


def suppress_speech_in_generation(model) -> None:
    """`generate` writes text: the generation config suppresses every speech id (<|speech_start|>, <|speech_end|>
    and the units), which a transcript or a text answer never holds and `batch_decode` would silently drop. Left as
    it is when `suppress_tokens` is already set (pass `suppress_tokens=[]` to `generate` to allow speech ids)."""
    config, generation_config = model.config, model.generation_config
    if generation_config is not None and generation_config.suppress_tokens is None:
        generation_config.suppress_tokens = list(range(config.text_vocab_size, config.vocab_size))


class MDUSpeechModel(MDUSpeechPreTrainedModel):
    def __init__(self, config: MDUSpeechConfig):
        super().__init__(config)
        family = base_family(config.base_model_type)
        self.embed_tokens = MDUEmbedding(config.text_vocab_size, config.vocab_size - config.text_vocab_size, config.hidden_size)
        ebf = config.layer_type == "e_branchformer"
        self.layers = nn.ModuleList(
            [
                EBranchformerLayer(config, layer_idx) if added and ebf else family.decoder_layer(config, layer_idx)
                for layer_idx, added in enumerate(config.layer_is_added)
            ]
        )
        self.norm = family.norm(config.hidden_size, eps=config.rms_norm_eps)
        if family.rotary_per_attention_type:  # one RoPE per attention type: read from the attention types alone
            rotary_config = copy.copy(config)
            rotary_config.layer_types = config.attention_types
            self.rotary_emb = family.rotary(config=rotary_config)
        else:
            self.rotary_emb = family.rotary(config=config)
        self.embed_scale = config.hidden_size**0.5 if family.scaled_embeddings else None
        self.rotary_per_attention_type = family.rotary_per_attention_type
        self._no_split_modules = [family.decoder_layer.__name__, "EBranchformerLayer"]
        self.gradient_checkpointing = False
        # the stack's layout, read once (config properties rebuild these lists on every access)
        self.layer_is_added = list(config.layer_is_added)
        self.attention_types = list(config.attention_types)
        self.segments = layer_segments(self.layer_is_added)
        if config.fp8_frozen_linears:
            use_fp8_frozen_linears(self.layers, self.layer_is_added)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def _check_input_ids(self, input_ids: torch.LongTensor) -> None:
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"input_ids must be in [0, {self.config.vocab_size}) (text {self.config.text_vocab_size} + speech "
                f"specials 2 + speech units {self.config.speech_vocab_size}); got min {int(input_ids.min())}, "
                f"max {int(input_ids.max())}"
            )

    def _added_layers_gate(self, speech_mask, cache, decoding, packed):
        """With `text_bypass`: which positions run the added layers (bool, [batch, 1, 1], or [batch, seq, 1] for a
        packed batch: per packed sequence), and whether none / all do (Python bools); without it (None, False, True).
        In cached generation the decision is made on the prompt and kept in the cache for the later steps, so that
        decoding steps read no flag back from the device."""
        if not self.config.text_bypass:
            return None, False, True
        if decoding and getattr(cache, "mdu_gate", None) is not None:
            return cache.mdu_gate
        if packed is None:
            gate = speech_mask.any(dim=1)[:, None, None]
        else:  # a packed sequence runs the added layers when it holds speech, whatever the rest of its row holds
            seq_has_speech = torch.zeros_like(packed.ids).scatter_reduce(1, packed.ids, speech_mask.long(), "amax")
            gate = seq_has_speech.gather(1, packed.ids).bool()[..., None]
        decision = (gate, not bool(gate.any()), bool(gate.all()))  # once per prompt
        if cache is not None:
            cache.mdu_gate = decision
        return decision

    def _packed_sequences(self, position_ids, attention_mask, cache, batch_size) -> PackedSequences | None:
        """Several sequences in one row: `position_ids` restart inside a row and there is no attention mask nor cache,
        which is when transformers' masks keep packed sequences apart (padding-free batches, e.g. from
        `DataCollatorWithFlattening`). The E-Branchformer convolutions and `text_bypass` then do the same."""
        if position_ids is None or attention_mask is not None or cache is not None:
            return None
        ids = find_packed_sequence_indices(position_ids.expand(batch_size, -1))
        return None if ids is None else PackedSequences(ids, int(ids[:, -1].max()) + 1)

    def _run_base_layers(self, hidden_states, start, end, layer_inputs, collect):
        states = []
        for pos in range(start, end):
            if collect:
                states.append(hidden_states)
            hidden_states = self.layers[pos](hidden_states, **layer_inputs[self.attention_types[pos]])
        return hidden_states, states

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        speech_mask: torch.BoolTensor | None = None,
        output_hidden_states: bool | None = None,
        cache: Cache | None = None,
        decode_text_only: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""speech_mask (`torch.BoolTensor` [batch, seq]): which positions hold speech tokens. Derived from
        `input_ids` (ids >= text_vocab_size); needed with `inputs_embeds` when the added layers use it.
        decode_text_only (`bool`): a one-token step after a prompt in the cache is a text token (`generate` sets it
        when it suppresses every speech id), so the E-Branchformer local branches are skipped without reading the
        token back from the device.
        The cache may come as `past_key_values` or as `cache` (transformers >= 5.24); see hf_compat.py.

        Packed batches (position ids restarting inside a row, no attention mask, no cache) keep their sequences
        apart: attention (transformers' masks), the E-Branchformer convolutions and `text_bypass` alike."""
        cache = take_cache(past_key_values, cache)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        for key in _NOT_FOR_LAYERS:
            kwargs.pop(key, None)
        # a one-token step with a cache is a decoding step: its id came from the model's own logits, and checking it
        # would read it back from the device on every step
        if input_ids is not None and (cache is None or input_ids.shape[1] > 1):
            self._check_input_ids(input_ids)
        if input_ids is not None:
            if speech_mask is None:
                speech_mask = input_ids >= self.config.text_vocab_size
            inputs_embeds = self.embed_tokens(input_ids)
            if self.embed_scale is not None:  # Gemma: the embedding output times sqrt(hidden_size), in its dtype
                inputs_embeds = inputs_embeds * torch.tensor(self.embed_scale, dtype=inputs_embeds.dtype)
        if speech_mask is None and (self.config.text_bypass or self.config.layer_type == "e_branchformer"):
            if self.config.num_added_layers:
                raise ValueError("Pass speech_mask (bool [batch, seq]) together with inputs_embeds: the added layers need it")
        padding_mask = attention_mask is not None and not isinstance(attention_mask, dict) and attention_mask.dim() == 2
        if speech_mask is not None and padding_mask:
            # padded positions are never speech, whatever id they hold: the convolutions must not see them
            speech_mask = speech_mask & attention_mask[:, -speech_mask.shape[1] :].bool()
        recompute = self.config.recompute_frozen_segments and self.training and torch.is_grad_enabled()
        if recompute and cache is not None:
            raise ValueError("recompute_frozen_segments recomputes layers in backward and cannot fill a cache: "
                             "pass use_cache=False (the Trainer does)")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        packed = self._packed_sequences(position_ids, attention_mask, cache, inputs_embeds.shape[0])
        if packed is not None or recompute:
            use_cache = False  # transformers' masks keep packed sequences apart only without a cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)

        if isinstance(attention_mask, dict):  # masks already made per attention type (generate with a static cache)
            masks = {t: attention_mask[t] for t in set(self.attention_types)}
        else:
            mask_kwargs = dict(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               position_ids=position_ids, **cache_kwarg(cache))
            masks = {}
            if "full_attention" in self.attention_types:
                masks["full_attention"] = create_causal_mask(**mask_kwargs)
            if "sliding_attention" in self.attention_types:
                masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        is_ebf = self.config.layer_type == "e_branchformer"
        decoding = cache is not None and (is_ebf or self.config.text_bypass) and cache_holds_tokens(cache)
        gate, run_none, run_all = self._added_layers_gate(speech_mask, cache, decoding, packed)
        has_speech = None
        if is_ebf and not run_none:  # decided once per forward for every E-Branchformer layer
            text_step = decode_text_only and decoding and inputs_embeds.shape[1] == 1
            has_speech = False if text_step else bool(speech_mask.any())

        hidden_states = inputs_embeds
        if self.rotary_per_attention_type:
            rope = {t: self.rotary_emb(hidden_states, position_ids, t) for t in masks}
        else:
            rope = dict.fromkeys(masks, self.rotary_emb(hidden_states, position_ids))
        all_hidden_states = [] if output_hidden_states else None
        layer_kwargs = dict(position_ids=position_ids, use_cache=use_cache, **cache_kwarg(cache), **kwargs)
        layer_inputs = {t: dict(attention_mask=masks[t], position_embeddings=rope[t], **layer_kwargs) for t in masks}
        for start, end in self.segments:
            if not self.layer_is_added[start]:  # a run of base layers
                args = (hidden_states, start, end, layer_inputs, all_hidden_states is not None)
                if recompute:  # frozen: keep the segment's input only, recompute its activations in backward
                    hidden_states, states = checkpoint(self._run_base_layers, *args, use_reentrant=False)
                else:
                    hidden_states, states = self._run_base_layers(*args)
                if all_hidden_states is not None:
                    all_hidden_states.extend(states)
                continue
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            if run_none:
                continue
            layer, inputs = self.layers[start], layer_inputs[self.attention_types[start]]
            if is_ebf:
                out = layer(hidden_states, speech_mask=speech_mask, has_speech=has_speech, packed=packed, **inputs)
            else:
                out = layer(hidden_states, **inputs)
            hidden_states = out if run_all else torch.where(gate, out, hidden_states)
        hidden_states = self.norm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        text_only_rows = None
        if not run_all:  # [batch], or [batch, seq] for a packed batch
            text_only_rows = ~gate[:, 0, 0] if packed is None else ~gate[..., 0]
        return MDUSpeechModelOutput(
            last_hidden_state=hidden_states,
            **cache_kwarg(cache if use_cache else None),
            hidden_states=tuple(all_hidden_states) if all_hidden_states is not None else None,
            text_only_rows=text_only_rows,
        )


class MDUSpeechForCausalLM(MDUSpeechPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {
        "lm_head.weight": "model.embed_tokens.weight",
        "lm_head.speech_weight": "model.embed_tokens.speech_weight",
    }

    def __init__(self, config: MDUSpeechConfig):
        super().__init__(config)
        self.model = MDUSpeechModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = MDULMHead(config.hidden_size, config.text_vocab_size, config.vocab_size - config.text_vocab_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def resize_token_embeddings(self, *args, **kwargs):
        raise NotImplementedError(
            "MDU models keep text and speech rows apart; change speech_vocab_size with from_text_model instead"
        )

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        speech_mask: torch.BoolTensor | None = None,
        cache: Cache | None = None,
        decode_text_only: bool = False,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""labels: as for any HF causal LM (aligned with input_ids, -100 = ignored; shifted inside).
        With `config.logits_at_labels_only` and labels given, logits are computed only at the positions that
        predict a label; `logits` is then that [num_labels, vocab] tensor.
        decode_text_only: see `MDUSpeechModel.forward` (`generate` sets it when speech ids are suppressed)."""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        return_dict = kwargs.pop("return_dict", None)
        cache = take_cache(past_key_values, cache)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            speech_mask=speech_mask,
            decode_text_only=decode_text_only,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        text_only = outputs.text_only_rows
        loss = None
        if labels is not None and self.config.logits_at_labels_only:
            loss, logits = self._loss_at_labels(hidden_states, labels, num_items_in_batch, text_only)
        else:
            if isinstance(logits_to_keep, int):
                keep = slice(-logits_to_keep, None) if logits_to_keep > 0 else slice(None)
            else:
                keep = logits_to_keep
            logits = self._soft_cap(self.lm_head(hidden_states[:, keep, :]))
            if text_only is not None:  # per row, or per position in a packed batch
                flags = text_only[:, None] if text_only.dim() == 1 else text_only[:, keep]
                logits = self._text_only_rows_speak_text(logits, flags)
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
                )
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **cache_kwarg(output_cache(outputs))
        )
        return out.to_tuple() if return_dict is False else out

    # ---------------------------------------------------------------- generation
    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`, plus `decode_text_only` for the forward: when this call suppresses every speech
        id (the saved generation config does), each decoding step's new token is text, and the E-Branchformer layers
        skip their local branch without reading the token back from the device (no host sync per layer or step)."""
        if "decode_text_only" not in kwargs:
            generation_config = kwargs.get("generation_config", args[1] if len(args) > 1 else None)
            generation_config = generation_config if generation_config is not None else self.generation_config
            suppressed = kwargs.get("suppress_tokens", getattr(generation_config, "suppress_tokens", None))
            suppressed = set() if suppressed is None else set(map(int, suppressed))
            kwargs["decode_text_only"] = set(range(self.config.text_vocab_size, self.config.vocab_size)) <= suppressed
        return super().generate(*args, **kwargs)

    def create_masks_for_generate(self, attention_mask=None, **kwargs):
        """With a static cache, `generate` would build the attention masks ahead from `config.layer_types` (which for
        E-Branchformer layers name cache types); the forward builds them itself from the 2D padding mask, which also
        keeps padded positions out of the speech mask."""
        return attention_mask

    def _soft_cap(self, logits):
        """Gemma's final-logit soft-capping (cap * tanh(logits / cap)) when the base has it; else the logits."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _text_only_rows_speak_text(self, logits, text_only):
        """With `text_bypass`, a text-only sequence is the base model, whose vocabulary has no speech tokens: their
        logits are -inf there (so such a sequence never turns into a speech one while it is generated, and cached
        and uncached decoding agree). `text_only`: flags over the logits' leading dims (or broadcastable to them)."""
        is_speech_id = torch.arange(logits.shape[-1], device=logits.device) >= self.config.text_vocab_size
        return logits.masked_fill(text_only[..., None] & is_speech_id, float("-inf"))

    def _loss_at_labels(self, hidden_states, labels, num_items_in_batch=None, text_only=None):
        """Next-token loss from logits at labelled positions only: an ASR batch is mostly speech prompt, and the
        LM head over a 49k vocabulary is the costliest matmul, so this skips most of it."""
        shift_labels = labels[:, 1:].to(hidden_states.device)
        keep = shift_labels != -100
        logits = self._soft_cap(self.lm_head(hidden_states[:, :-1][keep])).float()
        if text_only is not None:  # per row, or per position in a packed batch
            flags = text_only[:, None].expand_as(keep) if text_only.dim() == 1 else text_only[:, :-1]
            logits = self._text_only_rows_speak_text(logits, flags[keep])
        targets = shift_labels[keep]
        if num_items_in_batch is None:
            loss = F.cross_entropy(logits, targets) if targets.numel() else logits.sum() * 0.0
        else:
            loss = F.cross_entropy(logits, targets, reduction="sum") / num_items_in_batch
        return loss, logits

    # ---------------------------------------------------------------- MDU
    @classmethod
    def from_text_model(
        cls,
        text_model,
        placement: str = "interleaved",
        layer_type: str = "transformer",
        speech_vocab_size: int = 1024,
        added_ratio: float = 0.25,
        num_added_layers: int | None = None,
        added_after: list[int] | None = None,
        text_bypass: bool = False,
        freeze: bool = True,
        seed: int = 0,
        **kwargs,
    ) -> "MDUSpeechForCausalLM":
        """Up-scale a text LLM (a `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
        `Gemma3ForCausalLM`, or a path / Hub id of one) into an MDU speech LM.

        Each new layer copies the original layer before it, with `o_proj` and `down_proj` zeroed (identity at init);
        the vocabulary gains <|speech_start|>, <|speech_end|> and `speech_vocab_size` units, initialised near the mean
        text embedding. With `freeze=True` only the added layers and the new vocabulary rows require grad.
        Extra kwargs go to `MDUSpeechConfig` when they are config fields (e.g. `cgmlp_units`), otherwise to
        `AutoModelForCausalLM.from_pretrained` when `text_model` is a path.
        """
        config_fields = set(MDUSpeechConfig.__dataclass_fields__)
        config_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in config_fields}
        if isinstance(text_model, (str, bytes)) or hasattr(text_model, "__fspath__"):
            from transformers import AutoConfig, AutoModelForCausalLM

            hub = {k: v for k, v in kwargs.items() if k in ("revision", "token", "gguf_file", "trust_remote_code")}
            check_supported_base(AutoConfig.from_pretrained(text_model, **hub))  # before downloading weights
            text_model = AutoModelForCausalLM.from_pretrained(text_model, **kwargs)
        elif kwargs:
            raise TypeError(f"from_text_model got unexpected keyword arguments {sorted(kwargs)}")
        check_supported_base(text_model.config)

        config = MDUSpeechConfig.from_base_config(
            text_model.config,
            placement=placement,
            layer_type=layer_type,
            speech_vocab_size=speech_vocab_size,
            added_ratio=added_ratio,
            num_added_layers=num_added_layers,
            added_after=added_after,
            text_bypass=text_bypass,
            **config_kwargs,
        )
        config._attn_implementation = text_model.config._attn_implementation
        param = next(text_model.parameters())
        with init.no_init_weights():  # every parameter is copied or initialised explicitly below
            model = cls(config)
        model.tie_weights()
        model.to(dtype=param.dtype)

        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        base_state = text_model.state_dict()
        own_state = model.state_dict()
        with torch.no_grad():
            mapping = base_to_upscaled_keys(config, base_state.keys(), own_state.keys())
            for own_key, base_key in mapping.items():
                if own_key not in own_state:
                    raise KeyError(f"base tensor {base_key} has no place in the up-scaled model ({own_key})")
                own_state[own_key].copy_(base_state[base_key])
            for pos in config.added_layer_positions:
                layer = model.model.layers[pos]
                layer.make_identity() if isinstance(layer, EBranchformerLayer) else zero_residual_writers(layer)
            embed = model.model.embed_tokens
            init_new_rows(embed.speech_weight, embed.weight, generator)
            if not config.tie_word_embeddings:
                init_new_rows(model.lm_head.speech_weight, model.lm_head.weight, generator)
        model.to(param.device)
        if text_model.generation_config is not None:
            model.generation_config = copy.deepcopy(text_model.generation_config)
        suppress_speech_in_generation(model)
        if freeze:
            model.freeze_base()
        return model

    @torch.no_grad()
    def init_speech_units_from_text(self, text_tokenizer, unit_names: list[str]) -> int:
        """Starts each speech unit's embedding (and untied output row) at the mean text embedding of its written name,
        e.g. a phonetic tokenizer's phoneme symbols, so the frozen LLM first reads the units as those characters
        instead of one shared average token. Returns how many units got a name's embedding (names the text tokenizer
        turns into no tokens keep their initialisation)."""
        if len(unit_names) != self.config.speech_vocab_size:
            raise ValueError(f"{len(unit_names)} unit names for speech_vocab_size={self.config.speech_vocab_size}")
        ids = [text_tokenizer(name, add_special_tokens=False)["input_ids"] for name in unit_names]
        first = self.config.speech_token_start - self.config.text_vocab_size  # unit 0's row among the new rows
        heads = [self.model.embed_tokens] + ([] if self.config.tie_word_embeddings else [self.lm_head])
        counts = [init_rows_from_text(m.speech_weight[first : first + len(ids)], m.weight, ids) for m in heads]
        return counts[0]

    def to_text_model(self) -> PreTrainedModel:
        """The original text LLM, of its own class (`LlamaForCausalLM`, `Qwen3ForCausalLM`, ...), with the base weights
        (copies), the added layers and the new vocabulary rows dropped. Under MDU training the base is frozen, so this
        is bitwise the model you started from."""
        config = self.config.to_text_config()
        config._attn_implementation = self.config._attn_implementation
        with init.no_init_weights():
            base = base_family(self.config.base_model_type).causal_lm_class()(config)
        base.to(dtype=self.model.embed_tokens.weight.dtype)
        own_state = self.state_dict()
        with torch.no_grad():
            mapping = upscaled_to_base_keys(self.config, base.state_dict().keys())
            missing = set(base.state_dict()) - set(mapping)
            if missing:
                raise KeyError(f"no up-scaled tensor for base keys {sorted(missing)[:5]}")
            base.load_state_dict({b: own_state[m].detach().clone() for b, m in mapping.items()}, strict=True)
        base.tie_weights()
        base.generation_config = copy.deepcopy(self.generation_config)
        suppress = base.generation_config.suppress_tokens
        if suppress is not None:  # the base vocabulary has no speech ids to suppress
            suppress = [t for t in suppress if t < self.config.text_vocab_size]
            base.generation_config.suppress_tokens = suppress or None
        return base.to(self.model.embed_tokens.weight.device)

    def mdu_trainable_parameter_names(self) -> list[str]:
        """Names of the parameters MDU trains: every parameter of the added layers plus the new vocabulary rows."""
        names = []
        for name, _ in self.named_parameters():
            if name.endswith("speech_weight"):
                names.append(name)
            elif name.startswith("model.layers."):
                pos = int(name.split(".")[2])
                if self.config.layer_is_added[pos]:
                    names.append(name)
        return names

    def freeze_base(self) -> None:
        """Freeze everything except the added layers and the new vocabulary rows."""
        trainable = set(self.mdu_trainable_parameter_names())
        for name, p in self.named_parameters():
            p.requires_grad_(name in trainable)

    def parameter_report(self) -> dict:
        """Trainable / total parameter counts (tied parameters counted once)."""
        total = trainable = 0
        for p in self.parameters():  # named_parameters de-duplicates tied weights
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        added = sum(p.numel() for pos in self.config.added_layer_positions for p in self.model.layers[pos].parameters())
        return {
            "trainable": trainable,
            "total": total,
            "trainable_fraction": trainable / max(total, 1),
            "added_layers": added,
            "num_added_layers": self.config.num_added_layers,
            "num_base_layers": self.config.num_base_layers,
        }

    def print_trainable_parameters(self) -> None:
        r = self.parameter_report()
        print(f"trainable params: {r['trainable']:,} || all params: {r['total']:,} || trainable%: {100 * r['trainable_fraction']:.4f}")


__all__ = ["MDUSpeechPreTrainedModel", "MDUSpeechModel", "MDUSpeechForCausalLM"]
