"""The parallel CNN + Transformer emotion network, from waveform to logits, with Hub save/load.

Two CNN branches read the log-mel spectrogram as an image (spectral-spatial patterns); a
Transformer encoder reads it as a sequence of frames (temporal structure). Their pooled
embeddings are concatenated and classified. After "Parallel is All You Want" (2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled
from torch import Tensor, nn
from torchaudio.transforms import MelScale, Spectrogram

from .audio import CLIP_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE

EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
LOG_FLOOR_DB = -100.0  # the log-mel of digital silence: power is floored at 1e-10 before the log
NOISE_CUT_DB = 20.0  # spectral subtraction lowers a band by at most this much, so no frame falls to -inf
BAND_SNR_UNIT_DB = 20.0  # a band's height above its noise floor is read in 20-dB units: 0-3 for speech, like the
# standardised log-mel beside it
# Per-channel energy normalisation, with the fixed parameters of Wang et al. (2017) at 10-ms frames: each band's
# gain follows its last ~0.4 s (smoothing 0.025 a frame), divides its power almost fully (alpha 0.98), and the
# result is compressed by a square root above an offset (delta 2) that keeps quiet frames from being amplified.
PCEN_SMOOTHING, PCEN_ALPHA, PCEN_DELTA, PCEN_ROOT, PCEN_EPS = 0.025, 0.98, 2.0, 0.5, 1e-6
PCEN_BLOCK = 1024  # frames a cumulative sum spans: 0.975^-1024 = 2e11 stays well within float32
REPO_URL = "https://github.com/ser-parallel/ser-parallel"
HUB_METADATA = dict(  # what the Hub mixin writes into a pushed model card's header
    library_name="ser-parallel",
    repo_url=REPO_URL,
    pipeline_tag="audio-classification",
    license="cc-by-nc-sa-4.0",
    language=["en"],
    tags=["speech-emotion-recognition", "ravdess", "audio-classification"],
)


class ModelLoadError(RuntimeError):
    """Weights that cannot be loaded: unreachable Hub, missing files, or tensors that do not match."""


@dataclass
class ModelConfig:
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS))  # class names, in logit order
    n_mels: int = 64  # half the notebook's 128: formants and low harmonics still resolve at 16 kHz
    # STFT window in samples. 400 (25 ms, as checkpoints trained before it) smears the harmonics of a voice
    # below about 160 Hz into one hump; 800 (50 ms) resolves them, so noise between them shows as noise. 800
    # scored 64.5% clean over five folds against 65.8% and no better under pink noise (docs/experiments.md).
    n_fft: int = N_FFT
    clip_seconds: float = CLIP_SECONDS  # one window of audio the model classifies
    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  # the notebook's 4 blocks
    cnn_kernel_sizes: list[int] = field(default_factory=lambda: [3, 5])  # one branch each: fine and coarse patterns
    cnn_input_pool: int = 2  # CNNs see the log-mel pooled 2x2: trains at 112 clips/s, not 18 (2 CPU cores)
    # How that pooling merges values: "mean" (as checkpoints trained before it), "max", "mean+max" (both, as two
    # image channels), or "max-freq" (each pair of frames averaged, then the larger of each pair of bands).
    # Averaged, a harmonic's peak is merged with the valley beside it, and noise that fills the valley lifts the
    # mean; the peak, where the voice stands above the noise, barely moves. Along time there is no such valley:
    # "max-freq" keeps the peaks and still averages the noise's frame-to-frame jitter before choosing.
    cnn_input_pooling: str = "mean"
    time_pool: int = 4  # frames merged per Transformer token: 40 ms tokens, 75 per window
    d_model: int = 64  # the notebook's width; the whole Transformer branch is a small share of the compute
    n_heads: int = 4  # 16-dim heads, each free to track a different cue (onsets, pitch, pauses)
    n_layers: int = 2  # shown in the app as a 2 x 4 grid of maps
    # How the Transformer's tokens become one embedding: False averages them all alike (as checkpoints trained
    # before it); True weighs each by a learnt score, softmaxed over the window, so the voice can outweigh the
    # pauses, the zero padding and noise. The score starts at zero: an untrained pooling is the plain mean. True
    # gained 1.4 points clean on folds 1-2 and lost 3-4 more under pink noise and babble (docs/experiments.md).
    attention_pooling: bool = False
    dropout: float = 0.2
    # Each window's log-mel is floored this many dB below its loudest point (Whisper floors at 80 dB), so how
    # quiet the pauses are (digital zeros, a quiet room, the hiss of a levelled quiet recording) stops mattering.
    # None keeps the full range, as checkpoints trained before it.
    dynamic_range_db: float | None = None
    # Subtract each mel band's mean over the window's sounding frames (cepstral mean normalisation): a fixed
    # microphone or line colouring is a constant per band in dB, so it cancels; so does the utterance's own tilt.
    normalize_bands: bool = False
    # Spectral subtraction: each mel band's noise floor, taken as this quantile of its power over the window's
    # sounding frames (e.g. 0.2: the quietest fifth, the pauses), is subtracted from its power, cutting a frame
    # by at most NOISE_CUT_DB. Steady noise (hiss, hum, fans, pink noise) drops out; speech well above it and
    # the spectral tilt stay. None keeps the log-mel as it is; 0.1 scored 53.5% on folds 1-2 against 60.6%
    # (docs/experiments.md).
    noise_floor_quantile: float | None = None
    # Per-channel energy normalisation in place of the dB scale: each band's power divided by its own smoothed
    # recent past, so a steady noise floor and a fixed colouring are divided out and onsets stand out; the
    # frontend (and what the app shows) stays the log-mel. False keeps the dB scale, as checkpoints trained before it;
    # True scored 46.7% on fold 1 against 57.5-60.4% for four seeds without it (docs/experiments.md).
    pcen: bool = False
    # Noise-aware input: each branch reads, beside the log-mel, every value's height above its band's noise floor
    # (the band's quantile over the window's sounding frames, e.g. 0.1: its pauses), as a second image channel
    # and as more features per token. A CNN sees a few frames at a time and cannot tell a band's noise floor,
    # so it cannot tell a voice from noise as loud; this tells it, and removes nothing (spectral subtraction
    # removed the floor and lost 7 points clean). None reads the log-mel alone, as checkpoints trained before it.
    # 0.1 scored 71.2% clean on fold 1 (shipped 65.4%) and lost 4-18 points under every condition: in RAVDESS's
    # quiet studio the floor's depth below a levelled voice tells how loudly the actor spoke, a cue that noise,
    # codecs and rooms take away (docs/experiments.md).
    band_snr_quantile: float | None = None
    # With the noise-aware input: the floor and the heights are read from the log-mel floored this many dB below
    # the window's peak, so a floor of digital silence (a low-bitrate codec empties bands: MP3 at 8 kbit/s cost
    # the unbounded input 23 points) and every studio floor deeper than the range read alike. None: unbounded.
    # 60 took MP3 to -7.3 on folds 1-2 and left pink noise at -13.5 (docs/experiments.md).
    band_snr_range_db: float | None = None
    # Calibration, fitted on unseen speakers by train.calibrate: logits are divided by the temperature, and a
    # verdict below `not_sure_below` is shown as "not sure". The defaults leave the model as trained.
    temperature: float = 1.0
    not_sure_below: float = 0.0
    # > 1: the checkpoint holds this many networks of this shape, trained separately with one recipe, and
    # answers with the mean of their probabilities (EmotionEnsemble); the calibration above is the ensemble's.
    n_models: int = 1

    @property
    def n_samples(self) -> int:
        return int(self.clip_seconds * SAMPLE_RATE)

    @property
    def n_frames(self) -> int:
        return self.n_samples // HOP_LENGTH + 1

    @property
    def n_tokens(self) -> int:
        return self.n_frames // self.time_pool

    @property
    def n_inputs(self) -> int:
        """Images each branch reads: the log-mel, and its height above the noise floor when that is on."""
        return 1 if self.band_snr_quantile is None else 2


@dataclass
class ModelOutput:
    logits: Tensor  # (B, n_classes)
    attentions: Tensor | None = None  # (B, n_layers, n_heads, n_tokens, n_tokens), rows sum to 1
    tokens: Tensor | None = None  # (B, n_tokens, d_model): the Transformer's last layer, before pooling


class LogMel(nn.Module):
    """Waveform (B, n_samples) -> log-mel power in dB (B, n_mels, n_frames)."""

    def __init__(self, n_mels: int, n_fft: int = N_FFT):
        super().__init__()
        self.spectrogram = Spectrogram(n_fft=n_fft, hop_length=HOP_LENGTH, power=None)  # complex
        self.mel_scale = MelScale(n_mels, SAMPLE_RATE, n_stft=n_fft // 2 + 1)
        # The STFT window and mel filterbank follow from the config, so they are rebuilt, not saved.
        for module in self.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buffer.contiguous().clone(), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        spectrum = self.spectrogram(waveform)
        # |X|^2 as re^2 + im^2: a third of the time of abs().pow(2), which takes a square root to square it.
        power = spectrum.real.square() + spectrum.imag.square()
        return 10.0 * torch.log10(self.mel_scale(power) + 10.0 ** (LOG_FLOOR_DB / 10.0))


def sounding_frames(log_mel: Tensor) -> Tensor:
    """(B, F, T) dB -> which frames hold any sound (B, 1, T): the zero padding does not."""
    return log_mel.amax(dim=1, keepdim=True) > LOG_FLOOR_DB + 1.0


def subtract_band_means(log_mel: Tensor) -> Tensor:
    """(B, F, T) dB with each band's mean over the sounding frames subtracted; the zero padding stays as it is."""
    sounding = sounding_frames(log_mel)
    weights = sounding.to(log_mel.dtype)
    means = (log_mel * weights).sum(dim=2, keepdim=True) / weights.sum(dim=2, keepdim=True).clamp(min=1.0)
    return torch.where(sounding, log_mel - means, log_mel)


