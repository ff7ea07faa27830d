"""Figures of what the model saw and where it looked, for the app and notebooks.

The spectrogram and the attention maps, which every request shows, are drawn by blitting, matplotlib's
technique for animation: a prepared figure has its axes, ticks, labels and colour bar drawn once, and a
request redraws only the data on top and takes the pixels, several times faster than a new figure. Their
scales are therefore fixed: the spectrogram in dB below its loudest point, loudness in dB below the
loudest frame, attention as weights from 0 to 1. Figures are ``matplotlib.figure.Figure`` (no pyplot state).
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from .audio import HOP_LENGTH, SAMPLE_RATE
from .inference import Prediction
from .prosody import Prosody, measure_prosody

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE
SPECTROGRAM_RANGE_DB = 80.0  # the colour scale: the loudest point down to 80 dB below it
LOUDNESS_RANGE_DB = 50.0
ROLLOUT_RANGE = (0.25, 10.0)  # relevance relative to an even spread, on a log axis
FIGURE_DPI = 80  # 640 pixels across: the width the page shows them at on a laptop, and every pixel costs time

_pools: dict[tuple, queue.SimpleQueue] = {}  # prepared canvases, by figure and shape, not in use
_pools_lock = threading.Lock()


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


class _Heatmap:
    """Paints an array into the pixels an ``imshow`` image covers, with its colour map and norm.

    What ``imshow(interpolation="nearest")`` draws, without matplotlib's general resampling pipeline, which
    took most of a request's time. The image artist itself stays undrawn (animated) and feeds the colour bar.
    """

    def __init__(self, image: AxesImage, shape: tuple[int, int]):
        box = image.axes.get_window_extent()  # display pixels, y upwards; the image fills its axes
        height = int(image.figure.bbox.height)
        self.top, self.bottom = height - round(box.y1), height - round(box.y0)
        self.left, self.right = round(box.x0), round(box.x1)
        n_rows, n_cols = shape
        self.rows = (np.arange(self.bottom - self.top) * n_rows // (self.bottom - self.top))[::-1]  # origin="lower"
        self.cols = np.arange(self.right - self.left) * n_cols // (self.right - self.left)
        self.norm = image.norm
        colours = image.cmap(np.linspace(0, 1, 256))[:, :3]
        background = np.array(image.axes.get_facecolor()[:3])[None]  # for NaN: gaps between maps
        self.palette = (np.concatenate([colours, background]) * 255).round().astype(np.uint8)  # (257, 3)

    def paint(self, canvas: FigureCanvasAgg, data: np.ndarray) -> None:
        scaled = np.ma.filled(self.norm(data), np.nan)  # colour the data first, then enlarge it to the pixels
        index = np.where(np.isnan(scaled), 256, (np.clip(scaled, 0, 1) * 255).round()).astype(np.uint16)
        pixels = self.palette[index[np.ix_(self.rows, self.cols)]]
        np.asarray(canvas.buffer_rgba())[self.top : self.bottom, self.left : self.right, :3] = pixels


class _SpectrogramCanvas:
    """The spectrogram figure of one window shape, its axes drawn once; :meth:`render` draws only the data."""

    def __init__(self, n_mels: int, n_frames: int):
        seconds = n_frames * FRAME_SECONDS
        self.figure = Figure(figsize=(8, 5), dpi=FIGURE_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        spec_ax = self.figure.add_axes((0.1, 0.42, 0.76, 0.5))
        loud_ax = self.figure.add_axes((0.1, 0.255, 0.76, 0.14), sharex=spec_ax)
        attention_ax = self.figure.add_axes((0.1, 0.09, 0.76, 0.14), sharex=spec_ax)
        colorbar_ax = self.figure.add_axes((0.875, 0.42, 0.018, 0.5))

        self.image = spec_ax.imshow(
            np.zeros((n_mels, n_frames)),
            origin="lower",
            aspect="auto",
            cmap="magma",
            animated=True,
            vmin=-SPECTROGRAM_RANGE_DB,
            vmax=0,
            extent=(0, seconds, 0, n_mels),
            interpolation="nearest",
        )
        self.band_centres_hz = mel_band_centres_hz(n_mels)
        tick_hz = [125, 250, 500, 1000, 2000, 4000, 7000]
        spec_ax.set_yticks(self._mel_position(np.array(tick_hz)), tick_hz)
        spec_ax.set_ylim(0, n_mels)
        spec_ax.set_ylabel("frequency (Hz)")
        spec_ax.set_title("What the model heard (first 3 s), and where it listened", fontsize=11)
        (self.pitch,) = spec_ax.plot([], [], color="#22e3ff", linewidth=2, animated=True, label="pitch (F0)")
        spec_ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
        self.figure.colorbar(self.image, cax=colorbar_ax, label="dB below loudest")

        (self.loudness,) = loud_ax.plot([], [], color="#e45756", animated=True)
        loud_ax.set_ylim(-LOUDNESS_RANGE_DB, 3)
        loud_ax.set_yticks([-40, -20, 0])
        loud_ax.set_ylabel("loudness\n(dB)", fontsize=9)

        (self.attention,) = attention_ax.plot([], [], color="#4c78a8", animated=True)
        attention_ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        attention_ax.set_yscale("log")
        attention_ax.set_ylim(*ROLLOUT_RANGE)
        attention_ax.set_yticks([0.5, 1, 5], ["0.5", "1", "5"])
        attention_ax.set_ylabel("attention\n(x even)", fontsize=9)
        attention_ax.set_xlabel("time (s)")
        attention_ax.set_xlim(0, seconds)
        for ax in (spec_ax, loud_ax, attention_ax):
            ax.tick_params(axis="y", labelsize=8)
        for ax in (spec_ax, loud_ax):
            ax.tick_params(labelbottom=False)
        self.axes = (spec_ax, loud_ax, attention_ax)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.heatmap = _Heatmap(self.image, (n_mels, n_frames))

    def _mel_position(self, hz: np.ndarray) -> np.ndarray:
        return np.interp(hz, self.band_centres_hz, np.arange(len(self.band_centres_hz)) + 0.5)

    def render(self, log_mel: np.ndarray, prosody: Prosody, relevance: np.ndarray) -> np.ndarray:
        self.canvas.restore_region(self.background)
        self.heatmap.paint(self.canvas, log_mel - log_mel.max())
        self.pitch.set_data(prosody.seconds, self._mel_position(prosody.pitch_hz))  # NaN (unvoiced) breaks the line
        self.loudness.set_data(prosody.seconds, prosody.loudness_db)
        token_seconds = log_mel.shape[1] * FRAME_SECONDS / len(relevance)
        relative = np.clip(relevance * len(relevance), *ROLLOUT_RANGE)  # 1.0 = an even spread over the window
        self.attention.set_data((np.arange(len(relevance)) + 0.5) * token_seconds, relative)
        spec_ax, loud_ax, attention_ax = self.axes
        spec_ax.draw_artist(self.pitch)
        loud_ax.draw_artist(self.loudness)
        attention_ax.draw_artist(self.attention)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


class _AttentionCanvas:
    """Every layer's and head's attention map tiled in one image, axes drawn once."""

    def __init__(self, n_layers: int, n_heads: int, n_tokens: int, seconds: float):
        gap = max(n_tokens // 12, 2)
        self.size, self.n_tokens = n_tokens + gap, n_tokens
        self.mosaic = np.full((n_layers * self.size - gap, n_heads * self.size - gap), np.nan)
        self.figure = Figure(figsize=(8, 1.55 * n_layers + 0.9), dpi=FIGURE_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.ax = self.figure.add_axes((0.09, 0.13, 0.78, 0.78))
        colorbar_ax = self.figure.add_axes((0.885, 0.13, 0.018, 0.78))
        # Attention is peaky (most weights near 0, a few near 1): a square-root colour scale shows both.
        self.image = self.ax.imshow(
            self.mosaic,
            cmap="viridis",
            origin="lower",
            norm=PowerNorm(0.5, vmin=0, vmax=1),
            interpolation="nearest",
            animated=True,
        )
        centres = np.arange(n_heads) * self.size + n_tokens / 2
        self.ax.set_xticks(centres, [f"head {h + 1}" for h in range(n_heads)])
        rows = np.arange(n_layers) * self.size + n_tokens / 2
        self.ax.set_yticks(rows, [f"layer {n_layers - i}" for i in range(n_layers)])
        self.ax.tick_params(length=0)
        for spine in self.ax.spines.values():
            spine.set_visible(False)
        self.ax.set_xlabel(f"each map: attended time 0-{seconds:.0f} s (right) for each moment 0-{seconds:.0f} s (up)")
        self.ax.set_title("Attention maps: where each moment looked", fontsize=11)
        self.figure.colorbar(self.image, cax=colorbar_ax, label="attention weight")
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.heatmap = _Heatmap(self.image, self.mosaic.shape)

    def render(self, attentions: np.ndarray) -> np.ndarray:
        n_layers, n_heads, n, size = *attentions.shape[:2], self.n_tokens, self.size
        for layer in range(n_layers):
            row = (n_layers - 1 - layer) * size  # layer 1 on top
            for head in range(n_heads):
                self.mosaic[row : row + n, head * size : head * size + n] = attentions[layer, head]
        self.canvas.restore_region(self.background)
        self.heatmap.paint(self.canvas, self.mosaic)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


_Canvas = _SpectrogramCanvas | _AttentionCanvas


def render_spectrogram(prediction: Prediction, prosody: Prosody | None = None) -> np.ndarray:
    """The first window's log-mel with time (s) and frequency (Hz) axes and the pitch contour over it, the
    loudness, and attention rollout over time, as an RGB image (H, W, 3) uint8."""
    log_mel = prediction.log_mel
    if prosody is None:  # the first window's audio: predict pads speech to at least one window
        prosody = measure_prosody(prediction.speech[: (log_mel.shape[1] - 1) * HOP_LENGTH])
    with _borrow(("spectrogram", *log_mel.shape), lambda: _SpectrogramCanvas(*log_mel.shape)) as canvas:
        return canvas.render(log_mel, prosody, attention_rollout(prediction.attentions))


def render_attention_maps(prediction: Prediction) -> np.ndarray:
    """Every layer's and head's time x time attention, tiled: a row per layer, a column per head, as an RGB
    image (H, W, 3) uint8. Within a map, rows are the moment looking (time upwards) and columns the moment
    looked at (time rightwards)."""
    attentions = prediction.attentions
    seconds = prediction.log_mel.shape[1] * FRAME_SECONDS
    with _borrow(("attention", *attentions.shape), lambda: _AttentionCanvas(*attentions.shape[:3], seconds)) as canvas:
        return canvas.render(attentions)


def to_jpeg(image: np.ndarray) -> bytes:
    """An RGB figure as JPEG bytes, without chroma subsampling so thin coloured lines and text stay sharp.

    Encoding is most of a figure's cost under load: JPEG is 3-4x faster than PNG here, at a similar size."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="JPEG", quality=90, subsampling=0)
    return buffer.getvalue()


