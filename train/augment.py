"""Training-time augmentation, vectorised over the batch. Never applied to validation or test audio."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

from ser_model.audio import SAMPLE_RATE


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


def add_white_noise(waveform: Tensor, snr_db: Tensor) -> Tensor:
    """Additive white Gaussian noise at ``snr_db`` (B,) relative to each clip's non-silent power.

    The power is measured over the non-zero samples, so the zero padding around a short clip does
    not lower it and the SNR is what the clip itself hears.
    """
    voiced = waveform != 0
    power = (waveform**2).sum(dim=1) / voiced.sum(dim=1).clamp(min=1)  # (B,)
    noise_power = power / 10.0 ** (snr_db / 10.0)
    return waveform + torch.randn_like(waveform) * noise_power.sqrt().unsqueeze(1)


def spec_augment(log_mel: Tensor, n_freq_masks: int, max_freq: int, n_time_masks: int, max_time: int) -> Tensor:
    """SpecAugment's frequency and time masks, filled with each clip's mean (Park et al. 2019,
    https://arxiv.org/abs/1904.08779). log_mel: (B, F, T)."""
    B, F, T = log_mel.shape
    fill = log_mel.mean(dim=(1, 2), keepdim=True)
    keep = torch.ones_like(log_mel, dtype=torch.bool)
    for size, max_width, axis in ((F, max_freq, 1), (T, max_time, 2)):
        n_masks = n_freq_masks if axis == 1 else n_time_masks
        for _ in range(n_masks):
            width = torch.randint(0, max_width + 1, (B, 1))
            start = (torch.rand(B, 1) * (size - width)).long()
            position = torch.arange(size).unsqueeze(0)  # (1, size)
            masked = (position >= start) & (position < start + width)  # (B, size)
            keep &= ~(masked.unsqueeze(2) if axis == 1 else masked.unsqueeze(1))
    return torch.where(keep, log_mel, fill)


def mixup(inputs: Tensor, targets: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor, float]:
    """Mix each example with another in the batch (Zhang et al. 2018, https://arxiv.org/abs/1710.09412).

    Returns the mixed inputs, both targets and the weight of the first."""
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(inputs.shape[0])
    return weight * inputs + (1 - weight) * inputs[order], targets, targets[order], weight
