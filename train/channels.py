"""What a room, a microphone and a network do to a voice, as seeded functions of raw recordings.

Training augments with these and the robustness benchmark scores with them, so both mean the same thing by
"10 dB of pink noise" or "a room with RT60 0.6 s". Each takes the recording *before*
``ser_model.audio.prepare_speech`` trims and levels it, as a classroom recording reaches the app, and keeps
its length. Batched functions take (B, n) float tensors at SAMPLE_RATE and the valid length of each row.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import Tensor

from ser_model.audio import HOP_LENGTH, MAX_FLOOR_DEPTH_DB, N_FFT, SAMPLE_RATE, SPEECH_RANGE_SHARE

NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # noise power falls as 1 / f^exponent
BABBLE_TALKERS = 4  # few enough that single words stand out, as in a classroom
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # the G.712 voice band
TELEPHONE_RATE = 8000
PCM16_MAX = 32767  # full scale of 16-bit PCM: one rounding step is 1 / PCM16_MAX
MICROPHONE_GUARD = 4096  # samples: a 50-Hz high-pass rings for a few of its 20-ms periods
CODECS = {  # soundfile's lowest bitrate for each: about 24 kbit/s MP3 and 12 kbit/s Opus for 16 kHz speech
    "mp3": dict(format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT", compression_level=0.99),
    "opus": dict(format="OGG", subtype="OPUS", compression_level=0.99),
}


def valid_mask(lengths: Tensor, n: int) -> Tensor:
    """(B, n) True where a row holds audio, False on the zero padding after its ``lengths`` samples."""
    return torch.arange(n, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def speech_power(waveform: Tensor, lengths: Tensor) -> Tensor:
    """Mean power (B,) of each recording's voiced frames: the frames ``prepare_speech`` levels by.

    The S of every SNR here, so "10 dB" means 10 dB below the voice, however much silence surrounds it.
    """
    power = F.avg_pool1d(waveform.unsqueeze(1) ** 2, N_FFT, HOP_LENGTH).squeeze(1)  # (B, n_frames)
    frame_db = 10.0 * torch.log10(power + 1e-12)
    n_frames = ((lengths.to(power.device) - N_FFT) // HOP_LENGTH + 1).clamp(min=1)
    valid = torch.arange(power.shape[1], device=power.device).unsqueeze(0) < n_frames.unsqueeze(1)
    floor = torch.nanquantile(frame_db.masked_fill(~valid, torch.nan), 0.1, dim=1, keepdim=True)
    peak = torch.nanquantile(frame_db.masked_fill(~valid, torch.nan), 0.99, dim=1, keepdim=True)
    floor = torch.maximum(floor, peak - MAX_FLOOR_DEPTH_DB)
    voiced = valid & (frame_db > floor + SPEECH_RANGE_SHARE * (peak - floor))
    return (power * voiced).sum(dim=1) / voiced.sum(dim=1).clamp(min=1)


def coloured_noise(shape: tuple[int, int], colour: str, generator: torch.Generator) -> Tensor:
    """Gaussian noise (B, n) of unit power whose spectrum falls as 1/f^exponent (white 0, pink 1, brown 2)."""
    noise = torch.randn(shape, generator=generator)
    exponent = NOISE_EXPONENTS[colour]
    if exponent:
        frequencies = torch.fft.rfftfreq(shape[-1], 1 / SAMPLE_RATE).clamp(min=20.0)  # flat below 20 Hz: no DC drift
        noise = torch.fft.irfft(torch.fft.rfft(noise) * frequencies ** (-exponent / 2), n=shape[-1])
    return noise / noise.pow(2).mean(dim=-1, keepdim=True).sqrt()


def babble(talkers: Tensor) -> Tensor:
    """Several voices at once (K, n) -> (n,): each talker at equal power, the sum at unit power."""
    talkers = talkers / talkers.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-8)
    mix = talkers.sum(dim=0)
    return mix / mix.pow(2).mean().sqrt().clamp(min=1e-8)


def add_noise(waveform: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Add unit-power ``noise`` (B, n) at ``snr_db`` (B,) below each recording's voice, over its valid samples."""
    lengths, snr_db = lengths.to(waveform.device), snr_db.to(waveform.device)
    scale = (speech_power(waveform, lengths) / 10.0 ** (snr_db / 10.0)).sqrt()
    return waveform + noise * scale.unsqueeze(1) * valid_mask(lengths, waveform.shape[1])


