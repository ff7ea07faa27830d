"""ser_model.model: shapes, attention maps, and the sizes in the config."""

from __future__ import annotations

import json

import pytest
import torch
from torchaudio.transforms import MelSpectrogram

from ser_model import EmotionEnsemble, EmotionNet, ModelConfig
from ser_model.audio import HOP_LENGTH, N_FFT, SAMPLE_RATE
from ser_model.fused import fuse
from ser_model.model import (
    BAND_SNR_UNIT_DB,
    LOG_FLOOR_DB,
    NOISE_CUT_DB,
    PCEN_ALPHA,
    PCEN_DELTA,
    PCEN_EPS,
    PCEN_ROOT,
    PCEN_SMOOTHING,
    InputPool,
    LogMel,
    MaskDropout,
    band_snr,
    mask_dropout,
    per_channel_energy_normalization,
    pool_tokens,
    subtract_band_means,
    subtract_noise_floor,
)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"n_layers": 3, "n_heads": 2},
        {"cnn_kernel_sizes": [3, 3], "n_mels": 40},
        {"pcen": True},
        {"attention_pooling": True},
        {"band_snr_quantile": 0.1},
        {"cnn_input_pooling": "max"},
        {"cnn_input_pooling": "mean+max"},
        {"cnn_input_pooling": "mean+max", "band_snr_quantile": 0.1},
        {"cnn_input_pooling": "max-freq"},
    ],
)
def test_forward_shapes(batch, overrides):
    config = ModelConfig(**overrides)
    model = EmotionNet(config).eval()
    waveform = torch.randn(batch, config.n_samples)
    output = model(waveform, return_attention=True)
    assert output.logits.shape == (batch, len(config.labels))
    assert output.attentions.shape == (batch, config.n_layers, config.n_heads, config.n_tokens, config.n_tokens)
    assert model.frontend(waveform).shape == (batch, config.n_mels, config.n_frames)


@pytest.mark.parametrize("n_fft", [N_FFT, 800])
def test_log_mel_is_torchaudios_power_mel_spectrogram_in_db(n_fft):
    # LogMel squares the spectrum's real and imaginary parts itself (faster than abs().pow(2)).
    waveform = torch.randn(2, SAMPLE_RATE) * 0.1
    reference = MelSpectrogram(SAMPLE_RATE, n_fft=n_fft, hop_length=HOP_LENGTH, n_mels=64)(waveform)
    expected = 10.0 * torch.log10(reference + 10.0 ** (LOG_FLOOR_DB / 10.0))
    torch.testing.assert_close(LogMel(64, n_fft)(waveform), expected, rtol=1e-5, atol=1e-4)


def test_a_50_ms_window_resolves_the_harmonics_of_a_low_voice(tmp_path, random_model):
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    voice = sum(torch.sin(2 * torch.pi * 110 * k * t) / k for k in range(1, 20)).unsqueeze(0)  # F0 110 Hz

    def ripple(n_fft: int) -> float:  # how far adjacent bands below ~700 Hz differ: peak vs valley, in dB
        bands = LogMel(64, n_fft)(voice)[0, 1:16, 20:-20].mean(dim=1)
        return bands.diff().abs().mean().item()

    assert ripple(800) > 2 * ripple(N_FFT)  # 25 ms merges these harmonics; 50 ms shows the gaps between them
    model = EmotionNet(ModelConfig(n_fft=800))
    assert model(torch.zeros(1, model.config.n_samples)).logits.shape == (1, 8)  # same hop: same input shape
    model.save_pretrained(tmp_path / "wide-window")
    assert EmotionNet.from_pretrained(tmp_path / "wide-window").config.n_fft == 800
    random_model.save_pretrained(tmp_path / "before")
    config = json.loads((tmp_path / "before" / "config.json").read_text())
    del config["n_fft"]  # as every checkpoint written before the field: it reads 25-ms windows
    (tmp_path / "before" / "config.json").write_text(json.dumps(config))
    assert EmotionNet.from_pretrained(tmp_path / "before").frontend.spectrogram.n_fft == N_FFT


