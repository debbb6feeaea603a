"""app.py, the Space-style web demo, in a real headless Chromium (Selenium + Debian's chromium-driver).

The app runs from an exported tiny checkpoint folder with `python -I app.py` (no PYTHONPATH, this repository not
importable): the folder works as a Space. The page must show what `processor.transcribe` gives for an uploaded wav,
readable messages for bad recordings (never a traceback) while the server keeps serving, text answers that equal the
base model's with text_bypass, and the checkpoint's facts. Screenshots go to outputs/app-screenshots/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_fixtures import chirp, fitted_mel_tokenizer, write_wav
from tiny_models import perturb_added_layers, tiny_mdu, tiny_text_tokenizer

from app import write_space_files
from modeling_mdu import MDUSpeechProcessor
from modeling_mdu.hf_compat import SUPPORTED_TRANSFORMERS

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "outputs" / "app-screenshots"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def wait_for(fn, timeout=60.0, what="condition"):
    """Polls fn until it returns something true. The page re-renders while it works, so an element that went stale
    or is covered for a moment counts as not yet."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    end = time.time() + timeout
    while time.time() < end:
        try:
            value = fn()
        except (StaleElementReferenceException, ElementClickInterceptedException, NoSuchElementException):
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def click(driver, css, what):
    wait_for(lambda: driver.find_element(_by().CSS_SELECTOR, css).click() or True, what=what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space")
    model = tiny_mdu()
    perturb_added_layers(model, std=0.3)
    processor = MDUSpeechProcessor.from_model_config(model.config, fitted_mel_tokenizer(), tiny_text_tokenizer())
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_space_files(folder)
    (folder / "examples").mkdir()
    write_wav(folder / "examples" / "chirp.wav", chirp(1.0, seed=5))
    clips = tmp_path_factory.mktemp("clips")
    files = {"good": write_wav(clips / "clip.wav", chirp(0.8, seed=7)),
             "silence": write_wav(clips / "silence.wav", np.zeros(16000, dtype=np.float32)),
             "long": write_wav(clips / "ten_minutes.wav", np.full(8000 * 600, 0.1, dtype=np.float32), sr=8000)}
    (clips / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    files["corrupt"] = str(clips / "corrupt.wav")
    return folder, model, processor, files


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    folder = checkpoint[0]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", HF_HOME=str(tmp_path_factory.mktemp("hf_home")))
    log = open(tmp_path_factory.mktemp("log") / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, "-I", "app.py", "--port", str(port)], cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def up():
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"app.py exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, timeout=120, what="app.py to serve")
    yield url, proc, log
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(server[0])
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _by():
    from selenium.webdriver.common.by import By

    return By


def open_tab(driver, name):
    wait_for(lambda: [t.click() or t for t in driver.find_elements(_by().CSS_SELECTOR, "button[role=tab]")
                      if t.text == name], what=f"the {name} tab")


def textarea(driver, elem_id) -> str:
    return driver.execute_script(f"const t = document.querySelector('#{elem_id} textarea'); return t ? t.value : ''")


def upload_and_transcribe(driver, path):
    By = _by()

    def close_messages():  # earlier messages cover the page
        for close in driver.find_elements(By.CSS_SELECTOR, ".toast-close"):
            if close.is_displayed():
                close.click()
        return not toast(driver)

    def clear_recording():
        for clear in driver.find_elements(By.CSS_SELECTOR, "#audio button[aria-label=Clear]"):
            if clear.is_displayed():
                clear.click()
        return driver.find_elements(By.CSS_SELECTOR, "#audio input[type=file]")

    wait_for(close_messages, what="earlier messages to close")
    wait_for(clear_recording, what="the upload field")
    wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(path) or True,
             what="the file to be taken")
    wait_for(lambda: not driver.find_elements(By.CSS_SELECTOR, "#audio input[type=file]"), what="the upload")
    click(driver, "#transcribe", "the Transcribe button")


def toast(driver) -> str:
    return " ".join(e.text for e in driver.find_elements(_by().CSS_SELECTOR, ".toast-body"))


def test_speech_tab_shows_what_the_processor_transcribes(checkpoint, browser):
    folder, model, processor, files = checkpoint
    expected = processor.transcribe(model, [files["good"]])[0]
    units = len(processor.encode_speech(files["good"])[0])
    open_tab(browser, "Speech")
    upload_and_transcribe(browser, files["good"])
    wait_for(lambda: textarea(browser, "transcript") == expected, what="the processor's transcript in the page")
    info = wait_for(lambda: "decoded in" in browser.find_element(_by().ID, "speech_info").text
                    and browser.find_element(_by().ID, "speech_info").text, what="the decoding info")
    assert expected
    assert f"0.8 s of audio · {units} speech units" in info
    assert browser.find_elements(_by().XPATH, "//*[contains(text(), 'chirp.wav')]")  # the example clip, one click away
    browser.save_screenshot(str(SHOTS / "speech.png"))


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "Cannot read corrupt.wav as audio"),
    ("silence", "No speech found: the recording is silent"),
    ("long", "The recording is 600 s long; this demo takes up to 120 s"),
])
def test_bad_recordings_get_a_readable_message(checkpoint, browser, server, kind, message):
    open_tab(browser, "Speech")
    upload_and_transcribe(browser, checkpoint[3][kind])
    shown = wait_for(lambda: toast(browser), what=f"a message for the {kind} recording")
    assert message in shown and "Traceback" not in shown
    browser.save_screenshot(str(SHOTS / f"error-{kind}.png"))
    assert server[1].poll() is None  # the server keeps serving


