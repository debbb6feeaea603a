"""A Space-style web demo of an MDU checkpoint (Gradio): speech in -> transcript (streamed), and text chat with the
same model, with a switch that shows `text_bypass` answers are exactly the base model's.

    python app.py --model DIR_OR_HUB_ID [--port 7860] [--host 127.0.0.1]
    python app.py                       # the demo's checkpoint (outputs/demo/model, ...), after `make demo`

Every exported checkpoint folder holds a copy of this file and a requirements.txt, so the folder runs as a Space (or
locally: `python app.py` inside it). Like the checkpoint's remote code, this file imports nothing from the mdu-speech
repository: only gradio, torch, torchaudio/torchcodec, transformers (and the checkpoint's own code through
trust_remote_code).
"""

import argparse
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEMO_CHECKPOINTS = ("outputs/demo/model", "outputs/demo-gpu/model", "outputs/demo-quick/model")
SAMPLING_RATE = 16000
SPACE_REQUIREMENTS = """# what app.py needs to run this folder as a Space (the versions mdu-speech tests)
torch>=2.14,<2.15
torchaudio>=2.11,<2.12
torchcodec>=0.13,<0.14
transformers{transformers_range}
gradio>=6,<7
"""


class InputError(ValueError):
    """A problem with what the user gave (shown in the page as a message, never as a traceback)."""


# ---------------------------------------------------------------- model
def default_model_dir() -> str | None:
    """This folder when it is a checkpoint (the app inside an exported checkpoint / a Space), else the demo's."""
    if (HERE / "config.json").is_file():
        return str(HERE)
    for rel in DEMO_CHECKPOINTS:
        if (HERE / rel / "config.json").is_file():
            return str(HERE / rel)
    return None


def read_card(model_dir: str) -> dict:
    """The model card's YAML front matter (measured WER, text Δ, ...); {} when there is none."""
    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data.to_dict()
    except Exception:
        return {}