def test_cnn_branch_in_channels_last_gives_what_its_layers_give_in_order(random_model):
    # ConvBranch runs its layers one by one to switch the memory layout; the numbers must not change.
    cnn = random_model.cnns[1]
    image = torch.randn(2, 1, random_model.config.n_mels, random_model.config.n_frames)
    with torch.inference_mode():
        maps = cnn.blocks(image)  # the Sequential in the default layout
        torch.testing.assert_close(cnn(image), torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1))


def test_mask_dropout_drops_and_rescales_as_nn_dropout_does():
    torch.manual_seed(0)
    x = torch.rand(64, 16, 20, 30).contiguous(memory_format=torch.channels_last) + 1.0  # no zeros of its own
    dropped = mask_dropout(x, 0.2, training=True)
    kept = dropped != 0
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.005)  # 614k draws: the share is within 0.2%
    torch.testing.assert_close(dropped[kept], x[kept] / 0.8, rtol=1e-5, atol=0)  # scaled so the expectation is x
    assert dropped.is_contiguous(memory_format=torch.channels_last)
    assert mask_dropout(x, 0.2, training=False) is x and mask_dropout(x, 0.0, training=True) is x
    assert not mask_dropout(x, 1.0, training=True).any()
    layer = MaskDropout(0.5)
    assert isinstance(layer, torch.nn.Dropout) and layer.eval()(x) is x  # and the fused copy skips it as one
    x.requires_grad_()
    mask_dropout(x, 0.5, training=True).sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}  # the gradient flows through the kept units only


def test_attention_in_training_is_the_same_function_on_either_path():
    # On the CPU training takes the explicit path (its own dropout mask); with dropout off it must equal SDPA's.
    torch.manual_seed(0)
    model = EmotionNet(ModelConfig(dropout=0.0)).train()
    log_mel = torch.randn(3, 64, model.config.n_frames) * 10 - 40
    sdpa = model.classify(log_mel).logits
    for block in model.transformer.blocks:
        block.attention.dropout = 1e-12  # takes the explicit path; a mask of p = 1e-12 keeps every unit
    torch.testing.assert_close(model.classify(log_mel).logits, sdpa, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"n_layers": 3, "dynamic_range_db": 80.0, "normalize_bands": True},
        {"attention_pooling": True},
        {"band_snr_quantile": 0.1, "band_snr_range_db": 60.0},
        {"cnn_input_pooling": "max"},
        {"cnn_input_pooling": "mean+max", "band_snr_quantile": 0.1},
        {"cnn_input_pooling": "max-freq"},
    ],
)
def test_the_fused_copy_keeps_outputs_and_leaves_the_model_as_it_was(overrides):
    torch.manual_seed(1)
    members = [EmotionNet(ModelConfig(**overrides)) for _ in range(3)]
    for member in members:  # trained-looking statistics, so folding them in is not a no-op
        for norm in member.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.running_mean.uniform_(-1, 1)
                norm.running_var.uniform_(0.5, 2)
                torch.nn.init.uniform_(norm.weight, 0.5, 2)
        member.input_norm.running_mean.fill_(-40.0)
        member.input_norm.running_var.fill_(400.0)
        if member.transformer.token_score is not None:  # trained-looking scores, so the tokens weigh differently
            torch.nn.init.normal_(member.transformer.token_score.weight)
    for model in [members[0].eval(), EmotionEnsemble.from_members(members[:2]), EmotionEnsemble.from_members(members)]:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        fused = fuse(model)
        batch = model.frontend(torch.randn(3, model.config.n_samples) * 0.1)
        for log_mel in [batch[:1], batch]:  # one window runs grouped convolutions, several each member's own
            with torch.inference_mode():
                expected, got = model.classify(log_mel, True), fused.classify(log_mel, True)
                without_maps = fused.classify(log_mel)
            torch.testing.assert_close(got.logits, expected.logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got.attentions, expected.attentions)
            torch.testing.assert_close(without_maps.logits, expected.logits, rtol=1e-4, atol=1e-4)
            assert without_maps.attentions is None
        # One stack of grouped convolutions per kernel size, whatever the number of members, and no batch norms.
        convs = [layer for layer in fused.modules() if isinstance(layer, torch.nn.Conv2d)]
        assert len(convs) == len(model.config.cnn_kernel_sizes) * len(model.config.cnn_channels)
        assert not any(isinstance(layer, torch.nn.BatchNorm2d | torch.nn.Dropout) for layer in fused.modules())
        # The model itself still holds its batch norms and the checkpoint's tensors, unchanged.
        assert model.state_dict().keys() == state.keys()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_attention_rows_sum_to_one_and_do_not_change_the_logits(random_model):
    waveform = torch.randn(2, random_model.config.n_samples) * 0.1
    with torch.inference_mode():
        plain = random_model(waveform)
        with_maps = random_model(waveform, return_attention=True)
    assert plain.attentions is None
    torch.testing.assert_close(with_maps.logits, plain.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_maps.attentions.sum(-1), torch.ones(with_maps.attentions.shape[:-1]))
    assert (with_maps.attentions >= 0).all()


