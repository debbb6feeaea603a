"""Train an MDU speech LM (or a baseline) with the HF Trainer.

    python train_hf.py configs/mdu_interleaved_ebf.yaml [--flag value ...]     # YAML gives defaults, flags override
    accelerate launch --config_file configs/accelerate/ddp.yaml train_hf.py configs/mdu_interleaved_ebf.yaml

Methods (--method): mdu | full | lora | layerwise_lr | lora_layerwise (see training/methods.py). The speech tokenizer
comes from --speech_tokenizer or is fitted on the training audio at start. The output dir ends as a flat
trust_remote_code checkpoint (model + processor + model card); LoRA is merged first. --push_to_hub uploads it (Hub
access is checked first; `python -m training.hub OUTPUT_DIR --repo_id you/name` pushes a finished folder later).

Before any work: local paths that do not exist, the rows' transcripts and audio files (training/data.py), the
resume checkpoint (`--resume_from_checkpoint last` skips incomplete ones, training/checkpoints.py), Hub access.

A --dataset of precomputed speech units (a `units` column; `python -m training.precompute_units` writes one) trains
without decoding or encoding audio: its rows are checked against the speech tokenizer that made them
(--speech_tokenizer, else the copy beside the units), which also goes into the checkpoint's processor.

Performance levers (issue 20; README "Performance levers"), each off by default:
    --recompute_frozen_segments true   (--method mdu) frozen base segments recomputed in backward: less memory
    --pack_batches true [--pack_length N]   padding-free batches, train and eval (not with --ctc_weight > 0)
    --fp8_frozen_linears true          (mdu / lora / lora_layerwise) frozen base linears in FP8: Hopper speed
Combinations that cannot work are refused up front (training/arguments.py check_levers). recompute and fp8 are
config fields of the model while it trains, and are saved off (MDUTrainer._save): a checkpoint describes the model,
not how it was trained (the model card lists them); fine-tuning it further opts in again.
"""

import logging
import os
import sys
from pathlib import Path

from transformers import AutoTokenizer, set_seed

from modeling_mdu import MDUSpeechProcessor, MDUSpeechTokenizer
from modeling_mdu.hf_compat import checkpointing_requested, set_checkpointing_kwargs
from training.arguments import check_levers, parse_args
from training.checkpoints import resolve_resume
from training.collator import ASRCollator
from training.data import (
    add_speech_units,
    add_unit_ids,
    check_asr_rows,
    check_local_or_hub,
    check_unit_rows,
    check_units_tokenizer,
    drop_long,
    is_unit_dataset,
    load_asr_dataset,
    load_text_dataset,
    mix_text,
    unit_dataset_tokenizer,
)
from training.hub import check_hub_access
from training.launch import end_distributed
from training.methods import MethodContext, build_method, export_model, is_peft_model
from training.trainer import MDUTrainer, write_model_card_guarded

logger = logging.getLogger("train_hf")


def speech_tokenizer_for(model_args, data_args, training_args, train_raw):
    """The fitted speech tokenizer from --speech_tokenizer, or one fitted now (main process first, then loaded):
    k-means units (fit_speech_tokenizer.py) or, with --speech_tokenizer_backend phonetic, a CTC phoneme recognizer
    trained on the transcripts (fit_phonetic_tokenizer.py; espeak-ng phoneme targets)."""
    if model_args.speech_tokenizer:
        return MDUSpeechTokenizer.from_pretrained(model_args.speech_tokenizer)
    path = os.path.join(training_args.output_dir, "speech_tokenizer")
    with training_args.main_process_first(desc="fit speech tokenizer"):
        if not os.path.exists(os.path.join(path, "preprocessor_config.json")):
            columns = [data_args.audio_column, data_args.text_column]
            rows = list(head(train_raw.select_columns(columns), model_args.speech_tokenizer_fit_examples))
            audio = [r[data_args.audio_column] for r in rows]
            if model_args.speech_tokenizer_backend == "phonetic":
                from fit_phonetic_tokenizer import fit_phonetic_tokenizer

                tok, _ = fit_phonetic_tokenizer(audio, [r[data_args.text_column] for r in rows], seed=training_args.seed,
                                                bf16=bool(training_args.bf16), device=str(training_args.device))
            else:
                from fit_speech_tokenizer import fit_speech_tokenizer

                tok = fit_speech_tokenizer(audio, backend=model_args.speech_tokenizer_backend,
                                           codebook_size=model_args.speech_codebook_size, seed=training_args.seed)
            tok.save_pretrained(path)
        return MDUSpeechTokenizer.from_pretrained(path)


