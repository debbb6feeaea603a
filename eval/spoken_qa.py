"""Spoken QA, the measure of arXiv 2509.23755: the offline text suite's questions spoken by held-out voices, answered
by multiple choice (log-likelihood of each choice, as eval/text.py scores the text suite: eval/loglik.py).

    python -m eval.spoken_qa --model runs/grid-cpu/mdu_interleaved --base cache/base/SmolLM2-135M-Instruct \
        --dataset cache/data/multi-demo --max_items 40 --output_dir runs/grid-cpu/mdu_interleaved/eval/spoken_qa
    python -m eval.spoken_qa --base cache/base/SmolLM2-135M-Instruct --max_items 40 --output_dir DIR   # base: text only

Which questions (`SPOKEN_TASKS`): the arithmetic questions ("What is 3 plus 4?": the words between "Question: " and
"\\nAnswer:" are spoken) and the cloze contexts (the whole context is spoken; the choices are its possible next words).
Word order is left out: its prompt is the constant "Sentence:" and its choices are the sentence itself in four orders,
so there is nothing to speak but the answer. The held-out perplexity text is not a question.

Voices: only voices no training utterance used. The held-out voices of each family come from the corpus's
leave-one-synthesizer-out protocol (prepare/multi_corpus.py `protocol`: espeak-ng's 32 held-out accent+variant voices;
for the held-out family, flite in the demo's corpus, all its voices); they are checked against the training voices
of `VOICE_SPLITS` and, with --dataset, against the `voice` column of its training split. Item i is spoken by voice
i mod n, speed and pitch drawn from a seeded RNG as the corpus's test splits. The audio is cached under --audio_cache
(default cache/spoken_qa/<family>-<hash of texts, voices, speeds, pitches>/: wav files + manifest.json).

Scores per task and voice family (acc, acc_norm and the task's primary metric, as eval/text.py):
  t2t           text to text: the question as text (the text suite's own prompt), for the model and for the base
                (`base_t2t`); the base's t2t equals eval/text.py's accuracy on the same items
  s2t           speech to text, directly: the prompt is the checkpoint's chat template rendered with the audio alone
                (`processor.default_prompt()`: the plain ASR prompt `<|speech_start|> units <|speech_end|>` for the
                demo's template) followed by the task's text answer cue (arithmetic "\\nAnswer:", cloze none), then
                the choice (" 7"); no transcript and no question text: the model must take the question from the units
  cascade       the model transcribes the question (greedy, processor.transcribe_units) and answers its own transcript
                as text, in the text suite's prompt ("Question: <transcript>\\nAnswer:" / "<transcript>")
  base_cascade  the frozen base answers the model's transcript (a cascade with the base as answerer)
results.json holds all of it (and the question WER of the transcripts), items.jsonl one line per item and voice
family (transcript, predictions), results.md a table.
"""

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

from .loglik import encode_pair, score_requests
from .rundir import make_run_dir, write_json
from .text import TASKS_DIR, _field, _model_context, _pad_id, _prefix_id, load_task

# task -> how its text prompt holds the spoken part: `pattern` finds it in doc_to_text, `template` puts a transcript
# back, `cue` is the text that follows the speech in the direct speech-to-text prompt (no trailing whitespace)
SPOKEN_TASKS = {
    "mdu_arith": {"pattern": r"^Question: (?P<spoken>.+?)\nAnswer:$", "template": "Question: {}\nAnswer:",
                  "cue": "\nAnswer:"},
    "mdu_cloze": {"pattern": r"^(?P<spoken>.+)$", "template": "{}", "cue": ""},
}
LEFT_OUT = {"mdu_word_order": "its prompt is the constant 'Sentence:' and its choices are the sentence in four word "
                              "orders: spoken, the question would be the answer",
            "mdu_heldout_ppl": "perplexity on running text, not a question"}
MODES = ("t2t", "s2t", "cascade", "base_cascade", "base_t2t")
SAMPLING_RATE = 16000
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "cache" / "spoken_qa"


