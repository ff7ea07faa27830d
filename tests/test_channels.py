"""train.channels and ChannelAugment: each degradation does what it claims, keeps the length, and reaches the
model through training exactly as the same degraded recording reaches it through predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_model.audio import SAMPLE_RATE, frame_dbfs, prepare_speech, voice_activity
from train import channels
from train.augment import ChannelAugment, ChannelConfig, place_in_window, prepare_batch
from train.robustness import CONDITIONS

from .conftest import speech_like


def recording(seconds: float = 2.0, seed: int = 0, silence: float = 0.5) -> np.ndarray:
    """A voice with quiet room noise before and after it, as a recording starts and ends."""
    rng = np.random.default_rng(seed)
    pad = np.zeros(int(silence * SAMPLE_RATE), np.float32)
    voice = np.concatenate([pad, speech_like(seconds, seed=seed), pad])
    return voice + 1e-4 * rng.standard_normal(len(voice)).astype(np.float32)


def batch(*recordings: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in recordings])
    return torch.nn.utils.rnn.pad_sequence([torch.from_numpy(r) for r in recordings], batch_first=True), lengths


@pytest.mark.parametrize("colour", ["white", "pink", "brown"])
def test_noise_has_the_snr_it_claims_relative_to_the_voice(colour):
    x, lengths = batch(recording(seed=0), recording(1.5, seed=1))
    snr_db = torch.tensor([0.0, 20.0])
    noise = channels.coloured_noise(tuple(x.shape), colour, torch.Generator().manual_seed(0))
    noisy = channels.add_noise(x, lengths, noise, snr_db)
    assert noisy.shape == x.shape
    added = noisy - x
    assert torch.all(added[1, lengths[1] :] == 0)  # nothing lands on the padding of the shorter row
    voice = channels.speech_power(x, lengths)
    for i in range(2):
        measured = 10 * torch.log10(voice[i] / added[i, : lengths[i]].pow(2).mean())
        assert measured.item() == pytest.approx(snr_db[i].item(), abs=0.1)


def test_noise_colours_have_their_spectral_slopes():
    noise = channels.coloured_noise((4, 4 * SAMPLE_RATE), "pink", torch.Generator().manual_seed(0))
    power = torch.fft.rfft(noise).abs().pow(2).mean(0)
    frequencies = torch.fft.rfftfreq(noise.shape[1], 1 / SAMPLE_RATE)
    band = lambda lo, hi: power[(frequencies >= lo) & (frequencies < hi)].mean()  # noqa: E731
    # Pink noise: equal power per octave, so the power density falls 3 dB per octave (10 dB per decade).
    assert 10 * torch.log10(band(100, 200) / band(1000, 2000)).item() == pytest.approx(10.0, abs=1.0)


def test_babble_is_several_talkers_at_unit_power():
    talkers = torch.stack([torch.from_numpy(speech_like(2.0, seed=s)) for s in range(4)])
    mix = channels.babble(talkers)
    assert mix.shape == (talkers.shape[1],) and mix.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_benchmark_babble_lies_its_snr_below_the_voice_where_the_voice_is():
    # Recordings pause at their start and end (RAVDESS's by a second): babble made of talkers that all pause
    # there would crowd onto the voice, louder there than its nominal SNR (about 3 dB for RAVDESS).
    talkers = [recording(2.0, seed=s, silence=1.0) for s in range(30)]
    voice_power, babble_power = 0.0, 0.0  # pooled over the voices: the babble at any one moment varies a lot
    for k, voice in enumerate(talkers):
        others = talkers[:k] + talkers[k + 1 :]
        babble = CONDITIONS["babble 10 dB SNR"](voice, torch.Generator().manual_seed(k), others) - voice
        voiced = voice_activity(voice)[1]
        voice_power += np.mean(10.0 ** (frame_dbfs(voice)[voiced] / 10.0))
        babble_power += np.mean(10.0 ** (frame_dbfs(babble)[voiced] / 10.0))
    assert 10 * np.log10(voice_power / babble_power) == pytest.approx(10.0, abs=1.0)


def test_training_babble_mixes_the_batchs_other_talkers_for_the_chosen_rows_only():
    from train.augment import _babble_from_batch

    x = torch.randn(6, 4000) * torch.linspace(0.1, 1.0, 6)[:, None]  # six talkers at six levels
    rows = torch.tensor([1, 4])
    mix = _babble_from_batch(x, rows, torch.Generator().manual_seed(0))
    # The definition, whole batch at once: talker k of row r is row r - k, each at unit power, each shifted.
    generator = torch.Generator().manual_seed(0)
    shifts = [int(torch.randint(x.shape[1], (1,), generator=generator)) for _ in range(channels.BABBLE_TALKERS)]
    unit = x / x.pow(2).mean(dim=1, keepdim=True).sqrt()
    whole = sum(unit.roll(shifts=(k, shift), dims=(0, 1)) for k, shift in enumerate(shifts, start=1))
    expected = whole / whole.pow(2).mean(dim=1, keepdim=True).sqrt()
    torch.testing.assert_close(mix, expected[rows])
    assert mix.pow(2).mean(dim=1).allclose(torch.ones(2))
    assert not any(torch.allclose(mix[0], unit[r]) for r in range(6))  # a mix, not one talker


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_impulse_response_decays_60_db_in_its_rt60(rt60):
    response = channels.impulse_response(rt60, drr_db=0.0, generator=torch.Generator().manual_seed(0))
    tail = response.clone()
    tail[0] = 0.0
    assert 10 * torch.log10(1.0 / tail.pow(2).sum()).item() == pytest.approx(0.0, abs=0.01)  # the DRR it claims
    # Schroeder backward integration; the -5 to -25 dB slope, extrapolated to 60 dB (ISO 3382's T20).
    decay = 10 * torch.log10(tail.pow(2).flip(0).cumsum(0).flip(0) / tail.pow(2).sum())
    t5, t25 = [int(torch.nonzero(decay < level)[0]) / SAMPLE_RATE for level in (-5.0, -25.0)]
    assert 3 * (t25 - t5) == pytest.approx(rt60, rel=0.1)


def test_reverberation_keeps_the_length():
    x, _ = batch(recording())
    response = channels.impulse_response(0.6, 0.0, torch.Generator().manual_seed(0))
    assert channels.reverberate(x, response[None]).shape == x.shape


@pytest.mark.parametrize("n, m", [(1000, 300), (997, 331), (24000, 8001)])
def test_reverberation_is_the_linear_convolution_cut_to_length(n, m):
    rng = np.random.default_rng(n)
    voice, room = rng.standard_normal((2, n)), rng.standard_normal((2, m))
    expected = np.stack([np.convolve(v, r)[:n] for v, r in zip(voice, room)])
    got = channels.reverberate(torch.from_numpy(voice), torch.from_numpy(room)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-8 * np.abs(expected).max() * m)


def test_microphone_hiss_lies_where_it_claims_below_the_voice():
    config = ChannelConfig(reverb_prob=0, noise_prob=0, hiss_prob=1, telephone_prob=0, codec_prob=0, gain_prob=0)
    recordings = [recording(1.0 + 0.3 * s, seed=s) for s in range(4)]
    hissing = ChannelAugment(config, seed=0)(recordings, torch.Generator().manual_seed(0))
    x, lengths = batch(*recordings)
    voice = channels.speech_power(x, lengths)
    for i, (degraded, original) in enumerate(zip(hissing, recordings)):
        snr_db = 10 * np.log10(voice[i].item() / np.mean((degraded - original) ** 2))
        assert config.hiss_snr_db[0] - 0.1 <= snr_db <= config.hiss_snr_db[1] + 0.1


def test_snr_curriculum_starts_faint_and_reaches_the_full_range():
    only_noise = dict(reverb_prob=0, noise_prob=1, noise_types=["white"], telephone_prob=0, codec_prob=0, gain_prob=0)
    recordings = [recording(1.0 + 0.1 * s, seed=s) for s in range(16)]
    x, lengths = batch(*recordings)
    voice = channels.speech_power(x, lengths)

    def measured_snrs(augment: ChannelAugment, progress: float) -> np.ndarray:
        noisy = augment(recordings, torch.Generator().manual_seed(0), progress)
        return np.array(
            [10 * np.log10(voice[i].item() / np.mean((n - r) ** 2)) for i, (n, r) in enumerate(zip(noisy, recordings))]
        )

    curriculum = ChannelAugment(ChannelConfig(**only_noise, snr_db=(0.0, 30.0), snr_curriculum=0.5), seed=0)
    assert curriculum.snr_range(0.0) == (30.0, 30.0) and curriculum.snr_range(0.25) == (15.0, 30.0)
    np.testing.assert_allclose(measured_snrs(curriculum, 0.0), 30.0, atol=0.1)
    assert measured_snrs(curriculum, 0.25).min() >= 15.0 - 0.1
    full = measured_snrs(curriculum, 0.75)
    assert full.min() < 10.0 and full.max() <= 30.1  # the whole range once the curriculum is over
    # Off, the draws are those of a run that never heard of curricula, at any progress: old recipes replay.
    off = ChannelAugment(ChannelConfig(**only_noise, snr_db=(0.0, 30.0)), seed=0)
    np.testing.assert_array_equal(measured_snrs(off, 0.0), full)


def test_the_model_card_names_the_snr_curriculum():
    from train.card import _channel_augmentation

    noise = next(part for part in _channel_augmentation(ChannelConfig(snr_curriculum=0.5)) if "noise (" in part)
    assert "the lowest SNR falling from 30 to 0 dB over the first 50% of the schedule" in noise
    assert not any("SNR falling" in part for part in _channel_augmentation(ChannelConfig()))


def test_the_model_card_gives_each_noise_kind_its_share():
    from train.card import _channel_augmentation

    def noise(types: list[str]) -> str:
        return next(part for part in _channel_augmentation(ChannelConfig(noise_types=types)) if "noise (" in part)

    assert "noise (white, pink, brown, babble)" in noise(["white", "pink", "brown", "babble"])
    assert "noise (white 20%, pink 20%, brown 20%, babble 40%)" in noise(["white", "pink", "brown", "babble", "babble"])


def test_telephone_keeps_the_voice_band_only():
    x, _ = batch(channels.coloured_noise((1, 2 * SAMPLE_RATE), "white", torch.Generator().manual_seed(0))[0].numpy())
    phone = channels.telephone(0.1 * x)
    assert phone.shape == x.shape
    power = torch.fft.rfft(phone[0]).abs().pow(2)
    frequencies = torch.fft.rfftfreq(phone.shape[1], 1 / SAMPLE_RATE)
    in_band = power[(frequencies > 400) & (frequencies < 3300)].mean()
    above = power[frequencies > 4200].mean()  # what an 8-kHz line cannot carry
    below = power[frequencies < 200].mean()
    assert 10 * torch.log10(in_band / above) > 30 and 10 * torch.log10(in_band / below) > 20


def test_microphone_response_has_its_cutoffs_and_tilt():
    x, _ = batch(channels.coloured_noise((1, 4 * SAMPLE_RATE), "white", torch.Generator().manual_seed(0))[0].numpy())
    x = x.repeat(2, 1)
    heard = channels.microphone(
        x, torch.tensor([300.0, 50.0]), torch.tensor([4000.0, 8000.0]), torch.tensor([0.0, 3.0])
    )
    assert heard.shape == x.shape
    frequencies = torch.fft.rfftfreq(x.shape[1], 1 / SAMPLE_RATE)

    def gain_db(row: int, hz: float) -> float:  # the response, measured on white noise over a tenth of an octave
        near = (frequencies > hz * 0.966) & (frequencies < hz * 1.035)
        ratio = torch.fft.rfft(heard[row])[near].abs().pow(2).mean() / torch.fft.rfft(x[row])[near].abs().pow(2).mean()
        return float(10 * torch.log10(ratio))

    assert abs(gain_db(0, 300.0) + 3.0) < 0.5 and abs(gain_db(0, 4000.0) + 3.0) < 0.5  # -3 dB at each cutoff
    assert gain_db(0, 100.0) < -18.5 and gain_db(0, 7800.0) < -22.5  # 12 and 24 dB an octave beyond them
    assert abs(gain_db(0, 1200.0)) < 0.5  # flat between
    assert abs(gain_db(1, 2000.0) - gain_db(1, 1000.0) - 3.0) < 0.5  # +3 dB an octave


def test_microphone_response_does_not_wrap_the_end_onto_the_start():
    voice = np.zeros(SAMPLE_RATE, np.float32)
    voice[-200:] = 1.0  # a loud end, silence before it
    heard = channels.microphone(
        torch.from_numpy(voice)[None], torch.tensor([50.0]), torch.tensor([3000.0]), torch.tensor([0.0])
    )[0]
    assert heard[:2000].abs().max() < 1e-4


def test_channel_augment_microphone_keeps_length_and_is_off_by_default():
    recordings = [recording(1.0 + 0.3 * s, seed=s) for s in range(4)]
    only_mic = ChannelConfig(reverb_prob=0, noise_prob=0, mic_prob=1, telephone_prob=0, codec_prob=0, gain_prob=0)
    heard = ChannelAugment(only_mic, seed=0)(recordings, torch.Generator().manual_seed(0))
    assert [len(h) for h in heard] == [len(r) for r in recordings]
    assert all(not np.allclose(h, r, atol=1e-4) for h, r in zip(heard, recordings))
    assert ChannelConfig().mic_prob == 0.0  # recipes before it drew the same batches


@pytest.mark.parametrize("codec", list(channels.CODECS))
def test_codecs_keep_length_and_alignment(codec):
    voice = recording()
    decoded = channels.codec(voice, codec)
    assert decoded.shape == voice.shape and decoded.dtype == np.float32
    assert np.corrcoef(decoded, voice)[0, 1] > 0.8  # aligned: the encoder's delay is taken off


def test_gain_clips_at_full_scale():
    x, _ = batch(recording())
    louder = channels.gain_and_clip(x, torch.tensor([30.0]))
    assert louder.abs().max() == 1.0 and (louder.abs() == 1.0).float().mean() > 0.01


def test_channel_augment_keeps_each_recordings_length_and_order():
    augment = ChannelAugment(ChannelConfig(reverb_prob=1, noise_prob=1, telephone_prob=0.5, gain_prob=1), seed=0)
    recordings = [recording(1.0 + 0.3 * s, seed=s) for s in range(6)]
    degraded = augment(recordings, torch.Generator().manual_seed(0))
    assert [len(d) for d in degraded] == [len(r) for r in recordings]  # labels are indexed by this same order
    assert all(not np.allclose(d, r) for d, r in zip(degraded, recordings))
    again = augment(recordings, torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(degraded, again))  # seeded: --resume replays it


def test_a_degraded_recording_reaches_the_model_as_predict_gives_it(random_recognizer):
    """Training degrades the recording first, then trims and levels it: the app's order, so the same samples."""
    augment = ChannelAugment(ChannelConfig(reverb_prob=1, noise_prob=1, noise_types=["pink"], gain_prob=1), seed=0)
    degraded = augment([recording(seconds=1.8)], torch.Generator().manual_seed(3))
    model = random_recognizer.model
    waveform = place_in_window(prepare_batch(degraded, degraded), model.config.n_samples, rng=None)
    with torch.inference_mode():
        training_input = model.frontend(waveform)[0].numpy()
    prediction = random_recognizer.predict((SAMPLE_RATE, degraded[0]))
    np.testing.assert_array_equal(training_input, prediction.log_mel)


def test_prepare_batch_falls_back_to_clean_for_a_drowned_voice():
    voice = recording()
    drowned = np.random.default_rng(0).standard_normal(len(voice)).astype(np.float32)  # steady noise only
    speech = prepare_batch([drowned], [voice])
    np.testing.assert_array_equal(speech[0], prepare_speech(voice))