def head(ds, n):
    """The first n examples (all when n is None or larger than the dataset)."""
    if n is None:
        return ds
    return ds.take(n) if not hasattr(ds, "__len__") else ds.select(range(min(n, len(ds))))


def prepare(ds, processor, data_args, tokenizer, limit):
    ds = head(ds, limit)
    workers = data_args.preprocessing_num_workers
    if is_unit_dataset(ds, data_args.units_column):  # precomputed: offset into the model vocabulary, nothing decoded
        ds = add_unit_ids(ds, processor, data_args.units_column, data_args.text_column, workers)
    else:
        ds = add_speech_units(ds, processor, data_args.audio_column, data_args.text_column, workers)
    return drop_long(ds, data_args.max_length or processor.max_length, tokenizer)  # default: the model context


def check_rows(ds, source, data_args, speech_tok):
    """Every row a run reads, before any work: precomputed units against the speech tokenizer's codebook, or
    transcripts and audio files."""
    if is_unit_dataset(ds, data_args.units_column):
        if speech_tok is None:
            raise ValueError(f"{source} holds precomputed speech units but the training split does not: use one kind")
        check_unit_rows(ds, source, speech_tok.codebook_size, data_args.units_column, data_args.text_column)
    else:
        check_asr_rows(ds, source, data_args.audio_column, data_args.text_column)


