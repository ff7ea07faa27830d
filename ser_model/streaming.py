"""Live takes: microphone chunks in, an emotion meter about twice a second out, with bounded memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio import MAX_SECONDS, SAMPLE_RATE, AudioError, frame_dbfs, load_audio, prepare_speech
from .inference import EmotionRecognizer

UPDATE_SECONDS = 0.5  # a new meter reading once this much new audio has arrived
SILENT_BELOW_PEAK_DB = 30.0  # a window whose loudest frame is this far below the take's loudest is a pause


@dataclass
class LiveUpdate:
    seconds: float  # the end of the scored window, from the start of the take
    probabilities: dict[str, float] | None  # None while the speaker is silent (or has not spoken yet)


class LiveTake:
    """The state of one live take: the latest MAX_SECONDS of audio and the latest meter readings.

    Memory stays bounded however long the stream runs: the audio is a fixed ring buffer and the timeline a
    fixed-length deque. Each update scores the latest model window through ``EmotionRecognizer.predict``'s
    own path (trim, level, model), so the meter and the final analysis hear the same thing.
    """

    def __init__(self, recognizer: EmotionRecognizer, max_seconds: float = MAX_SECONDS):
        self.recognizer = recognizer
        self.window = recognizer.model.config.n_samples
        self.buffer = np.zeros(int(max_seconds * SAMPLE_RATE), dtype=np.float32)
        self.received = 0  # samples since the take began; the buffer holds the latest len(buffer) of them
        self.scored_at = 0
        self.loudest_db = -np.inf
        self.timeline: deque[LiveUpdate] = deque(maxlen=int(max_seconds / UPDATE_SECONDS))

    def add(self, audio: tuple[int, np.ndarray]) -> LiveUpdate | None:
        """Append a ``(sample_rate, samples)`` chunk; returns a new reading when one is due, else None."""
        chunk = load_audio(audio)
        self._append(chunk)
        self.loudest_db = max(self.loudest_db, float(frame_dbfs(chunk).max()))
        if self.received - self.scored_at < UPDATE_SECONDS * SAMPLE_RATE:
            return None
        self.scored_at = self.received
        update = LiveUpdate(self.received / SAMPLE_RATE, self._score(self.latest(self.window)))
        self.timeline.append(update)
        return update

    def latest(self, n: int | None = None) -> np.ndarray:
        """The latest ``n`` samples of the take (all that is kept, without ``n``), oldest first."""
        kept = min(self.received, len(self.buffer))
        n = kept if n is None else min(n, kept)
        # Only the n samples asked for are copied: rolling the whole 5-minute buffer took ~40 ms per reading.
        return self.buffer[(self.received - n + np.arange(n)) % len(self.buffer)]

    def _append(self, chunk: np.ndarray) -> None:
        chunk = chunk[-len(self.buffer) :]
        start = self.received % len(self.buffer)
        first = min(len(chunk), len(self.buffer) - start)
        self.buffer[start : start + first] = chunk[:first]
        self.buffer[: len(chunk) - first] = chunk[first:]
        self.received += len(chunk)

    def _score(self, window: np.ndarray) -> dict[str, float] | None:
        if frame_dbfs(window).max() < self.loudest_db - SILENT_BELOW_PEAK_DB:
            return None  # a pause between sentences: show silence, not an emotion
        try:
            return self.recognizer.predict_speech(prepare_speech(window)).probabilities
        except AudioError:
            return None