class Demo:
    """The model, its processor and, for the side-by-side text comparison, the base LLM it was up-scaled from."""

    def __init__(self, model_dir: str, max_seconds: float = 120.0, max_new_tokens: int = 96):
        from transformers import AutoModelForCausalLM, AutoProcessor

        self.model_dir, self.max_seconds, self.max_new_tokens = model_dir, max_seconds, max_new_tokens
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
        self.tokenizer = self.processor.tokenizer
        self.card = read_card(model_dir)
        self.trained_bypass = bool(self.model.config.text_bypass)
        self._base = None
        self.lock = threading.Lock()  # one request at a time: text_bypass is switched on the shared model

    @property
    def base(self):
        if self._base is None:
            self._base = self.model.to_text_model().eval()
        return self._base

    # ---------------------------------------------------------------- speech
    def load_audio(self, path) -> torch.Tensor:
        """Mono float32 at 16 kHz, or an InputError that says what is wrong with the file."""
        if not path:
            raise InputError("Record or upload a recording first.")
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(str(path)).get_all_samples()
        except Exception as err:
            raise InputError(f"Cannot read {Path(str(path)).name} as audio ({type(err).__name__}). "
                             "Upload a wav, flac or mp3 file.") from err
        wave, rate = samples.data.float().mean(dim=0), int(samples.sample_rate)
        seconds = wave.numel() / max(rate, 1)
        if wave.numel() == 0:
            raise InputError("The recording is empty.")
        if seconds > self.max_seconds:
            raise InputError(f"The recording is {seconds:.0f} s long; this demo takes up to {self.max_seconds:.0f} s. "
                             "For long audio use the pipeline with chunk_length_s (see the model card).")
        if not torch.isfinite(wave).all():
            raise InputError("The recording holds invalid samples (NaN or infinity).")
        if wave.abs().max() < 1e-3:
            raise InputError("No speech found: the recording is silent.")
        if rate != SAMPLING_RATE:
            import torchaudio

            wave = torchaudio.functional.resample(wave, rate, SAMPLING_RATE)
        return wave

    def transcribe(self, path):
        """Yields (transcript so far, info line): streamed while decoding; the last one is `processor.transcribe`'s."""
        from transformers import TextIteratorStreamer

        t0 = time.perf_counter()
        yield "", "reading the recording ..."  # a new request clears the previous transcript, also when it fails
        wave = self.load_audio(path)
        audio = {"array": wave.numpy(), "sampling_rate": SAMPLING_RATE}
        inputs = self.processor(audio=audio)
        n_units = int(inputs["input_ids"].shape[1]) - 2
        if n_units <= 0:
            raise InputError("No speech units could be made from this recording.")
        seconds = wave.numel() / SAMPLING_RATE

        def info(done: bool) -> str:
            state = f"decoded in {time.perf_counter() - t0:.2f} s" if done else "decoding ..."
            return f"{seconds:.1f} s of audio · {n_units} speech units · {state}"

        prompt_len = inputs["input_ids"].shape[1]
        kwargs = self.processor.generation_kwargs(self.model, prompt_len)  # what processor.transcribe uses
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = {}

        def run():
            try:
                with torch.inference_mode():
                    result["ids"] = self.model.generate(**inputs, streamer=streamer, **kwargs)
            except Exception as err:  # re-raised in the request thread
                result["error"] = err
                streamer.end()

        with self.lock:
            self.model.config.text_bypass = self.trained_bypass
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            text = ""
            for piece in streamer:
                text += piece
                yield text, info(False)
            thread.join()
        if "error" in result:
            raise result["error"]
        final = self.processor.batch_decode(result["ids"][:, prompt_len:])[0]
        yield final, info(True)

    # ---------------------------------------------------------------- text
    def _prompt_ids(self, message: str, history: list) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            turns = [{"role": m["role"], "content": m["content"]} for m in history if m.get("role") in ("user", "assistant")]
            turns.append({"role": "user", "content": message})
            ids = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
        else:
            ids = self.tokenizer(message, return_tensors="pt")["input_ids"]
        return ids

    def _answer(self, model, ids) -> str:
        text_vocab = len(self.tokenizer)
        suppress = list(range(text_vocab, model.config.vocab_size)) if model.config.vocab_size > text_vocab else None
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                 do_sample=False, num_beams=1, suppress_tokens=suppress,
                                 pad_token_id=self.processor.pad_token_id)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    def chat(self, message: str, history: list, bypass: bool, compare: bool):
        """(answer, base model's answer or '', comparison line)."""
        if not message or not message.strip():
            raise InputError("Type a message first.")
        ids = self._prompt_ids(message.strip(), history or [])
        with self.lock:
            self.model.config.text_bypass = bool(bypass)
            try:
                answer = self._answer(self.model, ids)
            finally:
                self.model.config.text_bypass = self.trained_bypass
            if not compare:
                return answer, "", ""
            base_answer = self._answer(self.base, ids)
        same = "identical to the base model's answer" if answer == base_answer else "different from the base model's answer"
        return answer, base_answer, f"text_bypass {'on' if bypass else 'off'}: the answer is {same}."

    # ---------------------------------------------------------------- about
    def about(self) -> str:
        c = self.model.config
        counts = {}
        if hasattr(self.model, "freeze_base"):
            trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
            self.model.freeze_base()
            report = self.model.parameter_report()
            for n, p in self.model.named_parameters():  # leave the model as loaded
                p.requires_grad_(n in trainable)
            counts = {"trainable (added layers + speech rows)": report["trainable"],
                      "frozen (the base LLM)": report["total"] - report["trainable"]}
        mdu = self.card.get("mdu", {}) if isinstance(self.card.get("mdu"), dict) else {}
        rows = [("checkpoint", f"`{self.model_dir}`"), ("base model", self.card.get("base_model") or "not recorded"),
                ("placement", f"{c.placement} (new layers after base layers {c.added_after})"),
                ("inserted layer type", c.layer_type), ("base layers + added", f"{c.num_base_layers} + {c.num_added_layers}")]
        rows += [(k, f"{v:,}") for k, v in counts.items()]
        if mdu.get("wer") is not None:
            rows.append(("WER (model card)", f"{mdu['wer']}%" + (f" on {mdu['asr_data']}" if mdu.get("asr_data") else "")))
        if mdu.get("text_delta") is not None:
            rows.append(("text score Δ vs base (model card)", f"{mdu['text_delta']} points"))
        if not mdu:
            rows.append(("measured results", "none in the model card"))
        return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)

    def examples(self) -> list[list[str]]:
        """Example clips shipped with the checkpoint (examples/*.wav|flac|mp3), one click away in the page."""
        folder = Path(self.model_dir) / "examples"
        return [[str(p)] for p in sorted(folder.glob("*")) if p.suffix.lower() in (".wav", ".flac", ".mp3")]


