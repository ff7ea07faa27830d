"""Pitch and loudness: the prosody that carries much of an emotion, measured for display beside the spectrogram."""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from .audio import HOP_LENGTH, N_FFT, SAMPLE_RATE, frame_dbfs

PITCH_RANGE_HZ = (65.0, 500.0)  # deep male speech to a child's or a shout's F0
PITCH_FRAME = 640  # 40 ms: YIN needs two periods of the lowest pitch
VOICED_WITHIN_DB = 30.0  # frames this far below the loudest are pauses or breath, not voice
MAX_VOICED_CROSSING_RATE = 0.25  # zero crossings per sample; above it the frame is a hiss (s, f, sh), not voice


@dataclass
class Prosody:
    seconds: np.ndarray  # (n_frames,) frame centres, HOP_LENGTH apart as the log-mel's
    pitch_hz: np.ndarray  # (n_frames,) fundamental frequency, NaN where the frame is not voiced
    loudness_db: np.ndarray  # (n_frames,) frame RMS level in dB below the loudest frame (0 at the peak)


def measure_prosody(speech: np.ndarray) -> Prosody:
    """The pitch contour (YIN, de Cheveigne & Kawahara 2002) and loudness of ``speech`` at SAMPLE_RATE.

    Frames are centred like the model's log-mel, so frame ``i`` of both lines up on a time axis.
    """
    padded = np.pad(speech, (N_FFT // 2, N_FFT // 2))  # centred frames, as torchaudio's STFT
    loudness = frame_dbfs(padded)
    n_frames = len(speech) // HOP_LENGTH + 1
    loudness = loudness[:n_frames] - loudness.max()
    # YIN at half the rate: a voice's pitch is far below 4 kHz, and it costs a third as much (same contour to 0.1%).
    half_rate = 0.5 * (speech[0 : len(speech) - 1 : 2] + speech[1::2])
    pitch = librosa.yin(
        half_rate,
        fmin=PITCH_RANGE_HZ[0],
        fmax=PITCH_RANGE_HZ[1],
        sr=SAMPLE_RATE // 2,
        frame_length=PITCH_FRAME // 2,
        hop_length=HOP_LENGTH // 2,
    )[:n_frames]
    crossings = librosa.feature.zero_crossing_rate(speech, frame_length=N_FFT, hop_length=HOP_LENGTH)[0, :n_frames]
    voiced = (loudness > -VOICED_WITHIN_DB) & (crossings < MAX_VOICED_CROSSING_RATE)
    voiced &= (pitch > PITCH_RANGE_HZ[0] * 1.05) & (pitch < PITCH_RANGE_HZ[1] * 0.95)  # YIN's bounds: no estimate
    return Prosody(
        seconds=np.arange(n_frames) * HOP_LENGTH / SAMPLE_RATE,
        pitch_hz=np.where(voiced, pitch, np.nan),
        loudness_db=loudness,
    )
