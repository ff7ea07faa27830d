"""Audio in, model-ready speech out: the one place that decodes, resamples, trims and levels audio.

Training and the app both go through :func:`load_audio` and :func:`prepare_speech`, so the model
always sees audio prepared the same way.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

# hard-coded audio hyperparameters
SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms analysis window
HOP_LENGTH = 160  # 10 ms between frames
CLIP_SECONDS = 3.0  # one model window; RAVDESS sentences last 1.5-2.5 s once trimmed
N_SAMPLES = int(CLIP_SECONDS * SAMPLE_RATE)  # 48000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH + 1  # 301 mel frames in a window (centred STFT)
WINDOW_HOP_SECONDS = 3.0  # long recordings are scored in back-to-back windows: a minute costs 20

MIN_SPEECH_SECONDS = 0.3  # less than this is too little voice to judge an emotion from
MAX_SECONDS = 300.0  # five minutes; longer uploads are refused before they are decoded
DIGITAL_SILENCE_DBFS = -100.0  # below this nothing was recorded (16-bit audio's last bit is -90 dB): a muted mic
# Voice is judged against the recording's own noise floor, not an absolute level, so a quiet voice far from a
# laptop microphone counts. A hum or a tone varies by 0 dB between 25-ms frames, white and pink noise by 1-6 dB;
# a voice rises 40-70 dB over its own pauses (RAVDESS), and 11 dB or more under pink noise at 5 dB SNR.
# (Brown noise, all rumble, varies by 10-13 dB and passes for a voice.)
MIN_VOICE_RANGE_DB = 8.0
SPEECH_RANGE_SHARE = 0.5  # frames louder than noise floor + this share of (peak - floor) count as voice
# A voice deep in noise (pink noise at 5 dB SNR) clears half its range only in its loudest syllable or two. Where
# that leaves no utterance, frames above this lower share count instead, if an utterance then holds at least
# MIN_VOICED_IN_NOISE_SECONDS of them: each of the 11 RAVDESS sentences that the robustness benchmark's white and
# pink noise hid this way then spans 1.1-2.2 s (0.34 s or more of it voiced), as its clean copy does, while a
# 0.15-s cough in pink noise, its noise crossing the lower line here and there, holds at most 0.17 s.
NOISY_SPEECH_RANGE_SHARE = 0.3
MIN_VOICED_IN_NOISE_SECONDS = 0.25
# A floor further below the peak than this is taken as this far: how much quieter a silence is says nothing
# about where the voice starts, and a quiet recording's silences round to digital zeros in 16-bit files.
MAX_FLOOR_DEPTH_DB = 50.0
TRIM_MARGIN_SECONDS = 0.1  # kept either side of the voiced region so onsets are not clipped
MIN_PAUSE_SECONDS = 0.7  # a silence this long ends an utterance (it splits 6 of the 1,200 RAVDESS sentences)
TARGET_DBFS = -20.0  # the RMS level voiced audio is scaled to, so the input level does not matter

SUPPORTED_FORMATS = "WAV, FLAC, OGG/Vorbis, MP3, AIFF"

AudioInput = str | os.PathLike | tuple[int, np.ndarray] | np.ndarray


class AudioError(ValueError):
    """Audio that cannot be used for a prediction; the message says why in plain English."""


def load_audio(audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
    """Decode, downmix and resample audio to mono float32 at :data:`SAMPLE_RATE`.

    Parameters
    ----------
    audio:
        A path to an audio file, a ``(sample_rate, samples)`` pair as ``gr.Audio`` returns it, or a
        bare array (then ``sample_rate`` is required). Arrays may be int16/int32/uint8 PCM or float,
        shaped ``(n,)``, ``(n, channels)`` or ``(channels, n)``.
    sample_rate:
        The rate of a bare array.

    Returns
    -------
    np.ndarray, shape (n_samples,), float32 at SAMPLE_RATE.

    Raises
    ------
    AudioError
        For a missing, undecodable, empty, too long or non-finite input.
    """
    if audio is None:
        raise AudioError("No audio was given. Upload a file or record your voice.")
    if isinstance(audio, (str, os.PathLike)):
        samples, sample_rate = _read_file(Path(audio))
    else:
        if isinstance(audio, tuple):
            if len(audio) != 2:
                raise AudioError("Audio arrays must come as a (sample_rate, samples) pair.")
            sample_rate, samples = audio
        else:
            samples = audio
        if sample_rate is None:
            raise AudioError("An audio array needs its sample rate.")
        samples = _to_float_mono(np.asarray(samples))
    return _resample(samples, int(sample_rate))


def prepare_speech(samples: np.ndarray, activity: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Trim leading and trailing non-speech and scale the voice to :data:`TARGET_DBFS`.

    A browser recording starts and ends with room noise and arrives at any level; after this the
    model sees the same voiced audio at the same level either way.

    Parameters
    ----------
    samples: np.ndarray, shape (n,), mono float32 at SAMPLE_RATE (from :func:`load_audio`).
    activity: the recording's :func:`voice_activity`, when the caller has it already.

    Returns
    -------
    np.ndarray, shape (m,), m <= n, float32.

    Raises
    ------
    AudioError
        If the audio is digital silence, a steady sound with no voice above it, or holds less than
        :data:`MIN_SPEECH_SECONDS` of voice. How loud the voice is does not matter.
    """
    span, gain = speech_span(samples, activity)
    return (samples[span] * gain).astype(np.float32)