# ---------------------------------------------------------------- page
def build_app(demo: Demo):
    import gradio as gr

    def shown(fn):
        """Runs a handler; an InputError or any other failure becomes a readable message in the page."""

        def wrapper(*args):
            try:
                result = fn(*args)
                if hasattr(result, "__next__"):
                    yield from result
                else:
                    yield result
            except InputError as err:
                raise gr.Error(str(err)) from err
            except Exception as err:
                raise gr.Error(f"Something went wrong: {type(err).__name__}: {str(err)[:300]}") from err

        return wrapper

    def chat_turn(message, history, bypass, compare):
        answer, base_answer, line = demo.chat(message, history, bypass, compare)
        history = list(history or []) + [{"role": "user", "content": message}, {"role": "assistant", "content": answer}]
        return history, "", base_answer, line

    with gr.Blocks(title="MDU speech LM") as page:
        gr.Markdown("# MDU speech LM\nA frozen text LLM with inserted layers that read speech units. "
                    "Transcribe speech, or chat with the same model on text.")
        with gr.Tab("Speech"):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Recording", elem_id="audio")
            go = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
            transcript = gr.Textbox(label="Transcript", lines=3, elem_id="transcript", interactive=False)
            info = gr.Markdown(elem_id="speech_info")
            if demo.examples():
                gr.Examples(demo.examples(), inputs=[audio], label="Example clips")
            go.click(shown(demo.transcribe), inputs=[audio], outputs=[transcript, info])
        with gr.Tab("Text"):
            chatbot = gr.Chatbot(label="Chat", elem_id="chatbot")
            message = gr.Textbox(label="Message", elem_id="message", placeholder="Ask something")
            with gr.Row():
                bypass = gr.Checkbox(value=True, label="text_bypass: text-only input skips the added layers",
                                     elem_id="bypass")
                compare = gr.Checkbox(value=False, label="also show the base model's answer", elem_id="compare")
            send = gr.Button("Send", variant="primary", elem_id="send")
            base_answer = gr.Textbox(label="Base model's answer", elem_id="base_answer", interactive=False)
            comparison = gr.Markdown(elem_id="comparison")
            outputs = [chatbot, message, base_answer, comparison]
            send.click(shown(chat_turn), inputs=[message, chatbot, bypass, compare], outputs=outputs)
            message.submit(shown(chat_turn), inputs=[message, chatbot, bypass, compare], outputs=outputs)
        with gr.Tab("About"):
            gr.Markdown(demo.about(), elem_id="about")
    return page


def write_space_files(folder) -> list[str]:
    """Copies this app and a requirements.txt into an exported checkpoint folder, so it runs as a Space. The
    transformers range is the one the checkpoint's remote code was tested with (its hf_compat.py)."""
    folder = Path(folder)
    compat = folder / "hf_compat.py"
    found = re.search(r'^SUPPORTED_TRANSFORMERS = "([^"]+)"', compat.read_text(), re.M) if compat.is_file() else None
    if found is None:
        raise FileNotFoundError(f"{folder} is not an exported MDU checkpoint (no hf_compat.py with the tested range)")
    transformers_range = found.group(1)
    if Path(__file__).resolve() != (folder / "app.py").resolve():
        shutil.copyfile(__file__, folder / "app.py")
    (folder / "requirements.txt").write_text(SPACE_REQUIREMENTS.format(transformers_range=transformers_range))
    return [str(folder / "app.py"), str(folder / "requirements.txt")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint folder or Hub id (default: this folder / the demo's)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--max_seconds", type=float, default=120.0, help="longest recording the page accepts")
    args = parser.parse_args(argv)
    model_dir = args.model or default_model_dir()
    if model_dir is None:
        sys.exit("No checkpoint found: run `make demo` first (it writes outputs/demo/model), or pass --model DIR / a Hub id.")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    print(f"[app] loading {model_dir}", flush=True)
    demo = Demo(model_dir, max_seconds=args.max_seconds)
    page = build_app(demo)
    page.queue().launch(server_name=args.host, server_port=args.port, show_error=False)


if __name__ == "__main__":
    main()
