"""ser_model.inference: the predict API on the shipped checkpoint, with the inputs browsers send."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from ser_model import DEFAULT_CHECKPOINT, AudioError, EmotionRecognizer, resolve_device
from ser_model.audio import SAMPLE_RATE
from ser_model.model import condition_log_mel

from .conftest import ROOT, speech_like


@pytest.fixture(scope="module")
def recognizer() -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(DEFAULT_CHECKPOINT, device="cpu")


def assert_same_prediction(a, b, atol=0.03):
    assert a.label == b.label
    np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=atol)


def test_prediction_fields(recognizer):
    prediction = recognizer.predict((SAMPLE_RATE, speech_like(2.0)))
    config = recognizer.model.config
    assert prediction.label in config.labels and list(prediction.probabilities) == config.labels
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.log_mel.shape == (config.n_mels, config.n_frames)
    assert prediction.attentions.shape == (config.n_layers, config.n_heads, config.n_tokens, config.n_tokens)
    assert prediction.window_probabilities.shape == (1, len(config.labels))


def test_the_spectrogram_shown_is_the_one_the_network_reads(recognizer):
    # The shipped model floors each window's log-mel 50 dB below its peak; the figure must not show more.
    config = recognizer.model.config
    assert config.dynamic_range_db == 50
    prediction = recognizer.predict((SAMPLE_RATE, speech_like(2.0)))
    with torch.inference_mode():
        heard = recognizer.model.frontend(torch.from_numpy(prediction.speech)[None])
        read = condition_log_mel(heard, config)[0].numpy()
    np.testing.assert_allclose(prediction.log_mel, read, atol=1e-4)
    assert prediction.log_mel.min() == pytest.approx(prediction.log_mel.max() - 50, abs=1e-3)


def test_long_audio_gives_a_timeline_and_the_mean_as_verdict(recognizer):
    audio = np.concatenate([speech_like(3.0, seed=s) for s in range(4)])  # 12 s
    prediction = recognizer.predict((SAMPLE_RATE, audio))
    n = len(prediction.window_starts)
    assert n == 4 and prediction.window_probabilities.shape == (n, 8)  # back-to-back 3-s windows
    np.testing.assert_allclose(prediction.window_probabilities.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(
        list(prediction.probabilities.values()), prediction.window_probabilities.mean(0), atol=1e-6
    )


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    """A real voice: the shipped example clip "angry" (RAVDESS actor 05), 16 kHz, as the model was trained on.
    Invariance is checked on speech, where it matters; the synthetic signals of these tests are far from it."""
    from ser_model import load_audio

    return load_audio(ROOT / "examples" / "03-01-05-02-01-01-05.flac")


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_other_rates_match_16k_mono(recognizer, voice, rate):
    speech = voice
    other = AF.resample(torch.from_numpy(speech), SAMPLE_RATE, rate).numpy()
    assert_same_prediction(recognizer.predict((rate, other)), recognizer.predict((SAMPLE_RATE, speech)))


def test_stereo_int16_matches_mono_float(recognizer, voice):
    speech = voice
    stereo_int16 = np.repeat(np.round(speech * 32767).astype(np.int16)[:, None], 2, axis=1)
    assert_same_prediction(
        recognizer.predict((SAMPLE_RATE, stereo_int16)),
        recognizer.predict((SAMPLE_RATE, speech)),  # int16 rounding moves the trim by a frame at most
    )


@pytest.mark.parametrize("gain_db", [-30, -12, 12])
def test_prediction_does_not_depend_on_level(recognizer, gain_db):
    speech = speech_like(2.0)
    louder = speech * 10 ** (gain_db / 20)  # +12 dB peaks above full scale, as a float array may
    assert_same_prediction(
        recognizer.predict((SAMPLE_RATE, louder)), recognizer.predict((SAMPLE_RATE, speech)), atol=1e-3
    )


def test_prediction_does_not_depend_on_room_noise_before_and_after(recognizer, voice):
    rng = np.random.default_rng(3)
    hum = lambda n: 0.001 * rng.standard_normal(n).astype(np.float32)  # noqa: E731  (-60 dBFS, a quiet room)
    voice = voice + hum(len(voice))  # the room is there while they speak, too
    recording = np.concatenate([hum(2 * SAMPLE_RATE), voice, hum(int(2.5 * SAMPLE_RATE))])
    assert_same_prediction(
        recognizer.predict((SAMPLE_RATE, recording)), recognizer.predict((SAMPLE_RATE, voice)), atol=0.05
    )


@pytest.mark.parametrize(
    "audio, message",
    [
        ((SAMPLE_RATE, np.zeros(0, np.float32)), "empty"),
        ((SAMPLE_RATE, np.zeros(3 * SAMPLE_RATE, np.float32)), "silent"),
        ((SAMPLE_RATE, speech_like(0.1)), "at least"),
        ((SAMPLE_RATE, np.full(SAMPLE_RATE, np.nan, np.float32)), "NaN"),
    ],
    ids=["empty", "silent", "too short", "nan"],
)
def test_predict_refuses_bad_audio(recognizer, audio, message):
    with pytest.raises(AudioError, match=message):
        recognizer.predict(audio)


def test_device_auto_picks_an_available_device():
    device = resolve_device("auto")
    assert device.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device.type == "cpu"


def test_four_sentences_with_pauses_are_four_utterances(recognizer):
    """Four RAVDESS sentences (from ../shared, joined here) with 1-s pauses: one utterance per sentence."""
    from ser_model import load_audio, prepare_speech

    from .conftest import RAVDESS

    names = ["03-01-03-02-01-01-01", "03-01-04-02-01-01-02", "03-01-05-02-02-01-03", "03-01-06-02-02-01-04"]
    sentences = [prepare_speech(load_audio(RAVDESS / f"Actor_{n[-2:]}" / f"{n}.flac")) for n in names]
    pause = 1e-3 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)  # a quiet room
    recording, spans = [pause], []
    for sentence in sentences:
        start = sum(len(part) for part in recording) / SAMPLE_RATE
        spans.append((start, start + len(sentence) / SAMPLE_RATE))
        recording += [sentence, pause]
    prediction = recognizer.predict((SAMPLE_RATE, np.concatenate(recording)))
    assert len(prediction.utterances) == 4
    for utterance, (start, end) in zip(prediction.utterances, spans):
        overlaps = [min(utterance.end, e) - max(utterance.start, s) > 0 for s, e in spans]
        assert overlaps.count(True) == 1 and min(utterance.end, end) - max(utterance.start, start) > 0
        assert utterance.label in utterance.probabilities
        assert sum(utterance.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_one_sentence_is_one_utterance_with_the_recordings_verdict(recognizer):
    recording = np.concatenate([np.zeros(SAMPLE_RATE), speech_like(2.0), np.zeros(SAMPLE_RATE)]).astype(np.float32)
    prediction = recognizer.predict((SAMPLE_RATE, recording))
    (utterance,) = prediction.utterances
    assert utterance.label == prediction.label and utterance.probabilities == prediction.probabilities
    assert 0.8 <= utterance.start < 1.1 and 2.9 < utterance.end <= 3.2


def test_calibration_scales_the_logits_and_marks_weak_verdicts(random_model):
    from dataclasses import replace

    from ser_model import EmotionNet, EmotionRecognizer

    audio = (SAMPLE_RATE, speech_like(2.0))
    plain = EmotionRecognizer(random_model, device="cpu").predict(audio)
    calibrated_model = EmotionNet(replace(random_model.config, temperature=2.0, not_sure_below=0.99)).eval()
    calibrated_model.load_state_dict(random_model.state_dict())
    calibrated = EmotionRecognizer(calibrated_model, device="cpu").predict(audio)
    assert calibrated.label == plain.label  # a temperature never changes the ranking
    assert calibrated.probabilities[calibrated.label] < plain.probabilities[plain.label]  # only the confidence
    assert plain.sure and not calibrated.sure and not calibrated.utterances[0].sure


def test_calibrate_fits_a_temperature_on_out_of_fold_predictions(tmp_path):
    from train.calibrate import calibrate, main, read_predictions

    # An overconfident model: right 60% of the time, always ~95% sure.
    rng = np.random.default_rng(0)
    labels = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    rows = ["path,actor,fold,true,predicted," + ",".join(f"p_{label}" for label in labels)]
    for i in range(400):
        true = rng.integers(8)
        guess = true if rng.random() < 0.6 else rng.integers(8)
        p = np.full(8, 0.05 / 7)
        p[guess] = 0.95
        rows.append(f"c{i}.wav,{i % 20},{i % 5 + 1},{labels[true]},{labels[guess]}," + ",".join(f"{x:.4f}" for x in p))
    (tmp_path / "predictions_actors.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "config.json").write_text('{"n_mels": 64}')
    report = calibrate(*read_predictions(tmp_path / "predictions_actors.csv")[:3])
    assert report["temperature"] > 1.5 and report["ece_after"] < report["ece_before"] / 2
    assert main(["--checkpoint", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["temperature"] == report["temperature"] and config["not_sure_below"] == 0.5 and config["n_mels"] == 64
