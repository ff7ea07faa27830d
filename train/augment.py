"""Training-time augmentation, vectorised over the batch. Never applied to validation or test audio."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from ser_model.audio import SAMPLE_RATE, AudioError, prepare_speech, speech_span

from . import channels

NOISE_BANK_SECONDS = 8.0  # longer than any speed-perturbed RAVDESS recording (5.1 s / 0.9)


@dataclass
class ChannelConfig:
    """How often each channel degrades a training recording (0 turns it off), and how strongly."""

    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.2, 1.0)  # seconds: a furnished room to a bare classroom
    drr_db: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant ratio: across the room to close up
    noise_prob: float = 0.67  # the notebook trained on 2 noisy copies per clean clip
    noise_types: list[str] = field(default_factory=lambda: ["white", "pink", "brown", "babble"])
    snr_db: tuple[float, float] = (0.0, 30.0)
    # A curriculum over SNR: over this share of the schedule the lowest SNR drawn falls from the top of snr_db
    # to its bottom, so the model meets faint noise first and the hardest only later (0 = off: the full range
    # from the first step).
    snr_curriculum: float = 0.0
    # A microphone's own hiss, far below the voice. RAVDESS's pauses lie ~80 dB below its voices, a laptop
    # microphone's hiss 40-60 dB, and a voice recorded 40 dB too quietly keeps 16-bit rounding noise ~50 dB
    # down: a floor the 0-30 dB noise above never shows the model.
    hiss_prob: float = 0.0
    hiss_snr_db: tuple[float, float] = (35.0, 65.0)
    # A microphone's frequency response (after the room and its noise, which it hears too): the lows a laptop
    # capsule loses, the highs a cheap converter loses, and a tilt. The shipped recipe's fold models, trained
    # without it, lost 9 points when the voice below 300 Hz was cut and 6 when pink noise lay above 3.4 kHz only.
    # At 0.3 it did not change that and cost clean accuracy on folds 1-2 (docs/experiments.md); off.
    mic_prob: float = 0.0
    mic_highpass_hz: tuple[float, float] = (50.0, 400.0)  # drawn log-uniformly, as the cutoffs below
    mic_lowpass_hz: tuple[float, float] = (3000.0, 8000.0)
    mic_tilt_db: tuple[float, float] = (-3.0, 3.0)  # dB per octave
    telephone_prob: float = 0.1
    codec_prob: float = 0.1  # rows drawn from the cached MP3 / Opus copies of the unsped recording
    gain_prob: float = 0.25
    gain_db: tuple[float, float] = (-40.0, 15.0)  # quiet microphones, and hot ones that clip
    n_impulse_responses: int = 64
    n_noise_tracks: int = 16  # per colour


class ChannelAugment:
    """Degrades a batch of raw training recordings as rooms, microphones and phone lines do.

    Each row draws its own channel: room reverberation, then noise of one type, then the microphone's frequency
    response and its hiss, then a phone line, then the microphone's gain with clipping and 16-bit quantisation.
    The impulse responses and noise tracks are drawn once from ``seed`` (disjoint from the robustness
    benchmark's); every draw per batch comes from ``generator``, on the CPU, so a ``device`` (the GPU a run
    trains on) changes where the arithmetic runs but not what is drawn.
    """

    def __init__(self, config: ChannelConfig, seed: int, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        bank = torch.Generator().manual_seed(seed)
        self.impulse_responses = torch.nn.utils.rnn.pad_sequence(
            [
                channels.impulse_response(float(rt60), float(drr), bank)
                for rt60, drr in zip(
                    _uniform(config.n_impulse_responses, config.rt60, bank),
                    _uniform(config.n_impulse_responses, config.drr_db, bank),
                )
            ],
            batch_first=True,
        ).to(self.device)  # (n_irs, longest)
        n = int(NOISE_BANK_SECONDS * SAMPLE_RATE)
        self.noise_tracks = {
            colour: channels.coloured_noise((config.n_noise_tracks, n), colour, bank).to(self.device)
            for colour in channels.NOISE_EXPONENTS
            if colour in config.noise_types
        }
        if config.hiss_prob > 0:  # drawn last, so the banks above do not depend on it
            self.hiss_tracks = channels.coloured_noise((config.n_noise_tracks, n), "white", bank).to(self.device)

    def __call__(
        self, recordings: list[np.ndarray], generator: torch.Generator, progress: float = 1.0
    ) -> list[np.ndarray]:
        """The recordings, each degraded by its own draw; ``progress`` (0..1) is how far training has come."""
        config, B = self.config, len(recordings)
        lengths = torch.tensor([len(r) for r in recordings], device=self.device)
        x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(r) for r in recordings], batch_first=True).to(self.device)
        n = x.shape[1]
        valid = channels.valid_mask(lengths, n)

        def draw(prob: float) -> Tensor:
            return (torch.rand(B, generator=generator) < prob).to(self.device)

        if (rows := draw(config.reverb_prob)).any():
            which = torch.randint(len(self.impulse_responses), (int(rows.sum()),), generator=generator)
            x[rows] = channels.reverberate(x[rows], self.impulse_responses[which.to(self.device)]) * valid[rows]
        if (rows := draw(config.noise_prob)).any():
            kinds = torch.randint(len(config.noise_types), (B,), generator=generator).to(self.device)
            noise = torch.zeros_like(x)
            for k, kind in enumerate(config.noise_types):
                chosen = rows & (kinds == k)
                if not chosen.any():
                    continue
                if kind == "babble":
                    noise[chosen] = _babble_from_batch(x, chosen.nonzero().squeeze(1), generator)
                else:
                    noise[chosen] = _crops(self.noise_tracks[kind], int(chosen.sum()), n, generator)
            snr_db = torch.empty(B).uniform_(*self.snr_range(progress), generator=generator).to(self.device)
            x[rows] = channels.add_noise(x[rows], lengths[rows], noise[rows], snr_db[rows])
        if config.mic_prob > 0 and (rows := draw(config.mic_prob)).any():  # off: earlier recipes' draws unchanged
            k = int(rows.sum())
            highpass = _log_uniform(k, config.mic_highpass_hz, generator)
            lowpass = _log_uniform(k, config.mic_lowpass_hz, generator)
            tilt = _uniform(k, config.mic_tilt_db, generator)
            x[rows] = channels.microphone(x[rows], highpass, lowpass, tilt) * valid[rows]
        if config.hiss_prob > 0 and (rows := draw(config.hiss_prob)).any():  # off: earlier recipes' draws unchanged
            hiss = _crops(self.hiss_tracks, int(rows.sum()), n, generator)
            snr_db = torch.empty(int(rows.sum())).uniform_(*config.hiss_snr_db, generator=generator)
            x[rows] = channels.add_noise(x[rows], lengths[rows], hiss, snr_db)
        if (rows := draw(config.telephone_prob)).any():
            x[rows] = channels.telephone(x[rows]) * valid[rows]
        if (rows := draw(config.gain_prob)).any():
            gain_db = torch.empty(int(rows.sum())).uniform_(*config.gain_db, generator=generator)
            x[rows] = channels.to_16_bit(channels.gain_and_clip(x[rows], gain_db))
        return [row[:length].numpy() for row, length in zip(x.cpu(), lengths.tolist())]

    def snr_range(self, progress: float) -> tuple[float, float]:
        """The SNRs (dB) noise is drawn from at ``progress`` (0..1) through training, under the curriculum."""
        lowest, highest = self.config.snr_db
        if self.config.snr_curriculum <= 0:
            return lowest, highest
        reached = min(1.0, progress / self.config.snr_curriculum)
        return highest - reached * (highest - lowest), highest


def prepare_batch(degraded: list[np.ndarray], clean: list[np.ndarray]) -> list[np.ndarray]:
    """``prepare_speech`` on each degraded recording, as the app does; one it refuses (a voice drowned at
    0 dB SNR looks like steady noise) is trained on clean instead."""
    speech = []
    for noisy, original in zip(degraded, clean):
        try:
            speech.append(prepare_speech(noisy))
        except AudioError:
            speech.append(prepare_speech(original))
    return speech


def prepare_batch_with_clean(
    degraded: list[np.ndarray], clean: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`prepare_batch`'s speech, and beside each clip its clean recording cut at the same samples and levelled
    on its own voice: sample for sample, the voice the model should still hear in what it is given."""
    speech, clean_speech = [], []
    for noisy, original in zip(degraded, clean):
        clean_span, clean_gain = speech_span(original)
        try:
            span, gain = speech_span(noisy)
        except AudioError:  # as prepare_batch: a drowned voice is trained on clean
            noisy, span, gain = original, clean_span, clean_gain
        speech.append((noisy[span] * gain).astype(np.float32))
        clean_speech.append((original[span] * clean_gain).astype(np.float32))
    return speech, clean_speech


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    return torch.empty(n).uniform_(*bounds, generator=generator)


