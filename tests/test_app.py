"""The Gradio app end to end: a real app.py process, driven by headless Chromium and by gradio_client.

Screenshots go to test-artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from .conftest import RAVDESS, ROOT, speech_like

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """python app.py with no arguments, offline, as on a fresh machine."""
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = os.environ | {
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env.pop("SER_MODEL_REPO", None)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while "Running on" not in log.read_text():
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"app.py did not start:\n{log.read_text()}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
        process.terminate()
        process.wait(timeout=30)
    # Gradio logs the user errors it shows (gr.Error); anything else is a crash.
    text = log.read_text()
    assert text.count("Traceback") == text.count("gradio.exceptions.Error"), text


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    speech = np.concatenate([np.zeros(8000, np.float32), speech_like(2.5), np.zeros(8000, np.float32)])
    at_48k = AF.resample(torch.from_numpy(speech), 16000, 48000).numpy()
    sf.write(folder / "speech.wav", speech, 16000)
    sf.write(folder / "mic.wav", np.stack([at_48k, at_48k], axis=1), 48000, subtype="PCM_16")  # what a mic gives
    (folder / "notes.txt").write_text("Not audio at all, just a teacher's notes.")
    (folder / "notes.wav").write_text("Not audio either, whatever its name says.")
    return folder


@pytest.fixture(scope="module")
def browser(clips):
    playwright_api = pytest.importorskip("playwright.sync_api")
    assert os.path.exists(CHROMIUM), "Debian's chromium is needed: apt-get install -y chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        fake_microphone = [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={clips / 'mic.wav'}",
        ]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_microphone)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, permissions=["microphone"])
    page = context.new_page()
    page.goto(app_url)
    page.get_by_role("button", name="Recognise emotion").wait_for(timeout=30_000)
    yield page
    context.close()


def _upload(page, path):
    page.get_by_label("Upload file").click()
    page.locator("input[type=file]").set_input_files(str(path))


def _wait_for_verdict(page):
    page.wait_for_function("() => !document.querySelector('.verdict').innerText.includes('waiting')", timeout=60_000)
    return page.locator(".verdict").inner_text()


def _assert_results_rendered(page):
    verdict = _wait_for_verdict(page)
    assert any(emotion in verdict for emotion in EMOTIONS)
    assert any(form in verdict for form in ("% confident", "not sure", "utterances"))  # one verdict, unsure, several
    probabilities = page.locator(".gradio-container").inner_text()
    assert all(emotion in probabilities for emotion in EMOTIONS)
    for plot in ("#spectrogram", "#attention"):
        figure = page.locator(f"{plot} img").first
        figure.wait_for(timeout=30_000)
        assert figure.evaluate("img => img.complete && img.naturalWidth") > 300  # a rendered figure, not an icon


def test_upload_shows_emotion_probabilities_spectrogram_and_attention(page, clips):
    _upload(page, clips / "speech.wav")
    _assert_results_rendered(page)
    page.screenshot(path=str(SCREENSHOTS / "upload.png"), full_page=True)


def test_microphone_recording_gets_a_prediction(page):
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3500)
    page.get_by_role("button", name="Stop", exact=True).first.click()
    _assert_results_rendered(page)
    page.screenshot(path=str(SCREENSHOTS / "microphone.png"), full_page=True)


def test_non_audio_upload_shows_an_error_and_the_app_keeps_working(page, clips):
    # The browser refuses a file that is not audio by type; the server refuses one that only says it is.
    _upload(page, clips / "notes.txt")
    page.get_by_text("Invalid file type: notes.txt", exact=False).first.wait_for(timeout=30_000)
    page.locator("input[type=file]").set_input_files(str(clips / "notes.wav"))
    page.get_by_text("Could not read 'notes.wav' as audio", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "error.png"), full_page=True)
    page.get_by_label("Clear").first.click()
    _upload(page, clips / "speech.wav")
    _assert_results_rendered(page)


def test_an_example_voice_runs_with_one_click(page):
    page.get_by_text("angry (actor 05)").first.click()
    _assert_results_rendered(page)
    assert "angry" in page.locator(".verdict").inner_text()  # a clip of the training actors: it should know it
    alt = page.locator("#spectrogram img").first.get_attribute("alt")
    assert "pitch" in alt and "loudness" in alt  # drawn on the spectrogram's time axis
    page.screenshot(path=str(SCREENSHOTS / "example.png"), full_page=True)


def test_the_page_fits_a_phone_screen(browser, app_url):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(app_url)
    page.get_by_text("angry (actor 05)").first.click()
    _assert_results_rendered(page)
    page.screenshot(path=str(SCREENSHOTS / "phone.png"), full_page=True)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
    figure_width = page.locator("#spectrogram img").first.evaluate("img => img.getBoundingClientRect().width")
    assert figure_width <= 390  # the figure scales down to the screen
    context.close()


def _start_live_take(page) -> list[str]:
    """Press Record as a person would, and again if the first press found Gradio's recorder not ready.

    Gradio's streaming recorder registers its WAV encoder without awaiting it, so a press within moments of the
    page loading can fail in the page ("audio/wav is not supported") and stream nothing; a person presses Stop and
    Record again. Returns the page errors of the take that started.
    """
    live = page.locator("#live-tab")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    for _ in range(3):
        live.get_by_role("button", name="Record", exact=True).click()
        page.wait_for_timeout(1000)
        if not any("MediaRecorder" in error or "constructor" in error for error in errors):
            break
        live.get_by_role("button", name="Stop", exact=True).first.click()
        live.get_by_role("button", name="Record", exact=True).wait_for()
        errors.clear()
    return errors


def test_live_meter_follows_a_take_and_the_full_analysis_follows_it(page):
    page.get_by_role("tab", name="Live").click()
    live = page.locator("#live-tab")
    errors = _start_live_take(page)
    readings = lambda: int(page.locator("#live-strip .live-strip").get_attribute("data-readings"))  # noqa: E731
    page.wait_for_timeout(5000)  # with the second above, a 6-s take from Chromium's fake microphone
    assert readings() >= 3, f"the live meter did not update during the take; page errors: {errors}"
    assert page.locator("#live-meter").inner_text().strip()  # the meter shows a reading
    live.get_by_role("button", name="Stop", exact=True).first.click()
    _assert_results_rendered(page)
    page.screenshot(path=str(SCREENSHOTS / "live.png"), full_page=True)


def test_compare_shows_two_verdicts_side_by_side(page, tmp_path):
    from ser_model import load_audio

    for name, clip in (("a.wav", "03-01-03-02-01-01-01"), ("b.wav", "03-01-04-02-01-01-01")):  # happy, then sad
        sf.write(tmp_path / name, load_audio(RAVDESS / "Actor_01" / f"{clip}.flac"), 16000)
    page.get_by_role("tab", name="Compare two takes").click()
    for take in ("a", "b"):
        page.locator(f"#take-{take}").get_by_label("Upload file").click()
        page.locator(f"#take-{take} input[type=file]").set_input_files(str(tmp_path / f"{take}.wav"))
        page.locator(f"#take-{take}").get_by_label("Clear").wait_for(timeout=30_000)  # uploaded
    page.locator("#compare-tab").get_by_role("button", name="Compare").click()
    page.locator("#comparison .verdict").nth(1).wait_for(timeout=60_000)
    assert page.locator("#comparison .verdict").count() == 2
    assert page.locator("#comparison tr").count() == 9  # a header and the 8 emotions
    assert page.locator("#comparison img").count() == 2
    page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)


def test_four_sentences_show_four_utterances(page, tmp_path):
    """Four RAVDESS sentences in four emotions (from ../shared, joined here, never committed), 1 s apart."""
    from ser_model import load_audio, prepare_speech

    names = ["03-01-03-02-01-01-01", "03-01-04-02-01-01-02", "03-01-05-02-02-01-03", "03-01-06-02-02-01-04"]
    pause = 1e-3 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    parts = [pause]
    for name in names:
        parts += [prepare_speech(load_audio(RAVDESS / f"Actor_{name[-2:]}" / f"{name}.flac")), pause]
    sf.write(tmp_path / "four_sentences.wav", np.concatenate(parts), 16000)
    _upload(page, tmp_path / "four_sentences.wav")
    _wait_for_verdict(page)
    assert page.locator(".verdict li").count() == 4
    page.locator("#timeline").wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "utterances.png"), full_page=True)


def test_utterances_api_returns_each_utterance(app_url, clips):
    from gradio_client import Client, handle_file

    result = Client(app_url, verbose=False).predict(handle_file(str(clips / "speech.wav")), api_name="/utterances")
    (utterance,) = result  # one sentence
    assert {"start", "end", "label", "probabilities"} <= set(utterance) and 0.3 < utterance["start"] < utterance["end"]
    assert utterance["label"] == max(utterance["probabilities"], key=utterance["probabilities"].get)


def test_gradio_client_api_returns_eight_probabilities(app_url, clips):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    result = client.predict(handle_file(str(clips / "speech.wav")), api_name="/predict")
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert set(confidences) == set(EMOTIONS)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] == max(confidences, key=confidences.get)


def test_examples_offer_one_ravdess_clip_per_emotion():
    code = "import json, sys, app; print(json.dumps(app.example_clips(sys.argv[1])))"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(RAVDESS)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    clips = [row[0] for row in json.loads(result.stdout.strip().splitlines()[-1])]
    emotions = sorted(int(os.path.basename(path).split("-")[2]) for path in clips)
    assert emotions == list(range(1, 9))


def _import_app(**env_overrides) -> subprocess.CompletedProcess:
    """Import app.py in a fresh process (it loads its model at import) and print where the model came from."""
    code = "import app; print('SOURCE', app.model_source); print('FALLBACK', app.hub_fallback)"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"} | env_overrides
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_the_hub_repo_is_tried_first_and_the_shipped_checkpoint_used_offline():
    result = _import_app(SER_MODEL_REPO=None)  # the default: the project's Hub repo
    assert result.returncode == 0, result.stderr
    assert "SOURCE the shipped checkpoint" in result.stdout
    assert "FALLBACK the Hub repo `ser-parallel/ser-parallel-ravdess` was not used: it could not be reached" in (
        result.stdout
    )
    assert "falling back to the shipped checkpoint" in result.stderr  # and the log says so


def test_an_empty_repo_setting_skips_the_hub():
    result = _import_app(SER_MODEL_REPO="", HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "FALLBACK no Hub repo is configured" in result.stdout and "falling back" not in result.stderr


def test_a_hub_that_never_answers_times_out_to_the_shipped_checkpoint():
    """A server that accepts the connection and then says nothing, as behind a captive portal."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.perf_counter()
        result = _import_app(
            SER_MODEL_REPO="ser-test/silent", HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint, SER_HUB_TIMEOUT="2"
        )
        elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "FALLBACK the Hub repo `ser-test/silent` was not used: it could not be reached" in result.stdout
    assert elapsed < 60  # the 2-s timeout, plus starting Python and loading the model; not minutes


def test_a_hub_without_the_repo_is_named_as_such():
    """A Hub that answers 404 (a typo in the repo id, or the weights not published yet)."""
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _import_app(
            SER_MODEL_REPO="ser-test/typo", HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}"
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "FALLBACK the Hub repo `ser-test/typo` was not used: it has no usable weights there" in result.stdout


def test_an_upload_over_the_size_limit_is_refused_at_the_door(app_url, tmp_path):
    import httpx

    huge = tmp_path / "huge.wav"
    with open(huge, "wb") as f:
        f.truncate(1024**3)  # 1 GB, sparse on disk
    with open(huge, "rb") as f:
        response = httpx.post(
            f"{app_url}/gradio_api/upload", files={"files": ("huge.wav", f, "audio/wav")}, timeout=120
        )
    assert response.status_code == 413, response.text[:300]
    assert "60" in response.text  # the message names the limit