# ---------------------------------------------------------------- items and voices
def load_items(max_items: int | None = None, tasks_dir=TASKS_DIR) -> list[dict]:
    """The spoken tasks' items (the first `max_items` of each, as eval/text.py takes them): task, index, the text
    prompt (`context`), its spoken part, choices, label, delimiter, primary metric."""
    items = []
    for path in sorted(Path(tasks_dir).glob("*.yaml")):
        config, docs = load_task(path)
        spec = SPOKEN_TASKS.get(config["task"])
        if spec is None:
            continue
        docs = docs[:max_items] if max_items else docs
        for i, doc in enumerate(docs):
            context = _field(config.get("doc_to_text", ""), doc)
            match = re.match(spec["pattern"], context, flags=re.S)
            if match is None or not match["spoken"].strip():
                raise ValueError(f"{config['task']} item {i}: {context!r} does not match {spec['pattern']!r}")
            items.append({"task": config["task"], "index": i, "context": context, "spoken": match["spoken"].strip(),
                          "choices": list(_field(config["doc_to_choice"], doc)),
                          "label": int(_field(config["doc_to_target"], doc)),
                          "delimiter": config.get("target_delimiter", " "),
                          "primary": (config.get("metadata") or {}).get("primary_metric", "acc")})
    if not items:
        raise ValueError(f"no spoken task ({sorted(SPOKEN_TASKS)}) in {tasks_dir}")
    return items


def corpus_held_out(dataset: str | None, default: str = "flite") -> str:
    """The held-out synthesizer family of a multi-synthesizer corpus (its multi_params.json), else `default`."""
    if dataset:
        stamp = Path(dataset) / "multi_params.json"
        if stamp.is_file():
            return json.loads(stamp.read_text())["params"]["held_out"]
    return default


def held_out_voices(family: str, held_out: str = "flite") -> list[str]:
    """The voices of `family` that no training utterance of a corpus holding `held_out` out uses."""
    from prepare.multi_corpus import protocol

    spec = next(s for s in protocol(held_out).values() if s["family"] == family)
    return list(spec["voices"])


def training_voices(dataset: str | None = None, held_out: str = "flite", split: str = "train") -> set[str]:
    """The training voices of a corpus holding `held_out` out (every other family's training list, prepare/
    multi_corpus.py VOICE_SPLITS) plus, when `dataset` has a `voice` column, the voices its training split uses."""
    from prepare.multi_corpus import VOICE_SPLITS

    voices = {v for family, (train, _) in VOICE_SPLITS.items() if family != held_out for v in train}
    if dataset:
        from training.data import load_asr_dataset

        try:
            ds = load_asr_dataset(str(dataset), split)
        except (ValueError, FileNotFoundError):
            ds = None
        if ds is not None and "voice" in (ds.column_names or []):
            voices |= set(ds.select_columns(["voice"])["voice"])
    return voices


def voice_plan(items: list[dict], family: str, held_out: str = "flite", seed: int = 0, exclude=()) -> list[dict]:
    """Per item: family, voice, speed, pitch. Raises ValueError when a voice is in `exclude` (training voices)."""
    from prepare import espeak_corpus as ec

    voices = held_out_voices(family, held_out)
    clash = sorted(set(voices) & set(exclude))
    if clash:
        raise ValueError(f"spoken QA voices {clash} of {family} are training voices: only held-out voices may speak")
    rng = random.Random(f"spoken-qa-{seed}-{family}")
    plan = []
    for i, _ in enumerate(items):
        speed = rng.randint(*ec.SPEED_RANGE)
        pitch = rng.randint(*ec.PITCH_RANGE) if family != "flite" else 50  # flite keeps its voices' pitch
        plan.append({"family": family, "voice": voices[i % len(voices)], "speed": speed, "pitch": pitch})
    return plan


def spoken_audio(items: list[dict], plan: list[dict], cache_dir=DEFAULT_CACHE) -> tuple[list, Path]:
    """The items' spoken parts said as `plan` says (float32 16 kHz arrays), synthesized once and cached in
    cache_dir/<family>-<hash>/ (wav files + manifest.json, written last)."""
    from prepare import espeak_corpus as ec
    from prepare import synthesizers as synth

    rows = [{"task": it["task"], "index": it["index"], "text": it["spoken"], **p} for it, p in zip(items, plan)]
    key = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"{plan[0]['family'] if plan else 'none'}-{key}"
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for k, row in enumerate(rows):
            audio = synth.speak(row["family"], row["voice"], row["text"], row["speed"], row["pitch"], SAMPLING_RATE)
            (folder / f"{k:04d}.wav").write_bytes(ec.write_wav(audio, SAMPLING_RATE))
        manifest.write_text(json.dumps({"rows": rows, "files": [f"{k:04d}.wav" for k in range(len(rows))]}, indent=1))
    files = json.loads(manifest.read_text())["files"]
    audio = []
    for name in files:
        wave, sr = ec.read_wav((folder / name).read_bytes())
        if sr != SAMPLING_RATE:
            raise ValueError(f"{folder / name}: {sr} Hz, expected {SAMPLING_RATE}")
        audio.append(wave)
    return audio, folder