def speech_span(samples: np.ndarray, activity: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[slice, float]:
    """Where :func:`prepare_speech` cuts ``samples``, and the gain that levels what it keeps. Raises as it does."""
    frame_db, voiced = activity if activity is not None else voice_activity(samples)
    first, last = np.flatnonzero(voiced)[[0, -1]]
    if _seconds(first, last) < MIN_SPEECH_SECONDS:
        raise AudioError(_too_short_message(_seconds(first, last)))
    return _span_and_gain(samples, frame_db, voiced, first, last)


def split_utterances(
    samples: np.ndarray, activity: tuple[np.ndarray, np.ndarray] | None = None
) -> list[tuple[float, float, np.ndarray]]:
    """The utterances of a recording: voice separated by pauses of at least :data:`MIN_PAUSE_SECONDS`.

    Returns ``(start_seconds, end_seconds, speech)`` for each, in order, the speech cut and levelled as
    :func:`prepare_speech` does a whole recording. Stretches of voice shorter than :data:`MIN_SPEECH_SECONDS`
    (a cough, a click) are left out. ``activity`` is the recording's :func:`voice_activity`, when the caller has
    it already. Raises :class:`AudioError` as :func:`prepare_speech` does.
    """
    frame_db, voiced = activity if activity is not None else voice_activity(samples)
    long_enough = _utterances(voiced)
    if not long_enough:
        raise AudioError(_too_short_message(max(_seconds(r[0], r[-1]) for r in _voiced_runs(voiced))))
    utterances = []
    for run in long_enough:
        span, gain = _span_and_gain(samples, frame_db, voiced, run[0], run[-1])
        speech = (samples[span] * gain).astype(np.float32)
        utterances.append((span.start / SAMPLE_RATE, span.stop / SAMPLE_RATE, speech))
    return utterances


def voice_activity(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's level in dBFS and whether it is voice, judged against the recording's own floor and peak.

    Raises :class:`AudioError` for digital silence, a recording too short to judge, or a steady sound.
    """
    frame_db = frame_dbfs(samples)
    if frame_db.max() < DIGITAL_SILENCE_DBFS:
        raise AudioError("The audio is silent: the microphone recorded nothing. Check that it is on and not muted.")
    if len(samples) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
        raise AudioError(_too_short_message(len(samples) / SAMPLE_RATE))
    floor, peak = np.percentile(frame_db, 10), frame_db.max()
    if peak - floor < MIN_VOICE_RANGE_DB:
        raise AudioError(
            "No voice was found: the audio is a steady sound (noise, hum or a tone) with nothing rising above it. "
            "Speak a sentence close to the microphone."
        )
    peak = np.percentile(frame_db, 99)  # the voice's peak: a single click must not set it
    floor = max(floor, peak - MAX_FLOOR_DEPTH_DB)
    voiced = frame_db > floor + SPEECH_RANGE_SHARE * (peak - floor)
    if not _utterances(voiced):
        in_noise = frame_db > floor + NOISY_SPEECH_RANGE_SHARE * (peak - floor)
        min_frames = MIN_VOICED_IN_NOISE_SECONDS * SAMPLE_RATE / HOP_LENGTH
        if any(len(run) >= min_frames for run in _utterances(in_noise)):
            voiced = in_noise
    return frame_db, voiced


def _voiced_runs(voiced: np.ndarray) -> list[np.ndarray]:
    """The voiced frames' indices, split at pauses of at least MIN_PAUSE_SECONDS."""
    frames = np.flatnonzero(voiced)
    if len(frames) == 0:
        return []
    pause_frames = int(MIN_PAUSE_SECONDS * SAMPLE_RATE / HOP_LENGTH)
    return np.split(frames, np.flatnonzero(np.diff(frames) > pause_frames) + 1)


def _utterances(voiced: np.ndarray) -> list[np.ndarray]:
    """The voiced runs long enough to judge an emotion from (MIN_SPEECH_SECONDS)."""
    return [r for r in _voiced_runs(voiced) if _seconds(r[0], r[-1]) >= MIN_SPEECH_SECONDS]


def _seconds(first: int, last: int) -> float:
    """How long frames ``first``..``last`` last."""
    return (last - first + 1) * HOP_LENGTH / SAMPLE_RATE


def _span(first: int, last: int, n_samples: int) -> tuple[int, int]:
    """The samples of frames ``first``..``last``, with TRIM_MARGIN_SECONDS either side so onsets are not clipped."""
    margin = int(TRIM_MARGIN_SECONDS * SAMPLE_RATE)
    return max(first * HOP_LENGTH - margin, 0), min((last + 1) * HOP_LENGTH + N_FFT + margin, n_samples)


def _span_and_gain(
    samples: np.ndarray, frame_db: np.ndarray, voiced: np.ndarray, first: int, last: int
) -> tuple[slice, float]:
    start, stop = _span(first, last, len(samples))
    # Level from the voiced frames only, so pauses and leftover noise do not set the gain.
    voiced_power = np.mean(10.0 ** (frame_db[first : last + 1][voiced[first : last + 1]] / 10.0))
    return slice(start, stop), 10.0 ** (TARGET_DBFS / 20.0) / math.sqrt(voiced_power)


def pad_or_trim(samples: np.ndarray | torch.Tensor, length: int = N_SAMPLES, *, center: bool = True):
    """Zero-pad or cut the last axis to ``length`` samples, keeping the middle when ``center``."""
    n = samples.shape[-1]
    if n > length:
        start = (n - length) // 2 if center else 0
        return samples[..., start : start + length]
    if n < length:
        left = (length - n) // 2 if center else 0
        widths = [(0, 0)] * (samples.ndim - 1) + [(left, length - n - left)]
        if isinstance(samples, torch.Tensor):
            return torch.nn.functional.pad(samples, (left, length - n - left))
        return np.pad(samples, widths)
    return samples


def window_starts(
    n_samples: int, window: int = N_SAMPLES, hop: int = int(WINDOW_HOP_SECONDS * SAMPLE_RATE)
) -> np.ndarray:
    """First sample of each ``window``-long window over ``n_samples`` of audio, ``hop`` apart.

    Starts are multiples of HOP_LENGTH, so each window is a slice of one log-mel of the whole recording;
    the last window ends within one HOP_LENGTH of the end. Audio of one window or less has one start, 0.
    """
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    last = (n_samples - window) // HOP_LENGTH * HOP_LENGTH
    return np.asarray(sorted(set(range(0, last, hop)) | {last}), dtype=np.int64)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise AudioError(f"No audio file at {path}.")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"Could not read '{path.name}' as audio. Supported formats: {SUPPORTED_FORMATS}.") from e
    if info.samplerate > 0 and info.frames / info.samplerate > MAX_SECONDS:
        raise AudioError(_too_long_message(info.frames / info.samplerate))
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"'{path.name}' is damaged or truncated and could not be decoded.") from e
    return _to_float_mono(samples), sample_rate


