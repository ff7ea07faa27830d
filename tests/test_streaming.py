"""ser_model.streaming: a live take's meter, its pauses, and its memory over a long stream."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from ser_model.audio import SAMPLE_RATE
from ser_model.streaming import UPDATE_SECONDS, LiveTake

from .conftest import speech_like


def chunks(audio: np.ndarray, rate: int = 48000, seconds: float = 0.5):
    """What the browser sends: 0.5-s int16 chunks at 48 kHz."""
    at_rate = AF.resample(torch.from_numpy(audio), SAMPLE_RATE, rate).numpy()
    step = int(seconds * rate)
    for start in range(0, len(at_rate), step):
        yield rate, np.round(at_rate[start : start + step] * 32767).astype(np.int16)


def test_the_meter_reads_twice_a_second_and_shows_pauses_as_silence(random_recognizer):
    take = LiveTake(random_recognizer)
    room = lambda s: 1e-4 * np.random.default_rng(0).standard_normal(int(s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    audio = np.concatenate([speech_like(3.0), room(3.0), speech_like(3.0, seed=1)])
    updates = [u for chunk in chunks(audio) if (u := take.add(chunk)) is not None]
    assert len(updates) == pytest.approx(9.0 / UPDATE_SECONDS, abs=1)
    readings = {round(u.seconds, 1): u.probabilities for u in updates}
    assert readings[3.0] is not None and sum(readings[3.0].values()) == pytest.approx(1.0, abs=1e-5)
    assert readings[6.0] is None  # the last 3 s are the pause
    assert readings[9.0] is not None
    np.testing.assert_allclose(take.latest(), audio, atol=2e-3)  # the whole take, back at 16 kHz


def test_a_ten_minute_stream_keeps_memory_flat(random_recognizer):
    take = LiveTake(random_recognizer, max_seconds=60.0)
    minute = np.tile(speech_like(3.0), 20)
    feed = lambda: [take.add(chunk) for chunk in chunks(minute, rate=SAMPLE_RATE)]  # noqa: E731
    feed()  # the first minute fills the buffer and the timeline
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(9):  # nine more minutes
        feed()
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert grown < 1_000_000, f"memory grew by {grown / 1e6:.1f} MB over nine minutes"
    assert len(take.latest()) == 60 * SAMPLE_RATE and len(take.timeline) == take.timeline.maxlen
    np.testing.assert_allclose(take.latest(3 * SAMPLE_RATE), minute[-3 * SAMPLE_RATE :], atol=1e-4)  # 16-bit chunks