# ---------------------------------------------------------------- requests
def t2t_requests(tokenizer, items: list[dict], contexts: list[str] | None = None) -> list[tuple]:
    """eval/text.py's requests: (context, delimiter + choice) per choice, `contexts` replacing the items' prompts."""
    requests = []
    for k, item in enumerate(items):
        context = item["context"] if contexts is None else contexts[k]
        requests += [encode_pair(tokenizer, context, item["delimiter"] + c, _prefix_id(tokenizer)) for c in item["choices"]]
    return requests


def s2t_prompt(processor, item: dict) -> str:
    """The direct speech-to-text prompt: the checkpoint's chat template with the audio alone, then the task's cue."""
    cue = SPOKEN_TASKS[item["task"]]["cue"]
    if cue != cue.rstrip():
        raise ValueError(f"{item['task']}: the answer cue must not end in whitespace ({cue!r})")
    return processor.default_prompt() + cue


def s2t_requests(processor, items: list[dict], speech_ids: list[list[int]]) -> list[tuple]:
    """(context ids, continuation ids) per choice: context = the prompt of `s2t_prompt` with the item's speech units
    (processor.build_inputs: text before the audio, speech_start, units, speech_end, text after); continuation = the
    delimiter + choice tokenised as encode_pair does after that text."""
    tokenizer, requests = processor.tokenizer, []
    for item, units in zip(items, speech_ids):
        prompt = s2t_prompt(processor, item)
        before, after = prompt.split(processor.audio_token)
        stripped = after.rstrip()
        context = processor.build_inputs([units], prompts=[before + processor.audio_token + stripped])[0]["input_ids"]
        for choice in item["choices"]:
            continuation = item["delimiter"] + choice
            if stripped:
                _, cont = encode_pair(tokenizer, after, continuation, _prefix_id(tokenizer))
            else:
                cont = tokenizer(after + continuation, add_special_tokens=False)["input_ids"]
            requests.append((list(context), cont))
    return requests


def cascade_contexts(items: list[dict], transcripts: list[str]) -> list[str]:
    """The text suite's prompt with the transcript where the question was."""
    return [SPOKEN_TASKS[it["task"]]["template"].format(t.strip()) for it, t in zip(items, transcripts)]


# ---------------------------------------------------------------- scoring
def choose(model, tokenizer, items: list[dict], requests: list[tuple], batch_size: int = 16, max_length: int = 512,
           desc: str = "spoken_qa") -> list[dict]:
    """Per item: log-likelihood per choice, the argmax (`pred`) and the length-normalised argmax (`pred_norm`), as
    eval/text.py's score_multiple_choice decides them."""
    scores = score_requests(model, requests, batch_size, _model_context(model, max_length), _pad_id(tokenizer), desc)
    out, k = [], 0
    for item in items:
        ll = [scores[k + j][0] for j in range(len(item["choices"]))]
        k += len(item["choices"])
        norm = [x / len(c) for x, c in zip(ll, item["choices"])]
        out.append({"loglik": ll, "pred": max(range(len(ll)), key=ll.__getitem__),
                    "pred_norm": max(range(len(norm)), key=norm.__getitem__)})
    return out


def accuracy(items: list[dict], choices: list[dict]) -> dict:
    """acc, acc_norm and the primary metric's `score` (points) over `items` (one task)."""
    n = len(items)
    acc = 100.0 * sum(c["pred"] == it["label"] for it, c in zip(items, choices)) / n
    acc_norm = 100.0 * sum(c["pred_norm"] == it["label"] for it, c in zip(items, choices)) / n
    primary = items[0]["primary"]
    return {"acc": acc, "acc_norm": acc_norm, "n": n, "primary": primary, "score": acc if primary == "acc" else acc_norm}