def test_attention_pooling_starts_as_the_mean_and_learns_to_weigh_tokens():
    torch.manual_seed(0)
    tokens = torch.randn(2, 75, 64)
    fresh_score = EmotionNet(ModelConfig(attention_pooling=True, d_model=64)).transformer.token_score
    torch.testing.assert_close(pool_tokens(tokens, fresh_score(tokens)), tokens.mean(dim=1))
    # A score that singles out some tokens: the pooling is theirs alone, whatever the rest of the window holds.
    scores = torch.full((2, 75, 1), -1e4)
    scores[:, 10:20] = 0.0
    noisy = tokens.clone()
    noisy[:, 20:] = torch.randn(2, 55, 64) * 10
    torch.testing.assert_close(pool_tokens(noisy, scores), tokens[:, 10:20].mean(dim=1))
    model = EmotionNet(ModelConfig(attention_pooling=True)).train()
    model(torch.randn(2, model.config.n_samples)).logits.sum().backward()
    assert model.transformer.token_score.weight.grad.abs().sum() > 0


def test_attention_is_trainable_path_too():
    # The explicit-softmax path is differentiable, so maps can be asked for in training as well.
    model = EmotionNet(ModelConfig()).train()
    output = model(torch.randn(2, model.config.n_samples), return_attention=True)
    output.logits.sum().backward()
    assert model.transformer.blocks[0].attention.qkv.weight.grad is not None


def test_a_dynamic_range_floor_makes_the_level_of_the_pauses_irrelevant():
    torch.manual_seed(0)
    model = EmotionNet(ModelConfig(dynamic_range_db=60.0)).eval()
    log_mel = torch.full((1, 64, 301), -100.0)  # digital silence in the pauses
    log_mel[:, :, 100:200] = torch.randn(1, 64, 100) * 10  # a voice peaking near +30 dB
    hiss = log_mel.clone()
    hiss[:, :, :100] = -75.0  # the pauses of a quiet recording after levelling: hiss, still 60+ dB below the voice
    with torch.no_grad():
        torch.testing.assert_close(model.classify(log_mel).logits, model.classify(hiss).logits)
    unfloored = EmotionNet(ModelConfig()).eval()
    unfloored.load_state_dict(model.state_dict())  # the same weights, without the floor
    with torch.no_grad():
        assert not torch.allclose(unfloored.classify(log_mel).logits, unfloored.classify(hiss).logits)


