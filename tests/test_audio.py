"""ser_model.audio: decoding, resampling, trimming, levelling, and every bad input a user can send."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from ser_model import AudioError, load_audio, prepare_speech
from ser_model.audio import HOP_LENGTH, MAX_SECONDS, N_SAMPLES, SAMPLE_RATE, pad_or_trim, window_starts
from train import channels

from .conftest import speech_like


def resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    return AF.resample(torch.from_numpy(x), orig, new).numpy()


def test_load_audio_reads_files_of_each_format(tmp_path):
    speech = speech_like(1.0)
    for name, kwargs in [("a.wav", {}), ("a.flac", {}), ("a.ogg", {"format": "OGG", "subtype": "VORBIS"})]:
        sf.write(tmp_path / name, speech, SAMPLE_RATE, **kwargs)
        loaded = load_audio(tmp_path / name)
        assert loaded.dtype == np.float32 and loaded.shape == speech.shape
        assert np.corrcoef(loaded, speech)[0, 1] > 0.99


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 44101])
def test_load_audio_resamples_any_rate_to_16k(rate):
    speech = speech_like(1.0)
    other = resample(speech, SAMPLE_RATE, rate) if rate != 44101 else resample(speech, SAMPLE_RATE, 44100)
    loaded = load_audio((rate, other))
    assert abs(len(loaded) - len(speech)) <= 2


def test_int16_stereo_and_channels_first_arrays_equal_mono_float():
    speech = speech_like(1.0)
    as_int16 = np.round(speech * 32767).astype(np.int16)
    stereo = np.stack([as_int16, as_int16], axis=1)  # (n, 2) as Gradio gives it
    np.testing.assert_allclose(load_audio((SAMPLE_RATE, stereo)), speech, atol=1e-4)
    np.testing.assert_allclose(load_audio(stereo.T, SAMPLE_RATE), speech, atol=1e-4)  # (2, n)
    unsigned = (speech * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio((SAMPLE_RATE, unsigned)), speech, atol=1e-2)


def test_prepare_speech_trims_room_noise_at_both_ends():
    rng = np.random.default_rng(1)
    speech = speech_like(2.0)
    noise = lambda seconds: 0.003 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    recording = np.concatenate([noise(2.5), speech + noise(2.0), noise(3.0)])
    trimmed = prepare_speech(recording)
    assert abs(len(trimmed) / SAMPLE_RATE - 2.0) < 0.4, len(trimmed) / SAMPLE_RATE


def test_prepare_speech_is_level_invariant():
    speech = speech_like(2.0)
    reference = prepare_speech(speech)
    for gain_db in (-30, -10, 6):
        np.testing.assert_allclose(prepare_speech(speech * 10 ** (gain_db / 20)), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gain_db", [-30, -40, -50])
def test_a_quiet_voice_is_accepted_and_prepared_like_the_original(gain_db):
    rng = np.random.default_rng(0)
    recording = np.concatenate([np.zeros(8000), speech_like(2.0), np.zeros(8000)]).astype(np.float32)
    recording += 1e-4 * rng.standard_normal(len(recording)).astype(np.float32)  # a quiet room under it
    # Quieter, then stored as 16-bit PCM as a recorder would: the room noise rounds to a few LSB or to zero.
    quiet = np.round(recording * 10 ** (gain_db / 20) * 32767).astype(np.int16)
    reference, prepared = prepare_speech(recording), prepare_speech(load_audio((SAMPLE_RATE, quiet)))
    assert abs(len(prepared) - len(reference)) <= 2 * HOP_LENGTH
    n = min(len(prepared), len(reference))
    assert np.corrcoef(prepared[:n], reference[:n])[0, 1] > 0.99


STEADY_SOUNDS = {
    "digital silence": (np.zeros(3 * SAMPLE_RATE), "silent"),
    "mains hum": (0.1 * np.sin(2 * np.pi * 50 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE), "No voice"),
    "a tone": (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE), "No voice"),
    "white noise": (0.05 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE), "No voice"),
    "quiet fan (pink noise)": (
        1e-3 * channels.coloured_noise((1, 10 * SAMPLE_RATE), "pink", torch.Generator().manual_seed(0))[0].numpy(),
        "No voice",
    ),
}


@pytest.mark.parametrize("case", STEADY_SOUNDS, ids=list(STEADY_SOUNDS))
def test_silence_hum_and_noise_without_a_voice_are_refused(case):
    audio, message = STEADY_SOUNDS[case]
    with pytest.raises(AudioError, match=message):
        prepare_speech(load_audio((SAMPLE_RATE, audio.astype(np.float32))))


def _in_pink_noise(recording: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    x = torch.from_numpy(recording.astype(np.float32))[None]
    noise = channels.coloured_noise(tuple(x.shape), "pink", torch.Generator().manual_seed(seed))
    return channels.add_noise(x, torch.tensor([x.shape[1]]), noise, torch.tensor([snr_db]))[0].numpy()


def test_a_sentence_deep_in_noise_is_accepted_whole():
    # One stressed syllable 12 dB over the rest: at 5 dB SNR only it clears half the recording's range.
    sentence = speech_like(2.0)
    t = np.arange(len(sentence)) / SAMPLE_RATE
    sentence = sentence * np.where((t >= 0.75) & (t < 1.0), 10 ** (12 / 20), 1.0).astype(np.float32)
    recording = _in_pink_noise(np.concatenate([np.zeros(8000), sentence, np.zeros(8000)]), snr_db=5.0)
    assert len(prepare_speech(recording)) / SAMPLE_RATE > 1.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_cough_in_noise_is_still_too_short(seed):
    noise = 0.01 * channels.coloured_noise((1, 3 * SAMPLE_RATE), "pink", torch.Generator().manual_seed(seed))[0]
    cough = np.zeros(3 * SAMPLE_RATE, np.float32)
    cough[20000 : 20000 + int(0.15 * SAMPLE_RATE)] = speech_like(0.15, seed=seed) / 3
    with pytest.raises(AudioError, match="at least"):
        prepare_speech(noise.numpy() + cough)


def test_pad_or_trim_and_windows():
    x = np.arange(10, dtype=np.float32)
    assert pad_or_trim(x, 14).tolist() == [0, 0] + list(range(10)) + [0, 0]
    assert pad_or_trim(x, 4).tolist() == [3, 4, 5, 6]
    assert pad_or_trim(torch.from_numpy(x), 12).shape == (12,)
    n = int(7.2 * SAMPLE_RATE)
    starts = window_starts(n)
    assert starts[0] == 0 and np.all(starts % HOP_LENGTH == 0)
    assert 0 <= n - (starts[-1] + N_SAMPLES) < HOP_LENGTH  # the last window ends with the audio
    assert np.all(np.diff(starts) <= N_SAMPLES)  # no gaps between windows
    assert window_starts(N_SAMPLES).tolist() == [0]


# Every bad input gives one exception type with a message a user can act on.
BAD_ARRAYS = {
    "empty": ((SAMPLE_RATE, np.zeros(0, np.float32)), "empty"),
    "silent": ((SAMPLE_RATE, np.zeros(SAMPLE_RATE * 2, np.float32)), "silent"),
    "too short": ((SAMPLE_RATE, speech_like(0.15)), "at least"),
    "too long": ((SAMPLE_RATE, np.zeros(int((MAX_SECONDS + 1) * SAMPLE_RATE), np.float32)), "limit"),
    "nan": ((SAMPLE_RATE, np.full(SAMPLE_RATE, np.nan, np.float32)), "NaN"),
    "inf": ((SAMPLE_RATE, np.r_[speech_like(1.0), np.inf].astype(np.float32)), "NaN or infinity"),
    "3-D": ((SAMPLE_RATE, np.zeros((2, 2, 2), np.float32)), "1-D"),
    "complex": ((SAMPLE_RATE, np.zeros(100, np.complex64)), "integers or floats"),
    "bad rate": ((0, speech_like(1.0)), "not a real audio rate"),
    "no rate": ((None, speech_like(1.0)), "sample rate"),
    "none": (None, "No audio"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=list(BAD_ARRAYS))
def test_bad_arrays_raise_audio_error_with_a_message(case):
    audio, message = BAD_ARRAYS[case]
    with pytest.raises(AudioError, match=message):
        prepare_speech(load_audio(audio))


def test_bad_files_raise_audio_error_with_a_message(tmp_path):
    (tmp_path / "notes.txt").write_text("this is not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "good.wav", speech_like(2.0), SAMPLE_RATE)
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "good.wav").read_bytes()[:30])
    (tmp_path / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    cases = {
        "notes.txt": "Could not read",
        "empty.wav": "Could not read",
        "truncated.wav": "Could not read|damaged",
        "random.wav": "Could not read",
        "missing.wav": "No audio file",
    }
    for name, message in cases.items():
        with pytest.raises(AudioError, match=message):
            load_audio(tmp_path / name)


def test_too_long_file_is_refused_before_decoding(tmp_path):
    # A 6-minute file at 1 kHz is small on disk; the duration check reads only the header.
    sf.write(tmp_path / "long.wav", np.zeros(int(360 * 1000), np.float32), 1000)
    with pytest.raises(AudioError, match="limit is 5 minutes"):
        load_audio(tmp_path / "long.wav")
