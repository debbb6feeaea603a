"""--push_to_hub without Hub access stops before any work and says what is missing (offline mode, no token, Hub
unreachable, token rejected or read-only: the last three against a local stand-in for the Hub's whoami endpoint); a
finished output folder is pushed later with one command, and the files and card it uploads are exactly the export's.
Nothing here reaches the network."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from train_fixtures import fit_tiny_speech_tokenizer, make_audio_folder, save_tiny_base

import train_hf
from training import hub
from training.hub import HubAccessError, files_to_push, hub_access_problem, push_folder


class WhoAmI(BaseHTTPRequestHandler):
    """/api/whoami-v2 of a Hub stand-in: token hf_write -> write role, hf_read -> read role, anything else -> 401."""

    def do_GET(self):
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        roles = {"hf_write": "write", "hf_read": "read"}
        if self.path != "/api/whoami-v2" or token not in roles:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"name": "me", "auth": {"accessToken": {"role": roles[token]}}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), WhoAmI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def online_no_token(monkeypatch, tmp_path):
    """Online mode with no token anywhere (no HF_TOKEN, an empty HF home)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_stored"), raising=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    audio = make_audio_folder(root / "audio")
    return {"root": root, "audio": audio, "base": save_tiny_base(root / "base"),
            "stok": fit_tiny_speech_tokenizer(audio, root / "speech_tokenizer")}


def argv(work, out, *extra):
    return ["configs/tiny_test.yaml", "--base_model", str(work["base"]), "--dataset", str(work["audio"]),
            "--speech_tokenizer", str(work["stok"]), "--output_dir", str(out), *extra]


def test_push_to_hub_offline_stops_before_any_work(work, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(train_hf, "load_asr_dataset", lambda *a, **k: pytest.fail("data loaded before the Hub check"))
    with pytest.raises(HubAccessError) as err:
        train_hf.main(argv(work, work["root"] / "offline", "--push_to_hub", "true", "--hub_model_id", "me/tiny-mdu"))
    msg = str(err.value)
    assert "cannot push to the Hub repo 'me/tiny-mdu'" in msg and "offline mode (HF_HUB_OFFLINE=1" in msg
    assert "python -m training.hub OUTPUT_DIR --repo_id me/tiny-mdu" in msg
    assert not (work["root"] / "offline").exists()


def test_push_to_hub_without_token_names_it(work, monkeypatch, online_no_token):
    monkeypatch.setattr(train_hf, "load_asr_dataset", lambda *a, **k: pytest.fail("data loaded before the Hub check"))
    with pytest.raises(HubAccessError, match="no Hub token: run `hf auth login`, or set HF_TOKEN"):
        train_hf.main(argv(work, work["root"] / "no_token", "--push_to_hub", "true"))  # repo id: the folder's name


def test_hub_access_checked_against_a_stand_in(stand_in, online_no_token):
    api = HfApi(endpoint=stand_in)
    assert hub_access_problem("me/x", token="hf_write", api=api) is None
    assert "read-only" in hub_access_problem("me/x", token="hf_read", api=api)
    assert hub_access_problem("me/x", token="hf_wrong", api=api).startswith("the Hub rejected the token (401")
    refused = hub_access_problem("me/x", token="hf_write", api=HfApi(endpoint="http://127.0.0.1:9"))  # nothing listens
    assert refused.startswith("cannot reach the Hub at http://127.0.0.1:9")
    assert "not a valid Hub repo id" in hub_access_problem("me/x/y", token="hf_write", api=api)


class RecordingApi:
    """HfApi's create_repo/upload_folder recorded; upload_folder picks files the way huggingface_hub does."""

    def __init__(self, endpoint):
        self.real, self.endpoint, self.calls = HfApi(endpoint=endpoint), endpoint, []

    def whoami(self, token=None):
        return self.real.whoami(token=token)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return huggingface_hub.RepoUrl(f"{self.endpoint}/{repo_id}", endpoint=self.endpoint)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns, **kwargs):
        paths = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).glob("**/*") if p.is_file())
        uploaded = list(filter_repo_objects(paths, ignore_patterns=ignore_patterns + DEFAULT_IGNORE_PATTERNS))
        self.calls.append(("upload_folder", repo_id, uploaded))
        return "commit"


def test_finished_folder_pushed_later_with_its_card(work, stand_in, online_no_token, capsys):
    out = work["root"] / "finished"
    train_hf.main(argv(work, out, "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
                       "--hub_model_id", "me/tiny-mdu"))
    export = sorted(p.name for p in out.iterdir() if p.is_file())
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    expected = [n for n in export if not n.startswith("_")]
    assert files_to_push(out) == sorted(expected)  # the export, no checkpoints
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "modeling_mdu.py"} <= set(
        expected)

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "automatic-speech-recognition"
    assert "mdu-speech" in meta["tags"] and "me/tiny-mdu" in card  # the card names the Hub repo

    api = RecordingApi(stand_in)
    assert push_folder(out, "me/tiny-mdu", token="hf_write", api=api) == "commit"
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == "me/tiny-mdu" and api.calls[0][2]["exist_ok"] is True
    assert api.calls[1][1:] == ("me/tiny-mdu", sorted(expected))
    with pytest.raises(HubAccessError, match="read-only"):
        push_folder(out, "me/tiny-mdu", token="hf_read", api=RecordingApi(stand_in))

    assert hub.main([str(out), "--repo_id", "me/tiny-mdu", "--dry_run"]) == sorted(expected)
    printed = capsys.readouterr().out
    assert f"would upload {len(expected)} files" in printed and "checkpoint-" not in printed


def test_unfinished_folder_is_not_pushed(work, tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a finished export .*config.json, README.md, model.safetensors"):
        push_folder(tmp_path, "me/tiny-mdu", token="hf_write", api=RecordingApi("http://127.0.0.1:9"))
