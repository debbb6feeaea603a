"""MDUTrainer: the HF Trainer with custom optimizer parameter groups, the paper's schedule, and PEFT checkpoints
that keep the trainable vocabulary rows.

- Optimizer: `param_groups` from the method registry (`{"name", "params", "lr"?}`), each split into weight-decay /
  no-decay halves the way Trainer does; optimizer class and kwargs come from `Trainer.get_optimizer_cls_and_kwargs`
  (`--optim`, betas, eps ...). Only parameters that require grad go in; a frozen one in a group is an error.
- Schedule: every `--lr_scheduler_type` of transformers works. The paper's (AdamW, warmup, linear decay to a floor
  LR) is `lr_scheduler_type: warmup_stable_decay` with `lr_scheduler_kwargs: {decay_type: linear, min_lr_ratio: 0.2}`;
  when `num_decay_steps` is not given it is filled in as the rest of the run after warmup (no stable phase).
- Optional auxiliary CTC loss on the speech positions (`ctc_weight` > 0, training/ctc_loss.py), logged as `ctc_loss`;
  padded batches only (a packed batch from `ASRCollator(pack=True)` is refused: its rows hold several examples).
- PEFT models: the adapter checkpoint leaves out parameters that are trainable outside LoRA (the speech rows);
  they are saved next to it in `trainable_extra.safetensors` and restored on `--resume_from_checkpoint`.
- Checkpoints: after the Trainer's own save, `checkpoint_complete.json` is written atomically (training/checkpoints.py),
  so `--resume_from_checkpoint last` can tell a finished checkpoint from one a kill left half-written.
- Training-time levers (`TRAINING_SWITCHES`: recompute_frozen_segments, fp8_frozen_linears) are saved off in every
  checkpoint's config: they say how the model trains, not what it is (recomputation changes no output and only acts
  in training; FP8 changes the numerics and needs an FP8 GPU). The weights are the same either way (FP8FrozenLinear
  keeps the bf16/fp32 `weight`); resuming builds the model from the run's flags again.
"""

import inspect
import logging
import os
from contextlib import contextmanager

import safetensors.torch
import torch
from transformers import Trainer
from transformers.optimization import get_scheduler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from training.checkpoints import mark_complete, unmark
from training.ctc_loss import ctc_loss_on_speech

EXTRA_WEIGHTS = "trainable_extra.safetensors"
TRAINING_SWITCHES = ("recompute_frozen_segments", "fp8_frozen_linears")  # config fields saved off (see above)
logger = logging.getLogger(__name__)


def _peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


@contextmanager
def training_switches_off(model):
    """The model's config with TRAINING_SWITCHES False inside the block, as it was after."""
    model = model.get_base_model() if _peft(model) else model
    config = getattr(model, "config", None)
    saved = {k: getattr(config, k) for k in TRAINING_SWITCHES if getattr(config, k, False)}
    try:
        for k in saved:
            setattr(config, k, False)
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


