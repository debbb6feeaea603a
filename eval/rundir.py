"""Result folders that are never overwritten silently: a new timestamped run dir, or an explicit `overwrite`."""

import json
import time
from pathlib import Path

DEFAULT_ROOT = Path("runs/eval")


def make_run_dir(output_dir=None, prefix: str = "eval", overwrite: bool = False, root=DEFAULT_ROOT) -> Path:
    """`output_dir` as given (it must be empty or absent unless `overwrite`), or `root/prefix-YYYYmmdd-HHMMSS[-n]`."""
    if output_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, n = Path(root) / f"{prefix}-{stamp}", 1
        while path.exists():
            path, n = Path(root) / f"{prefix}-{stamp}-{n}", n + 1
    else:
        path = Path(output_dir)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} already holds results; pass overwrite=True (--overwrite) or another folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path, data, overwrite: bool = False) -> Path:
    """Writes `data` as indented JSON; refuses to replace an existing file unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return path