def summarize(items: list[dict], by_mode: dict[str, list[dict]]) -> dict:
    """{task: {mode: accuracy}} and the mean over tasks per mode (`score`)."""
    tasks = sorted({it["task"] for it in items})
    out = {"tasks": {}, "score": {}}
    for task in tasks:
        idx = [i for i, it in enumerate(items) if it["task"] == task]
        out["tasks"][task] = {mode: accuracy([items[i] for i in idx], [ch[i] for i in idx]) for mode, ch in by_mode.items()}
    for mode in by_mode:
        out["score"][mode] = sum(out["tasks"][t][mode]["score"] for t in tasks) / len(tasks)
    return out


def evaluate_spoken_qa(model=None, processor=None, base=None, base_tokenizer=None, items=None, audio_sets=None,
                       batch_size: int = 16, max_new_tokens: int = 48, max_length: int = 512) -> dict:
    """Spoken QA of `model` (an MDU checkpoint with its `processor`) and/or the text `base`. `audio_sets`:
    {family: (audio arrays, plan)} aligned with `items`. Without `model` only the base's t2t is scored."""
    result = {"sets": {}, "items": []}
    base_t2t = None
    if base is not None:
        base_t2t = choose(base, base_tokenizer, items, t2t_requests(base_tokenizer, items), batch_size, max_length,
                          desc="base t2t")
    if model is None:
        result["text"] = summarize(items, {"base_t2t": base_t2t})
        return result
    tokenizer = processor.tokenizer
    t2t = choose(model, tokenizer, items, t2t_requests(tokenizer, items), batch_size, max_length, desc="t2t")
    result["text"] = summarize(items, {"t2t": t2t, **({"base_t2t": base_t2t} if base_t2t else {})})
    from .asr import error_rates

    for family, (audio, plan) in (audio_sets or {}).items():
        units = processor.encode_speech(audio, sampling_rate=SAMPLING_RATE)
        s2t = choose(model, tokenizer, items, s2t_requests(processor, items, units), batch_size, max_length,
                     desc=f"s2t {family}")
        transcripts = processor.transcribe_units(model, units, batch_size=8, max_new_tokens=max_new_tokens)
        contexts = cascade_contexts(items, transcripts)
        cascade = choose(model, tokenizer, items, t2t_requests(tokenizer, items, contexts), batch_size, max_length,
                         desc=f"cascade {family}")
        modes = {"t2t": t2t, "s2t": s2t, "cascade": cascade}
        if base is not None:
            modes["base_cascade"] = choose(base, base_tokenizer, items, t2t_requests(base_tokenizer, items, contexts),
                                           batch_size, max_length, desc=f"base cascade {family}")
            modes["base_t2t"] = base_t2t
        summary = summarize(items, modes)
        nonempty = [(it["spoken"], t) for it, t in zip(items, transcripts)]
        summary["question_asr"] = error_rates([r for r, _ in nonempty], [h for _, h in nonempty])
        summary["voices"] = sorted({p["voice"] for p in plan})
        result["sets"][family] = summary
        for k, (item, p) in enumerate(zip(items, plan)):
            row = {"family": family, "task": item["task"], "index": item["index"], "voice": p["voice"],
                   "speed": p["speed"], "pitch": p["pitch"], "spoken": item["spoken"], "transcript": transcripts[k],
                   "cascade_context": contexts[k], "s2t_prompt": s2t_prompt(processor, item),
                   "num_units": len(units[k]), "label": item["label"]}
            row.update({f"{mode}_pred": ch[k]["pred"] for mode, ch in modes.items()})
            row.update({f"{mode}_pred_norm": ch[k]["pred_norm"] for mode, ch in modes.items()})
            result["items"].append(row)
    return result


# ---------------------------------------------------------------- report
LABELS = {"base_t2t": "base T2T", "t2t": "T2T", "s2t": "S2T direct", "cascade": "cascade (own transcript)",
          "base_cascade": "base on its transcript"}