def band_noise_floor(log_mel: Tensor, quantile: float, sounding: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(B, F, T) dB -> each band's noise floor, its ``quantile`` over the sounding frames (B, F, 1), and which
    frames sound (B, 1, T): the zero padding does not, unless ``sounding`` says otherwise."""
    if sounding is None:
        sounding = sounding_frames(log_mel)
    floor = torch.nanquantile(log_mel.masked_fill(~sounding, math.nan), quantile, dim=2, keepdim=True)
    return floor.nan_to_num(LOG_FLOOR_DB), sounding  # a window with no sounding frame has no floor


def band_snr(log_mel: Tensor, quantile: float, range_db: float | None = None) -> Tensor:
    """(B, F, T) dB -> each value's height above its band's noise floor (:func:`band_noise_floor`), in units of
    :data:`BAND_SNR_UNIT_DB`; zero on the padding. With ``range_db`` both are read from the log-mel floored that
    far below the window's peak, so no height exceeds ``range_db``."""
    sounding = sounding_frames(log_mel)
    if range_db is not None:
        log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - range_db)
    floor, _ = band_noise_floor(log_mel, quantile, sounding)
    return torch.where(sounding, (log_mel - floor) / BAND_SNR_UNIT_DB, 0.0)


def subtract_noise_floor(log_mel: Tensor, quantile: float) -> Tensor:
    """(B, F, T) dB with each band's noise floor (its ``quantile`` over the sounding frames) subtracted in power,
    each value lowered by at most ``NOISE_CUT_DB``; the zero padding stays as it is."""
    floor, sounding = band_noise_floor(log_mel, quantile)
    power = torch.pow(10.0, log_mel / 10.0)
    cleaned = torch.maximum(power - torch.pow(10.0, floor / 10.0), power * 10.0 ** (-NOISE_CUT_DB / 10.0))
    return torch.where(sounding, 10.0 * torch.log10(cleaned), log_mel)