class MDUTrainer(Trainer):
    def __init__(self, *args, param_groups: list[dict] | None = None, card_info: dict | None = None,
                 ctc_weight: float = 0.0, ctc_layer: int = -1, **kwargs):
        super().__init__(*args, **kwargs)
        if ctc_weight < 0:
            raise ValueError(f"ctc_weight must be >= 0, got {ctc_weight}")
        self.param_groups = param_groups
        self.card_info = card_info or {}
        self.ctc_weight, self.ctc_layer = float(ctc_weight), int(ctc_layer)
        self._ctc_logged = []

    # ---------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.ctc_weight or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if "attention_mask" not in inputs and "position_ids" in inputs:
            raise ValueError("ctc_weight > 0 reads the speech and transcript of each row, and a packed batch "
                             "(ASRCollator pack=True) holds several examples in one row: train the CTC loss on padded "
                             "batches")
        input_ids, labels = inputs["input_ids"], inputs["labels"]
        loss, outputs = super().compute_loss(model, {**inputs, "output_hidden_states": True}, return_outputs=True,
                                             num_items_in_batch=num_items_in_batch)
        mdu = self.accelerator.unwrap_model(model)
        mdu = mdu.get_base_model() if _peft(mdu) else mdu
        text_tokenizer = getattr(self.processing_class, "tokenizer", None)
        ctc = ctc_loss_on_speech(mdu, outputs.hidden_states, input_ids, labels, self.ctc_layer,
                                 text_tokenizer.eos_token_id if text_tokenizer is not None else None)
        self._ctc_logged.append(ctc.detach().float())
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            ctc = ctc / self.current_gradient_accumulation_steps  # the Trainer then leaves the sum over micro-batches as is
        loss = loss + self.ctc_weight * ctc
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs):
        if self._ctc_logged and "loss" in logs:
            logs["ctc_loss"] = round(torch.stack(self._ctc_logged).mean().item(), 4)
            self._ctc_logged = []
        super().log(logs, *args, **kwargs)

    # ---------------------------------------------------------------- optimizer / scheduler
    def create_optimizer(self, model=None):
        if self.param_groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        names = {id(p): n for n, p in opt_model.named_parameters()}
        decay = set(self.get_decay_parameter_names(opt_model))
        groups, seen = [], set()
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    raise ValueError(f"param group {group.get('name')!r} holds a frozen parameter {names.get(id(p))}")
                if id(p) in seen:
                    raise ValueError(f"parameter {names.get(id(p))} is in two param groups")
                seen.add(id(p))
            extra = {k: v for k, v in group.items() if k != "params"}
            for suffix, wd in (("", self.args.weight_decay), (".no_decay", 0.0)):
                params = [p for p in group["params"] if (names.get(id(p)) in decay) == (suffix == "")]
                if params:
                    groups.append({**extra, "name": f"{group.get('name', 'group')}{suffix}", "params": params, "weight_decay": wd})
        missing = [n for n, p in opt_model.named_parameters() if p.requires_grad and id(p) not in seen]
        if missing:
            raise ValueError(f"trainable parameters in no param group: {missing[:5]}")
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        kwargs = dict(self.args.lr_scheduler_kwargs or {})
        if self.lr_scheduler is None and self.args.lr_scheduler_type == "warmup_stable_decay" and "num_decay_steps" not in kwargs:
            warmup = self.args.get_warmup_steps(num_training_steps)
            kwargs.update(num_decay_steps=num_training_steps - warmup)  # stable phase = total - warmup - decay = 0
            self.lr_scheduler = get_scheduler(
                "warmup_stable_decay",
                optimizer=optimizer or self.optimizer,
                num_warmup_steps=warmup,
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=kwargs,
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    # ---------------------------------------------------------------- checkpoints: Trainer's save, then a marker
    def _save_checkpoint(self, model, trial):
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            unmark(folder)  # a folder written again is incomplete until the save below has finished
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # sharded saves (FSDP, DeepSpeed) write from every rank
        if self.args.should_save and os.path.isdir(folder):
            mark_complete(folder, self.state.global_step)

    # ---------------------------------------------------------------- PEFT checkpoints keep the speech rows
    def _save(self, output_dir=None, state_dict=None):
        with training_switches_off(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        if _peft(model) and self.args.should_save:
            extra = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
            if extra:
                safetensors.torch.save_file(extra, os.path.join(output_dir, EXTRA_WEIGHTS))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, EXTRA_WEIGHTS)
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        if _peft(model) and os.path.isfile(path):
            params = dict(model.named_parameters())
            for name, tensor in safetensors.torch.load_file(path).items():
                if name not in params:
                    raise KeyError(f"{path}: {name} is not a parameter of the model")
                params[name].data.copy_(tensor.to(params[name].device, params[name].dtype))

    # ---------------------------------------------------------------- model card
    def create_model_card(self, *args, **kwargs):
        """Our card (model_cards/generate.py) when it exists, else the Trainer's."""
        try:
            from model_cards.generate import write_model_card
        except ImportError:
            return super().create_model_card(*args, **kwargs)
        return write_model_card_guarded(write_model_card, self.args.output_dir, self.card_info)


def write_model_card_guarded(write_model_card, output_dir, info: dict):
    """Calls `write_model_card(output_dir, **info)` with the keyword arguments it accepts."""
    params = inspect.signature(write_model_card).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = info
    else:
        accepted = {k: v for k, v in info.items() if k in params}
    try:
        return write_model_card(output_dir, **accepted)
    except TypeError as err:  # a signature we do not fill: the weights are saved already, do not fail the run
        logger.warning("model card not written: write_model_card(%s, %s) failed: %s", output_dir, sorted(accepted), err)
        return None
