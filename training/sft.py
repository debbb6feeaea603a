"""TRL's SFTTrainer for MDU models.

TRL >= 1.x computes the SFT loss with a fused LM head that multiplies hidden states by `lm_head.weight` (+ `bias`)
directly. An MDU LM head keeps the frozen text rows (`weight`) and the new speech rows (`speech_weight`) apart, so
that path would see only the text vocabulary (and fails on the missing `bias`). `MDUSFTTrainer` keeps everything
of SFTTrainer (dataset preparation, prompt-completion masking, collator, logging) but takes the loss from the
model's own forward, as the plain Trainer does; the entropy / token-accuracy metrics are not logged.

    trainer = MDUSFTTrainer(model=mdu_model, args=SFTConfig(..., completion_only_loss=True), train_dataset=ds,
                            processing_class=text_tokenizer)
"""

from transformers import Trainer
from trl import SFTTrainer


class MDUSFTTrainer(SFTTrainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "completion_mask"}
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
