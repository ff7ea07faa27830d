"""Figures of what the model saw and where it looked, for the app and notebooks.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so concurrent requests
cannot draw into each other's axes.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .audio import HOP_LENGTH, SAMPLE_RATE
from .inference import Prediction

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE


def attention_rollout(attentions: np.ndarray) -> np.ndarray:
    """How much each token contributes to the clip embedding, through every layer.

    Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928): average the heads,
    add the residual path as identity, renormalise, multiply through the layers. The model averages
    its output tokens, so a token's relevance is its mean column of the rolled-out matrix.

    attentions: (n_layers, n_heads, T, T) -> (T,), summing to 1.
    """
    n_tokens = attentions.shape[-1]
    rollout = np.eye(n_tokens)
    for layer in attentions:
        mixed = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(n_tokens)
        rollout = (mixed / mixed.sum(axis=-1, keepdims=True)) @ rollout
    relevance = rollout.mean(axis=0)
    return relevance / relevance.sum()


def mel_band_centres_hz(n_mels: int) -> np.ndarray:
    """Centre frequency of each mel band (HTK mel scale, as torchaudio's default)."""
    mel = np.linspace(0, 2595 * np.log10(1 + (SAMPLE_RATE / 2) / 700), n_mels + 2)[1:-1]
    return 700 * (10 ** (mel / 2595) - 1)


def plot_spectrogram(prediction: Prediction) -> Figure:
    """The log-mel input with time (s) and frequency (Hz) axes, and attention rollout over time."""
    log_mel = prediction.log_mel
    n_mels, n_frames = log_mel.shape
    seconds = n_frames * FRAME_SECONDS
    relevance = attention_rollout(prediction.attentions)
    token_seconds = seconds / len(relevance)

    fig = Figure(figsize=(8, 4.2), dpi=100)
    spec_ax = fig.add_axes((0.1, 0.36, 0.76, 0.56))
    curve_ax = fig.add_axes((0.1, 0.11, 0.76, 0.2), sharex=spec_ax)
    colorbar_ax = fig.add_axes((0.875, 0.36, 0.018, 0.56))
    top = log_mel.max()
    image = spec_ax.imshow(
        log_mel, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top, extent=(0, seconds, 0, n_mels)
    )
    tick_hz = [125, 250, 500, 1000, 2000, 4000, 7000]
    spec_ax.set_yticks(np.interp(tick_hz, mel_band_centres_hz(n_mels), np.arange(n_mels) + 0.5), tick_hz)
    spec_ax.set_ylim(0, n_mels)
    spec_ax.set_ylabel("frequency (Hz)")
    window_note = f", first {seconds:.0f} s" if len(prediction.window_starts) > 1 else ""
    spec_ax.set_title(f"Log-mel spectrogram the model heard{window_note}, and where it listened", fontsize=11)
    centres = (np.arange(len(relevance)) + 0.5) * token_seconds
    # Relevance relative to an even spread (1.0): above the dashed line, the model listened more.
    relative = relevance * len(relevance)
    floor = min(relative.min(), 1.0) * 0.9
    curve_ax.fill_between(centres, relative, floor, color="#4c78a8", alpha=0.35)
    curve_ax.plot(centres, relative, color="#4c78a8")
    curve_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    curve_ax.set_ylim(floor, max(relative.max(), 1.0) * 1.05)
    curve_ax.tick_params(axis="y", labelsize=7)
    curve_ax.set_ylabel("attention\n(x even)", fontsize=9)
    curve_ax.set_xlabel("time (s)")
    curve_ax.set_xlim(0, seconds)
    spec_ax.tick_params(labelbottom=False)
    fig.colorbar(image, cax=colorbar_ax, label="power (dB)")
    return fig


def plot_attention_maps(prediction: Prediction) -> Figure:
    """Every layer's and head's time x time attention, tiled in one image: a row per layer, a column per head.

    Within a map, rows are the moment looking (time upwards) and columns the moment looked at (time
    rightwards). One image and one colour scale draw several times faster than a grid of axes.
    """
    attentions = prediction.attentions
    n_layers, n_heads, n_tokens, _ = attentions.shape
    seconds = prediction.log_mel.shape[1] * FRAME_SECONDS
    gap = max(n_tokens // 12, 2)
    size = n_tokens + gap
    mosaic = np.full((n_layers * size - gap, n_heads * size - gap), np.nan)
    for layer in range(n_layers):
        for head in range(n_heads):
            row = (n_layers - 1 - layer) * size  # layer 1 on top
            mosaic[row : row + n_tokens, head * size : head * size + n_tokens] = attentions[layer, head]

    fig = Figure(figsize=(8, 1.55 * n_layers + 0.9), dpi=100)
    ax = fig.add_axes((0.09, 0.13, 0.78, 0.78))
    colorbar_ax = fig.add_axes((0.885, 0.13, 0.018, 0.78))
    top = float(np.percentile(attentions, 99.5))  # one colour scale for every map, so they compare
    image = ax.imshow(mosaic, cmap="viridis", origin="lower", vmin=0, vmax=top, interpolation="nearest")
    centres = np.arange(n_heads) * size + n_tokens / 2
    ax.set_xticks(centres, [f"head {h + 1}" for h in range(n_heads)])
    ax.set_yticks(np.arange(n_layers) * size + n_tokens / 2, [f"layer {n_layers - i}" for i in range(n_layers)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(f"each map: attended time 0-{seconds:.0f} s (right) for each moment 0-{seconds:.0f} s (up)")
    ax.set_title("Attention maps: where each moment looked", fontsize=11)
    fig.colorbar(image, cax=colorbar_ax, label="attention weight")
    return fig


def plot_timeline(prediction: Prediction) -> Figure:
    """Probability of each emotion over time, one point per window (centre time)."""
    labels = list(prediction.probabilities)
    centres = prediction.window_starts + prediction.log_mel.shape[1] * FRAME_SECONDS / 2
    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.add_axes((0.08, 0.34, 0.9, 0.56))
    colors = [f"C{i}" for i in range(len(labels))]
    for i, label in enumerate(labels):
        ax.plot(centres, prediction.window_probabilities[:, i], marker="o", ms=3, label=label, color=colors[i])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(f"Emotion over time ({len(centres)} windows); overall: {prediction.label}", fontsize=11)
    ax.legend(ncols=8, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return fig