def per_channel_energy_normalization(log_mel: Tensor) -> Tensor:
    """(B, F, T) dB -> PCEN (Wang et al. 2017, fixed parameters): each band's power over its smoothed past.

    The smoother, M[t] = d M[t - 1] + s E[t] with d = 1 - s, is unrolled into cumulative sums, M[t] = d^t (d M[-1]
    + s sum_k<=t d^-k E[k]), far cheaper than a loop over frames; blocks of PCEN_BLOCK frames keep d^-k within
    float32. It starts from the first frame's power, so a window that opens on a voice does not open on an onset.
    """
    power = torch.pow(10.0, log_mel / 10.0)
    decay = (1.0 - PCEN_SMOOTHING) ** torch.arange(min(log_mel.shape[-1], PCEN_BLOCK), device=log_mel.device)
    smoothed, state = [], power[..., :1]
    for block in power.split(PCEN_BLOCK, dim=-1):
        d = decay[: block.shape[-1]]
        smoothed.append(d * ((1.0 - PCEN_SMOOTHING) * state + PCEN_SMOOTHING * torch.cumsum(block / d, dim=-1)))
        state = smoothed[-1][..., -1:]
    gained = power / (PCEN_EPS + torch.cat(smoothed, dim=-1)) ** PCEN_ALPHA
    return (gained + PCEN_DELTA) ** PCEN_ROOT - PCEN_DELTA**PCEN_ROOT


