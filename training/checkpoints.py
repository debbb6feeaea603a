"""Which `checkpoint-N` folders a run can resume from, and a completion marker written after each one.

The HF Trainer writes a checkpoint in a fixed order (`Trainer._save_checkpoint`, transformers 5.14-5.25): the model,
then optimizer / scheduler / scaler / RNG states, then `trainer_state.json`, then it rotates older checkpoints. A run
killed while `checkpoint-200` is being written leaves a folder that `transformers.trainer_utils.get_last_checkpoint`
still picks (it only looks at folder names), and resuming from it fails or silently starts from step 0.

Here:
- after the Trainer's own save, `mark_complete` fsyncs every file of the folder and then writes
  `checkpoint_complete.json` (file names and sizes) atomically (temporary file, fsync, `os.replace`), so a folder
  with that marker holds every byte the marker lists (MDUTrainer._save_checkpoint calls it);
- `checkpoint_problem` says why a folder cannot be resumed from (None when it can): with the marker, a listed file
  missing or of another size; without it (checkpoints of a plain Trainer, or a kill between the Trainer's save and the
  marker), `trainer_state.json` must parse and name the folder's step, since the Trainer writes it last;
- `last_complete_checkpoint` is `get_last_checkpoint` that skips incomplete folders, logging which one and why;
  `resolve_resume` turns `--resume_from_checkpoint last|true|PATH` into the folder to resume from.
train_hf.py, demo.py (through train_hf.py) and grid.py all resume through these.
"""

import json
import logging
import os
import re

logger = logging.getLogger(__name__)

MARKER = "checkpoint_complete.json"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
           "pytorch_model.bin.index.json", "adapter_model.bin")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")  # the Trainer's PREFIX_CHECKPOINT_DIR naming


def _files(folder: str) -> dict[str, int]:
    """{path relative to folder: size} of every file under folder, the marker left out."""
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != MARKER and not rel.startswith(MARKER + "."):
                sizes[rel] = os.path.getsize(path)
    return sizes


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_complete(folder: str, global_step: int | None = None) -> str:
    """Flushes every file of `folder` to disk, then writes the marker atomically. Returns the marker's path."""
    files = _files(folder)
    for rel in files:
        _fsync(os.path.join(folder, rel))
    marker = os.path.join(folder, MARKER)
    tmp = f"{marker}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"global_step": global_step, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    _fsync(folder)  # the rename itself
    return marker


def unmark(folder: str) -> None:
    """Removes the marker before a folder is written again (the Trainer re-saves into an existing checkpoint-N)."""
    try:
        os.remove(os.path.join(folder, MARKER))
    except FileNotFoundError:
        pass


def _step(folder: str) -> int | None:
    match = CHECKPOINT_RE.match(os.path.basename(os.path.normpath(folder)))
    return int(match.group(1)) if match else None


def checkpoint_problem(folder: str) -> str | None:
    """Why the Trainer cannot resume from `folder` (None when it can)."""
    if not os.path.isdir(folder):
        return "no such folder"
    marker = os.path.join(folder, MARKER)
    if os.path.isfile(marker):
        try:
            with open(marker) as f:
                listed = json.load(f)["files"]
        except (ValueError, KeyError, TypeError) as err:
            return f"{MARKER} is unreadable ({err})"
        for rel, size in sorted(listed.items()):
            path = os.path.join(folder, rel)
            if not os.path.isfile(path):
                return f"{rel} is missing ({MARKER} lists it)"
            if os.path.getsize(path) != size:
                return f"{rel} has {os.path.getsize(path)} bytes, {MARKER} says {size} (changed or truncated)"
    state = os.path.join(folder, TRAINER_STATE)
    if not os.path.isfile(state):
        return f"no {TRAINER_STATE} (the Trainer writes it last: the save was interrupted)"
    try:
        with open(state) as f:
            global_step = json.load(f).get("global_step")
    except ValueError as err:
        return f"{TRAINER_STATE} is not valid JSON ({err}): the save was interrupted"
    step = _step(folder)
    if step is not None and global_step != step:
        return f"{TRAINER_STATE} is for step {global_step}, the folder for step {step}"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHTS) and not any(
            name.startswith("pytorch_model_fsdp") for name in os.listdir(folder)):
        return f"no model weights (none of {', '.join(WEIGHTS[:3])}, ...)"
    return None


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in output_dir that can be resumed from; incomplete newer ones are logged and skipped
    (left in place: the Trainer writes that step's folder again when it gets there)."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(((_step(n), n) for n in os.listdir(output_dir) if CHECKPOINT_RE.match(n)), reverse=True)
    for _, name in steps:
        folder = os.path.join(output_dir, name)
        if not os.path.isdir(folder):
            continue
        problem = checkpoint_problem(folder)
        if problem is None:
            if not os.path.isfile(os.path.join(folder, MARKER)):
                logger.info("%s has no %s (a plain Trainer's?); its %s is whole", folder, MARKER, TRAINER_STATE)
            return folder
        logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
    return None


def resolve_resume(value: str | bool | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` as a folder: last/true -> the newest complete checkpoint in output_dir (None: start
    from scratch); a path -> that folder, refused with the reason when it is incomplete."""
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    if value is True or str(value).lower() in ("last", "true"):
        folder = last_complete_checkpoint(output_dir)
        logger.info("resuming from %s", folder or f"scratch (no complete checkpoint in {output_dir})")
        return folder
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(f"--resume_from_checkpoint {value}: cannot resume from it: {problem}")
    return value