def markdown(results: dict) -> str:
    lines = [f"# Spoken QA: {results.get('model') or results.get('base')}", "",
             "Accuracy in points (primary metric of each task: arithmetic acc, cloze acc_norm). T2T = question as text; "
             "S2T direct = speech units of the question then the answer cue; cascade = the model answers its own "
             "transcript; base on its transcript = the frozen base answers the model's transcript.", ""]
    sets = results.get("sets") or {}
    if not sets:
        text = results["text"]
        lines += ["| task | base T2T |", "|---|---:|"]
        lines += [f"| {t} (n={m['base_t2t']['n']}) | {m['base_t2t']['score']:.1f} |" for t, m in text["tasks"].items()]
        lines.append(f"| mean | {text['score']['base_t2t']:.1f} |")
        return "\n".join(lines) + "\n"
    modes = [m for m in ("base_t2t", "t2t", "s2t", "cascade", "base_cascade") if m in next(iter(sets.values()))["score"]]
    lines += ["| voices | task | " + " | ".join(LABELS[m] for m in modes) + " | question WER % |",
              "|---|---|" + "---:|" * (len(modes) + 1)]
    for family, s in sets.items():
        wer = 100 * s["question_asr"]["wer"]
        for task, m in s["tasks"].items():
            lines.append(f"| {family} | {task} (n={m['t2t']['n']}) | "
                         + " | ".join(f"{m[x]['score']:.1f}" for x in modes) + f" | {wer:.1f} |")
        lines.append(f"| {family} | mean | " + " | ".join(f"{s['score'][x]:.1f}" for x in modes) + f" | {wer:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="MDU checkpoint (model + processor); omit to score the base's T2T only")
    p.add_argument("--base", default=None, help="the frozen base (text LLM): base T2T and base-on-transcript cascade")
    p.add_argument("--dataset", default=None, help="the training corpus: its held-out family and training voices")
    p.add_argument("--held_out", default=None, help="held-out synthesizer family (default: the corpus's, else flite)")
    p.add_argument("--families", default="espeak", help="comma-separated voice families (espeak, flite, mbrola)")
    p.add_argument("--max_items", type=int, default=None, help="first N items of each spoken task (as eval.text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--audio_cache", default=str(DEFAULT_CACHE))
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=48, help="transcript length limit of the cascade")
    p.add_argument("--max_length", type=int, default=512, help="scoring context, as eval.text's --max_length")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--output_dir", default=None, help="default: a new runs/eval/spoken_qa-<time> folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if not a.model and not a.base:
        p.error("give --model, --base or both")
    from .loading import load_model, load_processor

    out = make_run_dir(a.output_dir, "spoken_qa", a.overwrite)
    items = load_items(a.max_items)
    held_out = a.held_out or corpus_held_out(a.dataset)
    families = [f.strip() for f in a.families.split(",") if f.strip()] if a.model else []
    exclude = training_voices(a.dataset, held_out)
    audio_sets, cache_folders = {}, {}
    for family in families:
        plan = voice_plan(items, family, held_out, a.seed, exclude)
        audio, folder = spoken_audio(items, plan, a.audio_cache)
        audio_sets[family], cache_folders[family] = (audio, plan), str(folder)
    base = base_tok = model = processor = None
    if a.base:
        base, base_tok = load_model(a.base, dtype=a.dtype, device=a.device)
    if a.model:
        model, _ = load_model(a.model, dtype=a.dtype, device=a.device)
        processor = load_processor(a.model)
    result = evaluate_spoken_qa(model, processor, base, base_tok, items, audio_sets, a.batch_size, a.max_new_tokens,
                                a.max_length)
    rows = result.pop("items")
    example = next(iter(items), None)
    summary = {"task": "spoken_qa", "model": a.model, "base": a.base, "max_items": a.max_items, "max_length": a.max_length,
               "tasks": sorted({it["task"] for it in items}), "left_out": LEFT_OUT, "held_out_family": held_out,
               "families": families, "audio_cache": cache_folders, "training_voices_excluded": len(exclude),
               "prompts": {t: {"t2t": "the text suite's prompt (doc_to_text), then delimiter + choice",
                               "s2t": (s2t_prompt(processor, {"task": t}) if processor else None),
                               "s2t_note": "the audio token becomes <|speech_start|> units <|speech_end|>",
                               "cascade": SPOKEN_TASKS[t]["template"].replace("{}", "<transcript>")}
                           for t in SPOKEN_TASKS},
               "example": example, **result}
    write_json(out / "results.json", summary, a.overwrite)
    (out / "items.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (out / "results.md").write_text(markdown(summary))
    print(markdown(summary))
    print(f"written to {out}")
    return summary


if __name__ == "__main__":
    main()