@contextmanager
def _borrow(key: tuple, build: Callable[[], _Canvas]) -> Iterator[_Canvas]:
    """A prepared canvas of this figure and shape, for one render: concurrent requests never share one, and
    the pool grows only to the most requests ever drawn at once (a canvas takes 100-500 ms to prepare)."""
    with _pools_lock:
        pool = _pools.setdefault(key, queue.SimpleQueue())
    try:
        canvas = pool.get_nowait()
    except queue.Empty:
        canvas = build()
    try:
        yield canvas
    finally:
        pool.put(canvas)


def plot_timeline(prediction: Prediction) -> Figure:
    """Each utterance of the recording as a bar along its time axis, coloured by its emotion, as tall as the
    model's confidence in it and labelled with both."""
    labels = list(prediction.probabilities)
    fig = Figure(figsize=(8, 2.6), dpi=FIGURE_DPI)
    ax = fig.add_axes((0.08, 0.34, 0.9, 0.52))
    for utterance in prediction.utterances:
        confidence = utterance.probabilities[utterance.label]
        colour = f"C{labels.index(utterance.label)}"
        ax.bar(
            utterance.start, confidence, width=utterance.end - utterance.start, align="edge", color=colour, alpha=0.8
        )
        ax.text((utterance.start + utterance.end) / 2, confidence + 0.03, utterance.label, ha="center", fontsize=9)
    end = max(u.end for u in prediction.utterances)
    ax.set_xlim(0, end + 0.2)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.5, 1])
    ax.set_xlabel("time in the recording (s)")
    ax.set_ylabel("confidence")
    ax.set_title(f"Emotion of each utterance ({len(prediction.utterances)}, split at pauses)", fontsize=11)
    return fig
