"""MDUSpeechModel / MDUSpeechForCausalLM: a frozen text LLM with new decoder layers inserted between its layers.

Build one from a text LLM (Llama, Mistral, Qwen2, Qwen3 or Gemma 3 text; base_families.py) with
`MDUSpeechForCausalLM.from_text_model(...)`; get the untouched text LLM back with `model.to_text_model()`. Right after
`from_text_model` the model computes exactly what the base computed on text: its layers are the base family's own
classes, and the forward below is the family's (masks per attention type, RoPE per attention type for Gemma 3,
scaled embeddings, final-logit soft-capping) with the added layers in between.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from . import pipeline_mdu  # noqa: F401  (pipeline(task, model=<MDU model object>) builds the MDU pipeline)
from .base_families import base_family, check_supported_base
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


@dataclass
class MDUSpeechModelOutput(BaseModelOutputWithPast):
    r"""text_only_rows (`torch.BoolTensor` [batch], with `text_bypass`): the sequences that skipped the added layers."""

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

    def _added_layers_gate(self, speech_mask, cache):
        """With `text_bypass`, which sequences run the added layers ([batch] bool), else None (all do).
        In cached generation the decision is made on the prompt and kept in the cache for the later steps."""
        if not self.config.text_bypass:
            return None
        if cache is not None and cache.get_seq_length() > 0:
            gate = getattr(cache, "mdu_has_speech", None)
            if gate is not None:
                return gate
        gate = speech_mask.any(dim=1)
        if cache is not None:
            cache.mdu_has_speech = gate
        return gate

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
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""speech_mask (`torch.BoolTensor` [batch, seq]): which positions hold speech tokens. Derived from
        `input_ids` (ids >= text_vocab_size); needed with `inputs_embeds` when the added layers use it.
        The cache may come as `past_key_values` or as `cache` (transformers >= 5.24); see hf_compat.py."""
        cache = take_cache(past_key_values, cache)
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        for key in _NOT_FOR_LAYERS:
            kwargs.pop(key, None)
        if input_ids is not None:
            self._check_input_ids(input_ids)
            if speech_mask is None:
                speech_mask = input_ids >= self.config.text_vocab_size
            inputs_embeds = self.embed_tokens(input_ids)
            if self.embed_scale is not None:  # Gemma: the embedding output times sqrt(hidden_size), in its dtype
                inputs_embeds = inputs_embeds * torch.tensor(self.embed_scale, dtype=inputs_embeds.dtype)
        if speech_mask is None and (self.config.text_bypass or self.config.layer_type == "e_branchformer"):
            if self.config.num_added_layers:
                raise ValueError("Pass speech_mask (bool [batch, seq]) together with inputs_embeds: the added layers need it")
        if speech_mask is not None and attention_mask is not None and attention_mask.dim() == 2:
            # padded positions are never speech, whatever id they hold: the convolutions must not see them
            speech_mask = speech_mask & attention_mask[:, -speech_mask.shape[1] :].bool()
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen).unsqueeze(0)

        mask_kwargs = dict(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           position_ids=position_ids, **cache_kwarg(cache))
        masks = {"full_attention": create_causal_mask(**mask_kwargs)} if "full_attention" in self.config.attention_types else {}
        if "sliding_attention" in self.config.attention_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
        gate = self._added_layers_gate(speech_mask, cache)
        run_none = gate is not None and not bool(gate.any())
        run_all = gate is None or bool(gate.all())

        hidden_states = inputs_embeds
        if self.rotary_per_attention_type:
            rope = {t: self.rotary_emb(hidden_states, position_ids, t) for t in masks}
        else:
            rope = dict.fromkeys(masks, self.rotary_emb(hidden_states, position_ids))
        all_hidden_states = [] if output_hidden_states else None
        layer_kwargs = dict(position_ids=position_ids, use_cache=use_cache, **cache_kwarg(cache), **kwargs)
        is_ebf = self.config.layer_type == "e_branchformer"
        for layer, added, kind in zip(self.layers, self.config.layer_is_added, self.config.attention_types):
            if all_hidden_states is not None:
                all_hidden_states.append(hidden_states)
            inputs = dict(attention_mask=masks[kind], position_embeddings=rope[kind], **layer_kwargs)
            if not added:
                hidden_states = layer(hidden_states, **inputs)
            elif not run_none:
                out = layer(hidden_states, speech_mask=speech_mask, **inputs) if is_ebf else layer(hidden_states, **inputs)
                hidden_states = out if run_all else torch.where(gate[:, None, None], out, hidden_states)
        hidden_states = self.norm(hidden_states)
        if all_hidden_states is not None:
            all_hidden_states.append(hidden_states)
        return MDUSpeechModelOutput(
            last_hidden_state=hidden_states,
            **cache_kwarg(cache if use_cache else None),
            hidden_states=tuple(all_hidden_states) if all_hidden_states is not None else None,
            text_only_rows=None if gate is None else ~gate,
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
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""labels: as for any HF causal LM (aligned with input_ids, -100 = ignored; shifted inside).
        With `config.logits_at_labels_only` and labels given, logits are computed only at the positions that
        predict a label; `logits` is then that [num_labels, vocab] tensor."""
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
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        text_only = outputs.text_only_rows
        loss = None
        if labels is not None and self.config.logits_at_labels_only:
            loss, logits = self._loss_at_labels(hidden_states, labels, num_items_in_batch, text_only)
        else:
            if isinstance(logits_to_keep, int):
                hidden_states = hidden_states[:, -logits_to_keep:, :] if logits_to_keep > 0 else hidden_states
            else:
                hidden_states = hidden_states[:, logits_to_keep, :]
            logits = self._soft_cap(self.lm_head(hidden_states))
            logits = self._text_only_rows_speak_text(logits, text_only, (slice(None), None, None))
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.vocab_size, num_items_in_batch=num_items_in_batch
                )
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, **cache_kwarg(output_cache(outputs))
        )
        return out.to_tuple() if return_dict is False else out

    def _soft_cap(self, logits):
        """Gemma's final-logit soft-capping (cap * tanh(logits / cap)) when the base has it; else the logits."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _text_only_rows_speak_text(self, logits, text_only, index):
        """With `text_bypass`, a text-only sequence is the base model, whose vocabulary has no speech tokens: their
        logits are -inf there (so such a sequence never turns into a speech one while it is generated, and cached
        and uncached decoding agree). `index` maps the [batch] flags onto the logits' leading dims."""
        if text_only is None or not bool(text_only.any()):
            return logits
        is_speech_id = torch.arange(logits.shape[-1], device=logits.device) >= self.config.text_vocab_size
        return logits.masked_fill(text_only[index] & is_speech_id, float("-inf"))

    def _loss_at_labels(self, hidden_states, labels, num_items_in_batch=None, text_only=None):
        """Next-token loss from logits at labelled positions only: an ASR batch is mostly speech prompt, and the
        LM head over a 49k vocabulary is the costliest matmul, so this skips most of it."""
        shift_labels = labels[:, 1:].to(hidden_states.device)
        keep = shift_labels != -100
        logits = self._soft_cap(self.lm_head(hidden_states[:, :-1][keep])).float()
        if text_only is not None:
            rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)[keep]
            logits = self._text_only_rows_speak_text(logits, text_only, (rows, None))
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