def impulse_response(rt60: float, drr_db: float, generator: torch.Generator) -> Tensor:
    """A room: the direct sound, then a diffuse tail of noise decaying 60 dB in ``rt60`` seconds.

    ``drr_db`` is the direct-to-reverberant energy ratio: about +5 dB for a laptop at arm's length in a
    classroom, below 0 dB across the room. The tail starts 2.5 ms after the direct sound (the first reflection).
    """
    n = int(rt60 * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    tail = torch.randn(n, generator=generator) * 10.0 ** (-3.0 * t / rt60)  # -60 dB of amplitude at t = rt60
    tail[: int(0.0025 * SAMPLE_RATE)] = 0.0
    tail *= 10.0 ** (-drr_db / 20.0) / tail.pow(2).sum().sqrt()
    tail[0] = 1.0
    return tail


def reverberate(waveform: Tensor, responses: Tensor) -> Tensor:
    """Convolve each recording (B, n) with its room's impulse response (B, m); the tail past n is cut."""
    n = waveform.shape[1]
    size = _fast_fft_size(n + responses.shape[1] - 1)  # no wrap-around; 3-10x faster than an arbitrary size
    spectrum = torch.fft.rfft(waveform, size) * torch.fft.rfft(responses, size)
    return torch.fft.irfft(spectrum, size)[:, :n]


def _fast_fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes whose FFTs split into small factors."""
    best = 1 << (n - 1).bit_length()
    power_of_5 = 1
    while power_of_5 < best:
        size = power_of_5
        while size < best:
            candidate = size
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            size *= 3
        power_of_5 *= 5
    return best


def telephone(waveform: Tensor) -> Tensor:
    """A phone line: the 300-3400 Hz band, 8 kHz sampling and 8-bit mu-law (G.711), back at SAMPLE_RATE."""
    n = waveform.shape[1]
    narrow = AF.resample(waveform, SAMPLE_RATE, TELEPHONE_RATE)
    spectrum = torch.fft.rfft(narrow)
    frequencies = torch.fft.rfftfreq(narrow.shape[1], 1 / TELEPHONE_RATE, device=narrow.device)
    in_band = (frequencies >= TELEPHONE_BAND_HZ[0]) & (frequencies <= TELEPHONE_BAND_HZ[1])
    narrow = torch.fft.irfft(spectrum * in_band, n=narrow.shape[1])
    narrow = AF.mu_law_decoding(AF.mu_law_encoding(narrow.clamp(-1.0, 1.0), 256), 256)
    wide = AF.resample(narrow, TELEPHONE_RATE, SAMPLE_RATE)
    return F.pad(wide, (0, max(n - wide.shape[1], 0)))[:, :n]


def microphone(waveform: Tensor, highpass_hz: Tensor, lowpass_hz: Tensor, tilt_db_per_octave: Tensor) -> Tensor:
    """A microphone's frequency response, per recording (B,): a 2nd-order high-pass (a laptop's small capsule
    loses the lows, the pitch of a male voice among them), a 4th-order low-pass (cheap converters and codecs
    lose the highs), and a tilt of so many dB per octave about 1 kHz. Zero phase, applied in the frequency domain;
    each cutoff is where the response is 3 dB down."""
    n = waveform.shape[1]
    size = _fast_fft_size(n + MICROPHONE_GUARD)  # the filter's ringing either side wraps into the guard, not the voice
    frequencies = torch.fft.rfftfreq(size, 1 / SAMPLE_RATE, device=waveform.device).clamp(min=1.0)[None]
    highpass, lowpass = highpass_hz.to(waveform.device)[:, None], lowpass_hz.to(waveform.device)[:, None]
    tilt = tilt_db_per_octave.to(waveform.device)[:, None]
    gain = (1.0 + (highpass / frequencies) ** 4).rsqrt() * (1.0 + (frequencies / lowpass) ** 8).rsqrt()
    gain = gain * 10.0 ** (tilt * torch.log2(frequencies.clamp(min=20.0) / 1000.0) / 20.0)
    return torch.fft.irfft(torch.fft.rfft(waveform, size) * gain, size)[:, :n]


def gain_and_clip(waveform: Tensor, gain_db: Tensor) -> Tensor:
    """A microphone's level (B,) dB, and the clipping of a converter driven past full scale."""
    return (waveform * 10.0 ** (gain_db.to(waveform.device) / 20.0).unsqueeze(1)).clamp(-1.0, 1.0)


def to_16_bit(waveform: Tensor) -> Tensor:
    """Rounded to 16-bit PCM steps, as a recorder stores it: a quiet voice's pauses become a few steps or zero."""
    return torch.round(waveform * PCM16_MAX) / PCM16_MAX


def codec(samples: np.ndarray, name: str) -> np.ndarray:
    """Encode one recording with a low-bitrate codec ("mp3" or "opus") and decode it, same length and alignment."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, **CODECS[name])
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    # MP3 encoders prepend a delay of about a thousand samples; find it and take it off.
    n = len(samples)
    lag = _lag(samples, decoded, max_lag=3000)
    aligned = decoded[lag : lag + n]
    return np.pad(aligned, (0, n - len(aligned))).astype(np.float32)


def surround_with_noise(samples: np.ndarray, seconds: float, snr_db: float, generator: torch.Generator) -> np.ndarray:
    """``seconds`` of room (pink) noise before and after the voice, and under it, as a long recording has."""
    pad = int(seconds * SAMPLE_RATE)
    padded = torch.from_numpy(np.pad(samples, (pad, pad)))[None]
    lengths = torch.tensor([padded.shape[1]])
    noise = coloured_noise(tuple(padded.shape), "pink", generator)
    voice_power = speech_power(torch.from_numpy(samples)[None], torch.tensor([len(samples)]))
    scale = (voice_power / 10.0 ** (snr_db / 10.0)).sqrt()
    return (padded + noise * scale.unsqueeze(1) * valid_mask(lengths, padded.shape[1]))[0].numpy()


def _lag(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    """The delay of ``delayed`` behind ``reference``, 0..max_lag samples, by cross-correlation."""
    n = len(reference) + len(delayed)
    correlation = np.fft.irfft(np.fft.rfft(delayed, n) * np.conj(np.fft.rfft(reference, n)), n)
    return int(np.argmax(correlation[: max_lag + 1]))
