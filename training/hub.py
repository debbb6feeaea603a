"""Hub pushes: what a push needs, checked before any work, and a finished output folder pushed with one command.

    python -m training.hub outputs/demo/model --repo_id you/mdu-smollm2            # create the repo, upload, print URL
    python -m training.hub outputs/demo/model --repo_id you/mdu-smollm2 --dry_run  # list what would be uploaded

`train_hf.py --push_to_hub true` calls `check_hub_access` first (offline mode, no token, Hub unreachable, token
rejected or read-only are each named), so a run does not prepare data and train for an hour to fail at the Trainer's
`create_repo`. The push itself is `huggingface_hub.HfApi.upload_folder` with the ignore patterns of the Trainer's own
`push_to_hub` (`_*`, `checkpoint-*`): the same files whether the run pushes at its end or this command pushes later.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

IGNORE_PATTERNS = ["_*", "checkpoint-*"]  # as transformers.Trainer.push_to_hub
REQUIRED = ("config.json", "README.md")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


class HubAccessError(RuntimeError):
    """What a push needs and does not have (offline, no token, unreachable, token rejected)."""


def _api(api=None):
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi()


def hub_access_problem(repo_id: str, token: str | None = None, api=None) -> str | None:
    """Why a push to `repo_id` cannot work from here (None: it can). One request (whoami) when a token is found."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, get_token, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        return f"{repo_id!r} is not a valid Hub repo id ({err}); set --hub_model_id you/name"
    if constants.HF_HUB_OFFLINE:
        return "the Hub is in offline mode (HF_HUB_OFFLINE=1 in the environment): unset it on a machine with Hub access"
    token = token or get_token()
    if not token:
        return ("no Hub token: run `hf auth login`, or set HF_TOKEN, or pass --hub_token "
                "(a token with write access, https://huggingface.co/settings/tokens)")
    api = _api(api)
    try:
        who = api.whoami(token=token)
    except Exception as err:  # httpx / requests errors differ between huggingface_hub releases
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return f"the Hub rejected the token (401 from {api.endpoint}/api/whoami-v2): log in with `hf auth login`"
        return f"cannot reach the Hub at {api.endpoint}: {type(err).__name__}: {err}"
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        return f"the token of {who.get('name')!r} is read-only: a push needs a token with write access"
    return None


def check_hub_access(repo_id: str, token: str | None = None, api=None) -> None:
    problem = hub_access_problem(repo_id, token, api)
    if problem is not None:
        raise HubAccessError(f"cannot push to the Hub repo {repo_id!r}: {problem}. Nothing was done; train without "
                             f"--push_to_hub and push the finished folder later: python -m training.hub OUTPUT_DIR "
                             f"--repo_id {repo_id}")


def export_problem(folder) -> str | None:
    """Why `folder` is not a finished export (None: it is): config, card and weights must be there."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    missing = [n for n in REQUIRED if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if missing:
        return f"{folder} is not a finished export (missing {', '.join(missing)}): did training finish?"
    return None


def files_to_push(folder) -> list[str]:
    """The paths (relative, POSIX) that `push_folder` uploads: every file but the ignore patterns, as upload_folder
    filters them (huggingface_hub's filter_repo_objects and default ignores)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def push_folder(folder, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str = "Upload MDU speech checkpoint", api=None):
    """Checks the export and the Hub access, creates the repo (exist_ok) and uploads the folder. Returns the commit."""
    problem = export_problem(folder)
    if problem is not None:
        raise ValueError(problem)
    api = _api(api)
    check_hub_access(repo_id, token, api)
    repo = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    return api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), folder_path=str(folder), token=token,
                             commit_message=commit_message, ignore_patterns=list(IGNORE_PATTERNS))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="finished output folder of train_hf.py (checkpoint + processor + README.md card)")
    p.add_argument("--repo_id", required=True, help="you/name on the Hub")
    p.add_argument("--token", default=None, help="default: HF_TOKEN or the token of `hf auth login`")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit_message", default="Upload MDU speech checkpoint")
    p.add_argument("--dry_run", action="store_true", help="list the files that would be uploaded, check nothing online")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.dry_run:
        problem = export_problem(args.folder)
        files = files_to_push(args.folder)
        print(f"would upload {len(files)} files of {os.path.abspath(args.folder)} to {args.repo_id}:")
        print("\n".join(f"  {f}" for f in files))
        if problem:
            print(f"but: {problem}")
        return files
    try:
        commit = push_folder(args.folder, args.repo_id, args.token, args.private or None, args.commit_message)
    except (HubAccessError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(f"pushed {os.path.abspath(args.folder)} to {getattr(commit, 'commit_url', None) or args.repo_id}")
    return commit


if __name__ == "__main__":
    main()