def test_band_normalisation_cancels_a_fixed_microphone_colouring_but_not_the_padding():
    torch.manual_seed(0)
    model = EmotionNet(ModelConfig(normalize_bands=True)).eval()
    log_mel = torch.full((1, 64, 301), -100.0)  # zero padding after the voice
    log_mel[:, :, :200] = torch.randn(1, 64, 200) * 10
    coloured = log_mel.clone()
    coloured[:, :, :200] += torch.linspace(-12.0, 6.0, 64)[None, :, None]  # a microphone's tilt, dB per band
    with torch.no_grad():
        torch.testing.assert_close(model.classify(log_mel).logits, model.classify(coloured).logits)
    normalised = subtract_band_means(log_mel)
    torch.testing.assert_close(normalised[:, :, :200].mean(dim=2), torch.zeros(1, 64))
    assert (normalised[:, :, 200:] == -100.0).all()  # the padding is still silence


def test_spectral_subtraction_removes_a_steady_noise_floor_and_keeps_the_voice_above_it():
    torch.manual_seed(0)
    log_mel = torch.full((1, 64, 301), -100.0)  # zero padding after the voice
    log_mel[:, :, :200] = -50.0 + torch.randn(1, 64, 200)  # steady noise, about 50 dB down
    log_mel[:, :, 50:150] = -10.0  # the voice, 40 dB above it
    cleaned = subtract_noise_floor(log_mel, 0.2)
    assert (cleaned[:, :, 50:150] - log_mel[:, :, 50:150]).abs().max() < 0.01  # the voice keeps its level
    pauses = torch.cat([cleaned[:, :, :50], cleaned[:, :, 150:200]], dim=2)
    assert pauses.mean() < -50.0 - 0.6 * NOISE_CUT_DB  # the noise is mostly gone
    assert (cleaned >= log_mel - NOISE_CUT_DB - 1e-4).all()  # no value cut by more than the limit
    assert (cleaned[:, :, 200:] == -100.0).all()  # the padding is still silence
    assert torch.isfinite(subtract_noise_floor(torch.full((1, 64, 301), -100.0), 0.2)).all()  # digital silence
    model = EmotionNet(ModelConfig(noise_floor_quantile=0.2)).eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(2, model.config.n_samples)).logits).all()


def test_pcen_is_the_recursive_smoother_it_unrolls_across_blocks_too():
    torch.manual_seed(0)
    log_mel = torch.randn(2, 4, 2500) * 20 - 40  # longer than one PCEN_BLOCK
    power = torch.pow(10.0, log_mel.double() / 10.0)
    smoothed, state = torch.empty_like(power), power[..., 0]
    for t in range(power.shape[-1]):
        state = (1 - PCEN_SMOOTHING) * state + PCEN_SMOOTHING * power[..., t]
        smoothed[..., t] = state
    expected = (power / (PCEN_EPS + smoothed) ** PCEN_ALPHA + PCEN_DELTA) ** PCEN_ROOT - PCEN_DELTA**PCEN_ROOT
    torch.testing.assert_close(per_channel_energy_normalization(log_mel).double(), expected, rtol=1e-3, atol=1e-5)


def test_pcen_divides_out_a_colouring_and_a_steady_floor_but_not_an_onset():
    torch.manual_seed(0)
    log_mel = -30.0 + torch.randn(1, 64, 301)  # steady noise, 30 dB below the voice to come
    log_mel[:, :, 150:250] += 30.0  # the voice
    plain = per_channel_energy_normalization(log_mel)
    colouring = torch.linspace(-10, 10, 64)[None, :, None]  # a microphone's tilt: 10x in power each way
    coloured = per_channel_energy_normalization(log_mel + colouring)
    assert ((coloured - plain).abs() / plain).max() < 0.1
    steady, onset = plain[:, :, 100:150].mean(), plain[:, :, 150:160].mean()
    assert onset > 5 * steady  # the voice's onset stands out of the noise it starts from