def _log_uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    return torch.exp(_uniform(n, (float(np.log(bounds[0])), float(np.log(bounds[1]))), generator))


def _crops(tracks: Tensor, n_rows: int, n: int, generator: torch.Generator) -> Tensor:
    """``n_rows`` random n-sample crops of random tracks (K, T) -> (n_rows, n), by one gather."""
    which = torch.randint(len(tracks), (n_rows, 1), generator=generator).to(tracks.device)
    start = torch.randint(tracks.shape[1] - n + 1, (n_rows, 1), generator=generator).to(tracks.device)
    return tracks[which, start + torch.arange(n, device=tracks.device)]


def _babble_from_batch(x: Tensor, rows: Tensor, generator: torch.Generator) -> Tensor:
    """For each of ``rows``, the other training recordings of the batch talking at once (len(rows), n), each
    shifted in time. Talker k of row r is row r - k (mod B), as rolling the batch by k would place it, but only
    the rows that get babble are mixed: rolling the whole batch twice over cost a quarter of augmentation."""
    B, n = x.shape
    mix = torch.zeros(len(rows), n, dtype=x.dtype, device=x.device)
    for k in range(1, min(channels.BABBLE_TALKERS, B - 1) + 1):
        shift = int(torch.randint(n, (1,), generator=generator))
        talkers = x[(rows - k) % B]
        mix += (talkers / _rms(talkers)).roll(shift, dims=1)
    return mix / _rms(mix)


