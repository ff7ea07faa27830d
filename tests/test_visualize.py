"""ser_model.prosody and ser_model.visualize: the pitch and loudness a student reads, and the figures that show them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ser_model.audio import SAMPLE_RATE
from ser_model.prosody import measure_prosody
from ser_model.visualize import attention_rollout, render_attention_maps, render_spectrogram, to_jpeg

from .conftest import speech_like


def gliding_voice(start_hz: float, end_hz: float, seconds: float = 2.0) -> np.ndarray:
    """A harmonic voice whose pitch glides from ``start_hz`` to ``end_hz``, with a silent second after it."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = np.linspace(start_hz, end_hz, len(t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 10)) * 0.2
    return np.concatenate([voice, np.zeros(SAMPLE_RATE)]).astype(np.float32)


def test_pitch_follows_a_glide_and_is_absent_in_silence():
    prosody = measure_prosody(gliding_voice(120, 240))
    assert len(prosody.seconds) == len(prosody.pitch_hz) == len(prosody.loudness_db) == 3 * SAMPLE_RATE // 160 + 1
    voiced = prosody.seconds < 1.9
    expected = np.interp(prosody.seconds[voiced], [0, 2.0], [120, 240])
    error = np.abs(prosody.pitch_hz[voiced] - expected) / expected
    assert np.nanmedian(error) < 0.02 and np.isnan(prosody.pitch_hz[voiced]).mean() < 0.1
    assert np.all(np.isnan(prosody.pitch_hz[prosody.seconds > 2.1]))  # silence has no pitch


def test_loudness_is_relative_to_the_loudest_frame():
    voice = gliding_voice(150, 150)
    loud, quiet = measure_prosody(voice), measure_prosody(voice * 0.01)
    assert loud.loudness_db.max() == pytest.approx(0.0)
    np.testing.assert_allclose(loud.loudness_db[:150], quiet.loudness_db[:150], atol=0.01)  # level does not matter
    assert loud.loudness_db[-50:].max() < -40  # the silent second


def test_figures_are_images_that_encode(random_recognizer):
    prediction = random_recognizer.predict((SAMPLE_RATE, speech_like(2.0)))
    spectrogram, attention = render_spectrogram(prediction), render_attention_maps(prediction)
    for image in (spectrogram, attention):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.shape[1] >= 600
        assert to_jpeg(image)[:2] == b"\xff\xd8"  # a JPEG
    assert len(np.unique(spectrogram.reshape(-1, 3), axis=0)) > 100  # the heatmap is painted, not blank


def test_concurrent_requests_draw_on_their_own_canvases(random_recognizer):
    """Each worker thread has its own prepared figure: figures drawn at once equal figures drawn alone."""
    predictions = [random_recognizer.predict((SAMPLE_RATE, speech_like(2.0, seed=s))) for s in range(4)]
    alone = [render_spectrogram(p) for p in predictions]
    together: dict[int, np.ndarray] = {}

    def draw(i: int) -> None:
        for _ in range(5):
            together[i] = render_spectrogram(predictions[i])

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        np.testing.assert_array_equal(together[i], alone[i])


def test_attention_rollout_is_a_distribution_over_tokens(random_recognizer):
    prediction = random_recognizer.predict((SAMPLE_RATE, speech_like(2.0)))
    relevance = attention_rollout(prediction.attentions)
    assert relevance.shape == (prediction.attentions.shape[-1],) and relevance.sum() == pytest.approx(1.0)
    assert np.all(relevance > 0)