def main(argv=None, callbacks=None):
    model_args, data_args, method_args, args = parse_args(argv)
    check_levers(model_args, data_args, method_args, args)  # combinations that cannot work, before any work
    logging.basicConfig(level=logging.INFO if args.should_log else logging.WARNING)
    set_seed(args.seed)
    args.remove_unused_columns = False  # the collator needs unit_ids + text
    if checkpointing_requested(args):  # frozen layers: reentrant checkpointing breaks
        set_checkpointing_kwargs(args, {"use_reentrant": False})
    if args.ddp_find_unused_parameters is None:  # E-Branchformer local branches / bypassed layers idle on text-only batches
        args.ddp_find_unused_parameters = method_args.method == "mdu" and (
            method_args.layer_type == "e_branchformer" or method_args.text_bypass or data_args.text_mix_ratio > 0)

    # checks before any work: paths, resume point, Hub access, every row the run will read
    check_local_or_hub(model_args.base_model, "--base_model")
    optional_sources = {"--speech_tokenizer": model_args.speech_tokenizer, "--text_dataset": data_args.text_dataset}
    for flag, value in optional_sources.items():
        if value:  # both may be Hub ids
            check_local_or_hub(value, flag)
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if args.push_to_hub:  # the Trainer's repo id: hub_model_id, else the output dir's name
        check_hub_access(args.hub_model_id or Path(args.output_dir).absolute().name, token=args.hub_token)
    load = dict(config=data_args.dataset_config, audio_column=data_args.audio_column, text_column=data_args.text_column,
                streaming=data_args.streaming, units_column=data_args.units_column)
    train_raw = load_asr_dataset(data_args.dataset, data_args.train_split, **load)
    speech_tok = None
    if is_unit_dataset(train_raw, data_args.units_column):  # precomputed units: checked against their tokenizer
        model_args.speech_tokenizer = unit_dataset_tokenizer(data_args.dataset, model_args.speech_tokenizer,
                                                             data_args.units_column)
        speech_tok = MDUSpeechTokenizer.from_pretrained(model_args.speech_tokenizer)
        check_units_tokenizer(data_args.dataset, speech_tok, model_args.speech_tokenizer)
    fit_rows = model_args.speech_tokenizer_fit_examples if not model_args.speech_tokenizer else 0
    limit = None if data_args.max_train_examples is None else max(data_args.max_train_examples, fit_rows)
    check_rows(head(train_raw, limit), data_args.dataset, data_args, speech_tok)
    eval_raw = None
    if data_args.eval_split:
        eval_raw = load_asr_dataset(data_args.dataset, data_args.eval_split, **load)
        check_rows(head(eval_raw, data_args.max_eval_examples), f"{data_args.dataset} [{data_args.eval_split}]",
                   data_args, speech_tok)

    tokenizer = AutoTokenizer.from_pretrained(model_args.base_model)
    text_ds = load_text_dataset(data_args.text_dataset) if data_args.text_dataset else None
    speech_tok = speech_tok or speech_tokenizer_for(model_args, data_args, args, train_raw)

    importance_texts = None
    if method_args.method in ("layerwise_lr", "lora_layerwise") and not method_args.importance_file:
        rows = head(text_ds if text_ds is not None else train_raw.select_columns([data_args.text_column]), method_args.importance_texts)
        importance_texts = [r["text" if text_ds is not None else data_args.text_column] for r in rows]
    model_kwargs = {"dtype": model_args.dtype}
    if model_args.attn_implementation:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    levers = {name: True for name in ("recompute_frozen_segments", "fp8_frozen_linears") if getattr(model_args, name)}
    if data_args.pack_batches:
        levers["pack_batches"] = True if data_args.pack_length is None else f"rows of {data_args.pack_length}"
    model_kwargs.update({k: v for k, v in levers.items() if k != "pack_batches"})  # config fields of the model
    ctx = MethodContext(method_args, model_args.base_model, speech_tok.codebook_size, args.learning_rate,
                        model_kwargs, tokenizer, importance_texts, speech_unit_names=speech_tok.phonemes)
    model, param_groups = build_method(method_args.method, ctx)
    mdu = model.get_base_model() if is_peft_model(model) else model
    mdu.config.logits_at_labels_only = True  # LM head only where a label needs it
    processor = MDUSpeechProcessor.from_model_config(mdu.config, speech_tok, tokenizer)

    with args.main_process_first(desc="speech units"):
        train_ds = prepare(train_raw, processor, data_args, tokenizer, data_args.max_train_examples)
        if text_ds is not None and data_args.text_mix_ratio > 0:
            train_ds = mix_text(train_ds, text_ds, data_args.text_mix_ratio, args.seed)
        eval_ds = None
        if eval_raw is not None:
            eval_ds = prepare(eval_raw, processor, data_args, tokenizer, data_args.max_eval_examples)

    report = mdu.parameter_report() if not is_peft_model(model) else None
    logger.info("method %s: %s", method_args.method, report or model.get_nb_trainable_parameters())
    card_info = dict(method=method_args.method, base_model=model_args.base_model, dataset=data_args.dataset,
                     method_args={**vars(method_args), **levers}, training_args=args.to_dict())
    if args.hub_model_id:
        card_info["repo_id"] = args.hub_model_id  # the card's usage lines name the Hub repo, not the local folder
    trainer = MDUTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=processor,
                         data_collator=ASRCollator(processor, data_args.train_on_speech, pack=data_args.pack_batches,
                                                   pack_length=data_args.pack_length), param_groups=param_groups,
                         callbacks=callbacks, card_info=card_info, ctc_weight=data_args.ctc_weight,
                         ctc_layer=data_args.ctc_layer)

    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    final = export_model(trainer.model)  # LoRA merged: a plain MDU model
    final.config.logits_at_labels_only = False
    trainer.model = trainer.model_wrapped = final
    trainer.save_model(args.output_dir, _internal_call=True)  # save_pretrained (flat remote code) + processor; no push yet
    if args.should_save:
        from app import write_space_files

        write_space_files(args.output_dir)  # app.py + requirements.txt: the folder also runs as a Space
        card_info["train_metrics"] = result.metrics
        try:
            from model_cards.generate import write_model_card
        except ImportError:
            logger.warning("model_cards/generate.py not found: no model card written")
        else:
            write_model_card_guarded(write_model_card, args.output_dir, card_info)
    if args.push_to_hub:
        trainer.push_to_hub()
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
    end_distributed()