def _to_float_mono(samples: np.ndarray) -> np.ndarray:
    if samples.size == 0:
        raise AudioError("The audio is empty: it contains no samples.")
    if samples.ndim == 2:
        # Gradio and soundfile give (samples, channels); torchaudio-style arrays are (channels, samples).
        if samples.shape[0] <= 8 < samples.shape[1]:
            samples = samples.T
    elif samples.ndim != 1:
        raise AudioError(f"Audio must be 1-D (mono) or 2-D (multi-channel); got shape {samples.shape}.")
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        offset = (int(info.max) + int(info.min) + 1) / 2  # 128 for uint8 PCM, 0 for signed
        samples = (samples.astype(np.float64) - offset) / (int(info.max) - offset + 1)
    elif not np.issubdtype(samples.dtype, np.floating):
        raise AudioError(f"Audio samples must be integers or floats, not {samples.dtype}.")
    if not np.all(np.isfinite(samples)):
        raise AudioError("The audio contains invalid samples (NaN or infinity).")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return samples.astype(np.float32)


def _resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if not 1000 <= sample_rate <= 384000:
        raise AudioError(f"A sample rate of {sample_rate} Hz is not a real audio rate.")
    if len(samples) / sample_rate > MAX_SECONDS:
        raise AudioError(_too_long_message(len(samples) / sample_rate))
    if sample_rate == SAMPLE_RATE:
        return samples
    # A rate sharing no large factor with 16 kHz (e.g. 44101 Hz) would need a huge sinc kernel;
    # snapping it to the nearest 100 Hz changes pitch by < 0.3%, far below what the model hears.
    if math.gcd(sample_rate, SAMPLE_RATE) < 20:
        sample_rate = max(round(sample_rate, -2), 100)
    resampled = AF.resample(torch.from_numpy(samples), sample_rate, SAMPLE_RATE)
    return resampled.numpy()


def frame_dbfs(samples: np.ndarray) -> np.ndarray:
    """Level of each N_FFT-long frame, HOP_LENGTH apart, in dB relative to full scale."""
    if len(samples) < N_FFT:
        samples = np.pad(samples, (0, N_FFT - len(samples)))
    # Frame energies from a running sum of squares: O(n) and no (frames x N_FFT) copy for long audio.
    cumulative = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    starts = np.arange(0, len(samples) - N_FFT + 1, HOP_LENGTH)
    power = (cumulative[starts + N_FFT] - cumulative[starts]) / N_FFT
    return 10.0 * np.log10(power + 1e-12)


def _too_short_message(seconds: float) -> str:
    return (
        f"The audio holds only {seconds:.2f} s of voice; at least {MIN_SPEECH_SECONDS:.1f} s is needed. "
        "Record a whole sentence."
    )


def _too_long_message(seconds: float) -> str:
    return (
        f"The audio is {seconds / 60:.1f} minutes long; the limit is {MAX_SECONDS / 60:.0f} minutes. "
        "Upload a shorter clip."
    )
