"""train.denoise: the training-only decoder that predicts the clean log-mel from the Transformer's tokens."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ser_model import EmotionNet
from ser_model.audio import frame_dbfs, prepare_speech
from ser_model.model import ModelConfig
from train.augment import ChannelAugment, ChannelConfig, prepare_batch, prepare_batch_with_clean
from train.data import parse_ravdess
from train.denoise import DB_PER_UNIT, TARGET_RANGE_DB, CleanSpeechDecoder, clean_target, denoising_loss
from train.train import fit, load_corpus

from .test_channels import recording
from .test_train import NO_CHANNELS, RAVDESS_DIR, tiny_config


def test_clean_target_pools_each_token_as_the_branch_reads_it_and_floors_silence():
    log_mel = torch.full((1, 3, 8), -100.0)  # digital silence, 4 frames a token
    log_mel[0, 0, 1] = 10.0  # one loud frame in token 0
    log_mel[0, 1, 6] = -20.0  # a quieter one in token 1
    target = clean_target(log_mel, time_pool=4)
    assert target.shape == (1, 3, 2)
    floor = (10.0 - TARGET_RANGE_DB) / DB_PER_UNIT
    expected = torch.tensor([[[10.0 / DB_PER_UNIT, floor], [floor, -20.0 / DB_PER_UNIT], [floor, floor]]])
    torch.testing.assert_close(target, expected)


def test_the_decoder_reads_tokens_and_its_loss_vanishes_at_the_target():
    config = ModelConfig(d_model=32, n_mels=16, time_pool=4)
    decoder = CleanSpeechDecoder(config)
    tokens = torch.randn(2, 10, 32)
    assert decoder(tokens).shape == (2, 16, 10)
    clean_log_mel = 30.0 * torch.randn(2, 16, 40) - 40.0
    target = clean_target(clean_log_mel, 4)
    assert denoising_loss(target, clean_log_mel, 4).item() == 0.0
    off_by_10_db = denoising_loss(target + 1.0, clean_log_mel, 4)
    assert off_by_10_db.item() == pytest.approx(1.0)


def test_prepare_batch_with_clean_gives_the_model_what_prepare_batch_does_and_the_voice_beneath_it():
    clean = [recording(seconds=1.8, seed=seed) for seed in range(3)]
    augment = ChannelAugment(ChannelConfig(reverb_prob=0, noise_prob=1, noise_types=["pink"], snr_db=(5, 5)), seed=0)
    degraded = augment(clean, torch.Generator().manual_seed(0))
    speech, clean_speech = prepare_batch_with_clean(degraded, clean)
    for heard, expected in zip(speech, prepare_batch(degraded, clean)):
        np.testing.assert_array_equal(heard, expected)  # the model hears what it always did
    for heard, voice, original in zip(speech, clean_speech, clean):
        assert len(voice) == len(heard)
        # Cut at the same samples: the clean voice lines up with the noisy one at lag 0, not a few samples off.
        lags = range(-40, 41, 4)
        correlation = [np.dot(np.roll(voice, lag), heard) for lag in lags]
        assert int(np.argmax(correlation)) == len(lags) // 2
        # Levelled on its own voice, as prepare_speech levels the clean recording.
        assert frame_dbfs(voice).max() == pytest.approx(frame_dbfs(prepare_speech(original)).max(), abs=0.5)
    # A clip the channel left alone is its own clean view.
    speech, clean_speech = prepare_batch_with_clean(clean[:1], clean[:1])
    np.testing.assert_array_equal(speech[0], prepare_speech(clean[0]))
    np.testing.assert_array_equal(clean_speech[0], speech[0])


def test_prepare_batch_with_clean_falls_back_to_clean_for_a_drowned_voice():
    voice = recording()
    drowned = np.random.default_rng(0).standard_normal(len(voice)).astype(np.float32)  # steady noise only
    speech, clean_speech = prepare_batch_with_clean([drowned], [voice])
    np.testing.assert_array_equal(speech[0], prepare_speech(voice))
    np.testing.assert_array_equal(clean_speech[0], prepare_speech(voice))


def test_denoising_objective_trains_a_decoder_on_aligned_clean_audio_and_ships_without_it(tmp_path, monkeypatch):
    import train.train as loop

    config = tiny_config(tmp_path, epochs=1, denoise_weight=0.5, speed_factors=[1.0])
    corpus = load_corpus([c for c in parse_ravdess(RAVDESS_DIR) if c.actor in config.actors], config)
    fit_idx, val_idx = list(range(20, len(corpus.clips))), list(range(20))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_loss, real_classify = loop.denoising_loss, EmotionNet.classify

    def classify_keeping_input(self, log_mel, **kwargs):
        if self.training:
            seen.append((log_mel.detach(), None))
        return real_classify(self, log_mel, **kwargs)

    def loss_keeping_target(predicted, clean_log_mel, time_pool):
        heard, _ = seen[-1]
        seen[-1] = (heard, clean_log_mel.detach())
        return real_loss(predicted, clean_log_mel, time_pool)

    monkeypatch.setattr(EmotionNet, "classify", classify_keeping_input)
    monkeypatch.setattr(loop, "denoising_loss", loss_keeping_target)

    # No channel: the clean view is exactly what the model hears.
    model, history = fit(replace(config, channels=NO_CHANNELS), corpus, fit_idx, val_idx, tmp_path / "quiet")
    assert np.isfinite(history[0]["train_loss"]) and seen and all(clean is not None for _, clean in seen)
    torch.testing.assert_close(seen[0][0], seen[0][1])
    # Noise on every clip: it hears the noisy clip, the decoder aims at the clean one, window for window.
    seen.clear()
    noisy = replace(NO_CHANNELS, noise_prob=1.0, snr_db=(0.0, 5.0))
    fit(replace(config, channels=noisy), corpus, fit_idx, val_idx, tmp_path / "noisy")
    heard, clean = seen[0]
    assert heard.shape == clean.shape and not torch.allclose(heard, clean, atol=1.0)

    # The decoder trains and resumes with the run, but is no part of the model that ships.
    checkpoint = torch.load(tmp_path / "noisy" / "last.pt", weights_only=True)
    assert set(checkpoint["decoder"]) == set(CleanSpeechDecoder(config.model).state_dict())
    assert set(model.state_dict()) == set(EmotionNet(config.model).state_dict())
    with pytest.raises(ValueError, match="denoise_weight"):
        without = replace(config, channels=noisy, resume=True, denoise_weight=0.0)
        fit(without, corpus, fit_idx, val_idx, tmp_path / "noisy")
    resumed = replace(config, channels=noisy, resume=True, epochs=2)
    _, history = fit(resumed, corpus, fit_idx, val_idx, tmp_path / "noisy")
    assert len(history) == 2  # the first epoch reloaded, with its decoder, and one more trained
    with pytest.raises(ValueError, match="denoising objective"):
        fit(replace(config, consistency_weight=1.0), corpus, fit_idx, val_idx, tmp_path / "both")


def test_the_model_card_names_the_clean_speech_loss(tmp_path):
    from train.card import _auxiliary_losses

    assert _auxiliary_losses(tiny_config(tmp_path)) == ""
    named = _auxiliary_losses(tiny_config(tmp_path, denoise_weight=0.5))
    assert "clean-speech loss (weight 0.5)" in named and "not shipped" in named