def test_band_snr_is_each_value_above_its_bands_floor_and_zero_on_the_padding():
    log_mel = torch.full((1, 2, 20), -100.0)  # frames 0-4 and 15-19 are zero padding
    log_mel[0, :, 5:15] = torch.tensor([[-50.0], [-30.0]])  # a steady floor per band
    log_mel[0, 0, 8:10] = -10.0  # a voice 40 dB above band 0's floor
    snr = band_snr(log_mel, 0.1)
    assert (snr[..., :5] == 0).all() and (snr[..., 15:] == 0).all()
    torch.testing.assert_close(snr[0, 0, 8:10], torch.full((2,), 40.0 / BAND_SNR_UNIT_DB))
    assert (snr[0, 1, 5:15] == 0).all() and (snr[0, 0, 5:8] == 0).all()  # the floor itself, at any level
    # The same voice under noise 30 dB louder than the floor stands only 10 dB above it.
    noisy = log_mel.clone()
    noisy[0, 0, 5:15] = torch.maximum(noisy[0, 0, 5:15], torch.tensor(-20.0))
    torch.testing.assert_close(band_snr(noisy, 0.1)[0, 0, 8:10], torch.full((2,), 10.0 / BAND_SNR_UNIT_DB))
    # A band a codec emptied (digital silence between its frames) stands no higher than the range allows.
    emptied = log_mel.clone()
    emptied[0, 1, 5:15] = LOG_FLOOR_DB
    emptied[0, 1, 9] = -30.0
    assert band_snr(emptied, 0.1)[0, 1, 9] == pytest.approx(70.0 / BAND_SNR_UNIT_DB)
    assert band_snr(emptied, 0.1, range_db=50.0)[0, 1, 9] == pytest.approx(30.0 / BAND_SNR_UNIT_DB)  # peak -10
    assert (band_snr(emptied, 0.1, range_db=50.0)[..., :5] == 0).all()  # the padding is still the padding


def test_band_snr_reaches_both_kinds_of_branch_and_a_checkpoint_without_it_loads_as_before(tmp_path, random_model):
    model = EmotionNet(ModelConfig(band_snr_quantile=0.1))
    assert all(cnn.blocks[1].in_channels == 2 for cnn in model.cnns)
    assert model.transformer.embed.in_features == 2 * model.config.n_mels
    random_model.save_pretrained(tmp_path)  # a checkpoint of the one-input network
    assert EmotionNet.from_pretrained(tmp_path).config.band_snr_quantile is None


def test_the_model_card_names_the_noise_aware_input():
    from train.card import _band_snr

    assert _band_snr(ModelConfig()) == ""
    named = _band_snr(ModelConfig(band_snr_quantile=0.1))
    assert "height above its band's noise floor (the band's 10% quantile" in named


def test_the_model_card_names_the_log_mel_floor():
    from train.card import _log_mel_floor

    assert _log_mel_floor(ModelConfig()) == ""
    assert _log_mel_floor(ModelConfig(dynamic_range_db=50)) == ", floored 50 dB below the window's peak"


def test_the_model_card_names_the_cnn_input_pooling():
    from train.card import _cnn_input

    assert _cnn_input(ModelConfig()) == "pooled 2x2 by its mean"
    assert _cnn_input(ModelConfig(cnn_input_pooling="mean+max")) == (
        "pooled 2x2 by its mean and by its largest value (two channels)"
    )
    assert _cnn_input(ModelConfig(cnn_input_pooling="max-freq")) == (
        "pooled 2x2 by the largest across frequency of its means across time"
    )


def test_input_pooling_keeps_each_value_where_it_belongs_and_refuses_unknown_modes():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    both = InputPool(2, "mean+max")(image)
    torch.testing.assert_close(both[:, 0:1], InputPool(2, "mean")(image))
    torch.testing.assert_close(both[:, 1:2], InputPool(2, "max")(image))
    assert both[0, 1, 0, 0] == 5.0  # the largest of 0, 1, 4, 5
    # Frames 0 and 1 of bands 0 and 1 average to 0.5 and 4.5: the larger band's mean is kept.
    assert InputPool(2, "max-freq")(image)[0, 0, 0, 0] == 4.5
    with pytest.raises(ValueError, match="cnn_input_pooling"):
        EmotionNet(ModelConfig(cnn_input_pooling="median"))
