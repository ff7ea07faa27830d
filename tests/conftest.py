"""Shared fixtures: synthetic speech-like audio made in the test, never audio files from the repo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ser_model import EmotionNet, EmotionRecognizer, ModelConfig  # noqa: E402

RAVDESS = ROOT.parent / "shared" / "data" / "ravdess"


def speech_like(seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0, max_hz: float = 3500.0) -> np.ndarray:
    """A voiced, syllabic signal: a gliding harmonic source under a 4 Hz syllable envelope.

    Harmonics stop below ``max_hz`` so resampling to 8 kHz and back loses nothing.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    n_harmonics = int(max_hz // 220)
    source = sum(np.sin(k * phase) / k for k in range(1, n_harmonics + 1))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5 * np.hanning(len(t)) ** 0.2
    return (0.3 * source * envelope / np.abs(source).max()).astype(np.float32)


@pytest.fixture(scope="session")
def random_model() -> EmotionNet:
    """A seeded, untrained model: invariance and shape tests do not depend on what it learnt."""
    torch.manual_seed(0)
    model = EmotionNet(ModelConfig()).eval()
    # Untrained BatchNorm statistics (0 mean, unit variance) would see dB values of -100..20; give it
    # the statistics of real input so its outputs are not saturated.
    with torch.no_grad():
        model.input_norm.running_mean.fill_(-40.0)
        model.input_norm.running_var.fill_(400.0)
    return model


@pytest.fixture(scope="session")
def random_recognizer(random_model) -> EmotionRecognizer:
    return EmotionRecognizer(random_model, device="cpu")