def test_server_still_transcribes_after_bad_input(checkpoint, browser):
    folder, model, processor, files = checkpoint
    open_tab(browser, "Speech")
    assert textarea(browser, "transcript") == ""  # the errors left no transcript
    upload_and_transcribe(browser, files["good"])
    expected = processor.transcribe(model, [files["good"]])[0]
    wait_for(lambda: textarea(browser, "transcript") == expected, what="the processor's transcript in the page")


def test_text_tab_with_text_bypass_answers_as_the_base_model(checkpoint, browser):
    folder, model, processor, files = checkpoint
    tokenizer = processor.tokenizer
    ids = tokenizer("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_ids = model.to_text_model().generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=96,
                                                  do_sample=False, pad_token_id=processor.pad_token_id)
    expected = tokenizer.decode(base_ids[0, ids.shape[1]:], skip_special_tokens=True).strip()
    By = _by()
    open_tab(browser, "Text")
    click(browser, "#compare input", "the compare switch")
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#message textarea").send_keys("hello there") or True,
             what="the message box")
    click(browser, "#send", "the Send button")
    line = wait_for(lambda: browser.find_element(By.ID, "comparison").text, what="the answer")
    messages = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#chatbot .message")]
    assert "hello there" in messages and textarea(browser, "base_answer") == expected
    assert expected in messages and "text_bypass on: the answer is identical to the base model's answer" in line
    browser.save_screenshot(str(SHOTS / "text.png"))


def test_about_panel_shows_the_checkpoint(checkpoint, browser):
    model = checkpoint[1]
    report = model.parameter_report()
    open_tab(browser, "About")
    text = wait_for(lambda: browser.find_element(_by().ID, "about").text, what="the about panel")
    assert f"interleaved (new layers after base layers {model.config.added_after})" in text
    assert "e_branchformer" in text and f"{report['trainable']:,}" in text
    assert f"{report['total'] - report['trainable']:,}" in text and "none in the model card" in text
    browser.save_screenshot(str(SHOTS / "about.png"))


def test_space_files_and_missing_checkpoint_message(checkpoint, tmp_path):
    folder = checkpoint[0]
    assert (folder / "app.py").read_text() == (ROOT / "app.py").read_text()
    assert f"transformers{SUPPORTED_TRANSFORMERS}" in (folder / "requirements.txt").read_text()
    shutil.copyfile(ROOT / "app.py", tmp_path / "app.py")  # no checkpoint next to it, no demo output
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-I", "app.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "run `make demo` first" in proc.stderr