def _rms(x: Tensor) -> Tensor:
    """Each row's root mean square (R, 1), kept off zero so a silent row divides safely."""
    return x.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-8)


def place_in_window(speech: list[np.ndarray], length: int, rng: np.random.Generator | None) -> Tensor:
    """Fit clips of any length into (B, length) windows.

    With ``rng`` a longer clip is cropped and a shorter one placed at a random offset (time shift);
    without it both are centred, exactly as inference does.
    """
    batch = np.zeros((len(speech), length), dtype=np.float32)
    for row, clip in zip(batch, speech):
        n = len(clip)
        if n >= length:
            start = rng.integers(0, n - length + 1) if rng is not None else (n - length) // 2
            row[:] = clip[start : start + length]
        else:
            offset = rng.integers(0, length - n + 1) if rng is not None else (length - n) // 2
            row[offset : offset + n] = clip
    return torch.from_numpy(batch)


def change_speed(speech: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """Play each clip ``factor`` times faster, raising its pitch as much (Ko et al. 2015,
    https://www.danielpovey.com/files/2015_interspeech_augmentation.pdf): new voices from the same actors."""
    if factor == 1.0:
        return speech
    # Treat the clip as recorded at factor x the rate and bring it back to SAMPLE_RATE. A rate in whole
    # hundreds keeps a large common factor with 16 kHz, so the resampling kernel stays small.
    as_if_recorded_at = round(SAMPLE_RATE * factor, -2)
    return [AF.resample(torch.from_numpy(clip), as_if_recorded_at, SAMPLE_RATE).numpy() for clip in speech]


def warp_frequencies(log_mel: Tensor, factors: Tensor, boundary_hz: float = 4800.0) -> Tensor:
    """Vocal tract length perturbation (Jaitly and Hinton 2013, https://www.cs.toronto.edu/~hinton/absps/perturb.pdf):
    each clip's spectrum stretched by its factor (> 1 moves formants and harmonics up), tempo untouched.

    The warp is linear up to ``boundary_hz`` (scaled by the factor when it compresses) and then bends so that
    Nyquist stays Nyquist, so no band is left empty. log_mel: (B, F, T) in dB from the model's frontend (HTK mel
    scale, 0 Hz to Nyquist); factors: (B,). Each output band reads the input at its warped-back frequency,
    interpolated between neighbouring bands; silent padding stays silent."""
    B, F, _ = log_mel.shape
    nyquist = SAMPLE_RATE / 2
    mel_points = torch.linspace(0.0, float(_hz_to_mel(torch.tensor(nyquist))), F + 2, dtype=torch.float64)
    centres = 700.0 * (10.0 ** (mel_points[1:-1] / 2595.0) - 1.0)  # (F,) Hz, as torchaudio's filterbank
    alpha = factors.to(torch.float64).unsqueeze(1)  # (B, 1)
    bend = boundary_hz * alpha.clamp(max=1.0) / alpha  # input frequency where the warp turns
    upper = nyquist - (nyquist - centres) * (nyquist - bend) / (nyquist - alpha * bend)
    source = torch.where(centres <= alpha * bend, centres / alpha, upper)  # (B, F) Hz each band reads
    position = (_hz_to_mel(source) / mel_points[1] - 1.0).clamp(0, F - 1)  # fractional band index
    below = position.floor().long().clamp(max=F - 2)
    weight = (position - below).to(log_mel.dtype).unsqueeze(2)  # (B, F, 1)
    lower_band = log_mel.gather(1, below.unsqueeze(2).expand_as(log_mel))
    upper_band = log_mel.gather(1, (below + 1).unsqueeze(2).expand_as(log_mel))
    return torch.lerp(lower_band, upper_band, weight)


def _hz_to_mel(hz: Tensor) -> Tensor:
    """The HTK mel scale, torchaudio's default."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


# The masks training draws with --spec-augment: up to 8 of the 64 mel bands, up to 25 frames (250 ms).
SPEC_AUGMENT_FREQ_MASKS = 2
SPEC_AUGMENT_MAX_BANDS = 8
SPEC_AUGMENT_MAX_FRAMES = 25


def spec_augment(
    log_mel: Tensor, n_freq_masks: int, max_freq: int, n_time_masks: int, max_time: int, floor_share: float = 0.0
) -> Tensor:
    """SpecAugment's frequency and time masks, filled with each clip's mean (Park et al. 2019,
    https://arxiv.org/abs/1904.08779). log_mel: (B, F, T).

    A mean-filled band looks like a band loud noise has filled; a phone line or a codec instead leaves bands
    empty. On ``floor_share`` of the clips the frequency masks are filled with the clip's floor (its lowest
    value) instead, as such a channel leaves them.
    """
    B, F, T = log_mel.shape
    fill = log_mel.mean(dim=(1, 2), keepdim=True)
    keep_bands = torch.ones(B, F, 1, dtype=torch.bool, device=log_mel.device)
    keep_frames = torch.ones(B, 1, T, dtype=torch.bool, device=log_mel.device)
    for size, max_width, n_masks, keep in (
        (F, max_freq, n_freq_masks, keep_bands),
        (T, max_time, n_time_masks, keep_frames),
    ):
        for _ in range(n_masks):
            width = torch.randint(0, max_width + 1, (B, 1))
            start = (torch.rand(B, 1) * (size - width)).long()
            position = torch.arange(size).unsqueeze(0)  # (1, size)
            masked = ((position >= start) & (position < start + width)).to(log_mel.device)  # (B, size)
            keep &= ~masked.view(keep.shape)
    band_fill = fill
    if floor_share > 0:  # drawn only when on, so runs without it keep their random stream
        at_floor = (torch.rand(B, 1, 1) < floor_share).to(log_mel.device)
        band_fill = torch.where(at_floor, log_mel.amin(dim=(1, 2), keepdim=True), fill)
    return torch.where(keep_frames, torch.where(keep_bands, log_mel, band_fill), fill)


def mixup(inputs: Tensor, targets: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mix each example with another in the batch (Zhang et al. 2018, https://arxiv.org/abs/1710.09412).

    Returns the mixed inputs, both targets and the weight of the first."""
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(inputs.shape[0])
    return weight * inputs + (1 - weight) * inputs[order], targets, targets[order], weight