def mask_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout`` with its mask cut from 64-bit random words, four 16-bit draws each (``p`` rounded to a
    multiple of 1/65536, the kept units scaled by the exact inverse of what is kept). On the CPU ``bernoulli_``
    took a quarter of a training step and ``torch.rand``, one draw per unit, 14%; this draws a quarter as often.
    The mask takes ``x``'s memory layout, so channels-last activations stay channels-last."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    dropped = round(p * 65536)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    draws = words.view(torch.int16)[: x.numel()].as_strided(x.shape, x.stride())  # uniform on [-32768, 32767]
    return x * (draws >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` by :func:`mask_dropout`."""

    def forward(self, x: Tensor) -> Tensor:
        return mask_dropout(x, self.p, self.training)


class InputPool(nn.Module):
    """Pools an image (B, C, F, T) ``size`` x ``size`` by each patch's mean, its largest value, both, or the
    largest across frequency of the means across time ("max-freq"); with both, input channel c becomes channels
    2c (mean) and 2c + 1 (max), so a member's channels stay together when several members' images are stacked
    (``ser_model.fused``)."""

    MODES = ("mean", "max", "mean+max", "max-freq")

    def __init__(self, size: int, mode: str = "mean"):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"cnn_input_pooling must be one of {self.MODES}, not {mode!r}")
        self.size, self.mode = size, mode
        self.channels_per_input = 2 if mode == "mean+max" else 1

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "mean":
            return F.avg_pool2d(x, self.size)
        if self.mode == "max":
            return F.max_pool2d(x, self.size)
        if self.mode == "max-freq":
            return F.max_pool2d(F.avg_pool2d(x, (1, self.size)), (self.size, 1))
        return torch.stack([F.avg_pool2d(x, self.size), F.max_pool2d(x, self.size)], dim=2).flatten(1, 2)


class ConvBranch(nn.Module):
    """Log-mel image (B, n_inputs, F, T) -> embedding (B, 2 * channels[-1]) by mean and max pooling."""

    def __init__(
        self,
        channels: list[int],
        kernel_size: int,
        input_pool: int,
        dropout: float,
        n_inputs: int = 1,
        input_pooling: str = "mean",
    ):
        super().__init__()
        pool = InputPool(input_pool, input_pooling)
        blocks, n_in = [pool], n_inputs * pool.channels_per_input
        for n_out in channels:
            blocks += [
                nn.Conv2d(n_in, n_out, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm2d(n_out),
                nn.GELU(),
                nn.MaxPool2d(2),
                MaskDropout(dropout),
            ]
            n_in = n_out
        self.blocks = nn.Sequential(*blocks)
        self.n_out = 2 * n_in

    def forward(self, x: Tensor) -> Tensor:
        # On the CPU, channels-last activations make batch-1 convolutions and max pooling several times faster
        # (the whole model 10-15%; measured on the CPU only, so GPUs keep the default). A one- or two-channel image
        # has little layout to carry, so the first convolution's output takes it.
        input_pool, first_conv, *layers = self.blocks
        x = first_conv(input_pool(x))
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in layers:
            x = layer(x)  # ends (B, C, F / 2^k, T / 2^k)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2C)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        # The explicit path gives the same values as SDPA; it is taken when maps are asked for, and in training on
        # the CPU, where SDPA draws its dropout mask by the slow bernoulli_.
        if need_weights or (self.training and self.dropout > 0 and x.device.type == "cpu"):
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, T, T)
            y = mask_dropout(weights, self.dropout, self.training) @ v
            weights = weights if need_weights else None
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out(y), weights


class EncoderBlock(nn.Module):
    """Pre-norm Transformer encoder layer that can hand back its attention weights."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), MaskDropout(dropout), nn.Linear(4 * d_model, d_model)
        )
        self.drop = MaskDropout(dropout)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(self.norm1(x), need_weights)
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, weights


class TransformerBranch(nn.Module):
    """Log-mel (B, n_inputs * F, T) -> embedding (B, d_model), its tokens (B, T', d_model), attention or None."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pool = nn.MaxPool1d(config.time_pool)
        self.embed = nn.Linear(config.n_inputs * config.n_mels, config.d_model)
        self.position = nn.Parameter(torch.zeros(1, config.n_tokens, config.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(config.d_model, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.token_score = nn.Linear(config.d_model, 1) if config.attention_pooling else None
        if self.token_score is not None:
            nn.init.zeros_(self.token_score.weight)
            nn.init.zeros_(self.token_score.bias)
        self.n_out = config.d_model

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        x = self.pool(x).transpose(1, 2)  # (B, T', F)
        x = self.embed(x) + self.position  # (B, T', D)
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights)
            maps.append(weights)
        x = self.norm(x)
        embedding = pool_tokens(x, None if self.token_score is None else self.token_score(x))  # (B, D)
        return embedding, x, torch.stack(maps, dim=1) if need_weights else None


def pool_tokens(tokens: Tensor, scores: Tensor | None) -> Tensor:
    """Tokens (..., T, D) -> (..., D): their mean, or with ``scores`` (..., T, 1) their softmax-weighted mean."""
    if scores is None:
        return tokens.mean(dim=-2)
    return (torch.softmax(scores, dim=-2) * tokens).sum(dim=-2)


class EmotionNet(nn.Module, PyTorchModelHubMixin, **HUB_METADATA):
    """Waveform (B, n_samples) at 16 kHz -> emotion logits (B, n_classes).

    The log-mel frontend is part of the model, so training, evaluation and the app cannot drift.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_models != 1:
            raise ValueError(f"One EmotionNet is one model; {config.n_models} make an EmotionEnsemble.")
        self.config = config
        self.frontend = LogMel(config.n_mels, config.n_fft)
        self.input_norm = nn.BatchNorm1d(config.n_mels)  # per-band standardisation, learnt from data
        self.cnns = nn.ModuleList(
            ConvBranch(
                config.cnn_channels,
                k,
                config.cnn_input_pool,
                config.dropout,
                config.n_inputs,
                config.cnn_input_pooling,
            )
            for k in config.cnn_kernel_sizes
        )
        self.transformer = TransformerBranch(config)
        n_fused = sum(cnn.n_out for cnn in self.cnns) + self.transformer.n_out
        self.head = nn.Sequential(MaskDropout(config.dropout), nn.Linear(n_fused, len(config.labels)))

    def forward(self, waveform: Tensor, return_attention: bool = False) -> ModelOutput:
        """waveform: (B, n_samples) float at 16 kHz, prepared by ``ser_model.audio.prepare_speech``."""
        return self.classify(self.frontend(waveform), return_attention)

    def classify(self, log_mel: Tensor, return_attention: bool = False) -> ModelOutput:
        """log_mel: (B, n_mels, n_frames) in dB, as :class:`LogMel` gives it (and as training augments it)."""
        x = self.input_norm(condition_log_mel(log_mel, self.config))  # (B, F, T)
        images = x.unsqueeze(1)  # (B, n_inputs, F, T)
        if self.config.band_snr_quantile is not None:
            heights = band_snr(log_mel, self.config.band_snr_quantile, self.config.band_snr_range_db)
            images = torch.stack([x, heights], dim=1)
        embeddings = [cnn(images) for cnn in self.cnns]  # each (B, 2C)
        # (B, D), (B, T', D), (B, L, H, T', T')
        temporal, tokens, attentions = self.transformer(images.flatten(1, 2), return_attention)
        logits = self.head(torch.cat([*embeddings, temporal], dim=1))  # (B, n_classes)
        return ModelOutput(logits=logits, attentions=attentions, tokens=tokens)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> EmotionNet | EmotionEnsemble:
        """Load from a local folder or a Hub repo id (``revision=`` pins a commit or tag).

        Only ``model.safetensors`` is read, never a pickle, and every tensor must match the model's. A checkpoint
        of several models (``n_models`` > 1 in its config) loads as the :class:`EmotionEnsemble` it is.

        Raises
        ------
        ModelLoadError
            If the Hub cannot be reached, the repo or file does not exist, or the keys or shapes differ.
        """
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ModelLoadError:
            raise
        except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as e:
            # LocalEntryNotFoundError (offline, not cached) and network errors both land here.
            raise ModelLoadError(f"Could not load the model from '{pretrained_model_name_or_path}': {e}") from e

    @classmethod
    def _from_pretrained(cls, **kwargs) -> EmotionNet | EmotionEnsemble:
        return _load_checkpoint(**kwargs)


class EmotionEnsemble(nn.Module, PyTorchModelHubMixin, **HUB_METADATA):
    """Several EmotionNets of one shape, trained separately with one recipe: their mean probability.

    Models from different seeds (or with and without early stopping) disagree on a quarter or more of unseen
    speakers' clips; the mean of two scored 1.9 points or more above one model on average over 5 folds, and
    lost less under noise (docs/experiments.md). It reads, saves and loads as one EmotionNet does (one log-mel,
    one ``config.json``, one ``model.safetensors``); its logits are the log of the mean probability, and its
    attention maps are the first model's.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.n_models < 2:
            raise ValueError(f"An ensemble needs at least 2 models, not {config.n_models}.")
        self.config = config
        member = replace(config, n_models=1, temperature=1.0, not_sure_below=0.0)
        self.members = nn.ModuleList(EmotionNet(member) for _ in range(config.n_models))
        self.frontend = self.members[0].frontend  # the same module: one log-mel for every member

    @classmethod
    def from_members(cls, members: list[EmotionNet]) -> EmotionEnsemble:
        """The ensemble of trained models of one shape (their calibration is dropped: the mean has its own)."""
        shapes = {repr(replace(m.config, temperature=1.0, not_sure_below=0.0)) for m in members}
        if len(shapes) > 1:
            raise ValueError("Only models of one shape and labels make an ensemble.")
        ensemble = cls(replace(members[0].config, n_models=len(members), temperature=1.0, not_sure_below=0.0))
        for slot, member in zip(ensemble.members, members):
            slot.load_state_dict(member.state_dict())
        return ensemble.eval()

    def forward(self, waveform: Tensor, return_attention: bool = False) -> ModelOutput:
        return self.classify(self.frontend(waveform), return_attention)

    def classify(self, log_mel: Tensor, return_attention: bool = False) -> ModelOutput:
        outputs = [m.classify(log_mel, return_attention and i == 0) for i, m in enumerate(self.members)]
        mean = log_mean_probability(torch.stack([o.logits for o in outputs]))
        return ModelOutput(logits=mean, attentions=outputs[0].attentions)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> EmotionNet | EmotionEnsemble:
        """As :meth:`EmotionNet.from_pretrained`: the checkpoint's config says which of the two it loads."""
        return EmotionNet.from_pretrained(pretrained_model_name_or_path, **kwargs)


def condition_log_mel(log_mel: Tensor, config: ModelConfig) -> Tensor:
    """(B, F, T) dB -> what the network reads: the frontend options of ``config`` applied in order."""
    if config.dynamic_range_db is not None:
        log_mel = floor_log_mel(log_mel, config.dynamic_range_db)
    if config.noise_floor_quantile is not None:
        log_mel = subtract_noise_floor(log_mel, config.noise_floor_quantile)
    if config.normalize_bands:
        log_mel = subtract_band_means(log_mel)
    return per_channel_energy_normalization(log_mel) if config.pcen else log_mel


def floor_log_mel(log_mel: Tensor, dynamic_range_db: float) -> Tensor:
    """(B, F, T) dB, each window floored ``dynamic_range_db`` below its own peak."""
    return torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - dynamic_range_db)


def log_mean_probability(logits: Tensor) -> Tensor:
    """Members' logits (M, B, n_classes) -> the log of their mean probability (B, n_classes): an ensemble's answer."""
    return logits.log_softmax(dim=-1).logsumexp(dim=0) - math.log(len(logits))


def _load_checkpoint(
    *,
    model_id: str,
    revision: str | None,
    cache_dir: str | Path | None,
    force_download: bool,
    local_files_only: bool,
    token: str | bool | None,
    map_location: str = "cpu",
    config: ModelConfig | dict | None = None,
    **unused,
) -> EmotionNet | EmotionEnsemble:
    """The Hub mixin's ``_from_pretrained`` for both classes: the config says which one the weights are."""
    if config is None:
        raise ModelLoadError(f"'{model_id}' has no {constants.CONFIG_NAME}; it is not an EmotionNet checkpoint.")
    if isinstance(config, dict):
        try:
            config = ModelConfig(**config)
        except TypeError as e:
            raise ModelLoadError(f"{constants.CONFIG_NAME} of '{model_id}' does not describe an EmotionNet: {e}") from e
    if Path(model_id).is_dir():
        weights_file = Path(model_id) / constants.SAFETENSORS_SINGLE_FILE
        if not weights_file.is_file():
            raise ModelLoadError(f"{weights_file} not found; only safetensors weights are loaded.")
    else:
        try:
            weights_file = hf_hub_download(
                repo_id=model_id,
                filename=constants.SAFETENSORS_SINGLE_FILE,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        except EntryNotFoundError as e:
            raise ModelLoadError(f"'{model_id}' has no {constants.SAFETENSORS_SINGLE_FILE}.") from e
    model = (EmotionEnsemble if config.n_models > 1 else EmotionNet)(config)
    state = safetensors.torch.load_file(str(weights_file), device="cpu")
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    mismatched = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        raise ModelLoadError(
            f"The weights in {weights_file} do not match the model: missing {missing}, "
            f"unexpected {unexpected}, wrong shape {sorted(mismatched)}."
        )
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()
