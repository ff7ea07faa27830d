"""Speed and memory of the shipped model on this machine. Prints figures; asserts nothing.

    python scripts/benchmark.py [--model checkpoints/ser-parallel] [--threads 2] [--runs 50]

Targets (README): <= 15 ms per 3-s clip (batch 1, frontend included); <= 8 ms for the full path (decode a
file, prepare, model; every model of an ensemble included); a 60-s recording in <= 10x one clip; <= 60 ms
server-side from audio in to every figure out for a 3-s clip (what /analyze computes: prediction, pitch and
loudness, both figures as JPEG); <= 100 ms for a live update (a 0.5-s microphone chunk in, a meter reading out).
"""

from __future__ import annotations

import argparse
import io
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ser_model import DEFAULT_CHECKPOINT, EmotionRecognizer  # noqa: E402
from ser_model.audio import SAMPLE_RATE  # noqa: E402
from ser_model.fused import fuse  # noqa: E402
from ser_model.prosody import measure_prosody  # noqa: E402
from ser_model.streaming import LiveTake  # noqa: E402
from ser_model.visualize import plot_timeline, render_attention_maps, render_spectrogram, to_jpeg  # noqa: E402


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 16))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    return (0.3 * source * envelope + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


def median_ms(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def render(fig) -> None:
    fig.savefig(io.BytesIO(), format="png")  # what gr.Plot does with a matplotlib figure


def figures(prediction) -> None:
    """What app.analyze draws for a clip: both figures, encoded as the page receives them."""
    to_jpeg(render_spectrogram(prediction))
    to_jpeg(render_attention_maps(prediction))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = EmotionRecognizer.from_pretrained(args.model, device="cpu")
    model = recognizer.model
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {args.threads} torch threads, torch {torch.__version__}")
    print(f"parameters: {model.n_params:,} ({model.config.n_models} model{'s' if model.config.n_models > 1 else ''})")

    window = torch.from_numpy(np.ascontiguousarray(speech_like(model.config.clip_seconds)))[None]
    network = fuse(model)  # what predict() runs
    with torch.inference_mode():
        model_ms = median_ms(lambda: network(window), args.runs)
    print(f"model latency, one 3-s clip, batch 1, frontend included: {model_ms:.1f} ms (median of {args.runs})")

    clip, minute = (SAMPLE_RATE, speech_like(3.0)), (SAMPLE_RATE, speech_like(60.0, seed=1))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        sf.write(path, speech_like(3.0), SAMPLE_RATE, subtype="PCM_16")
        file_ms = median_ms(lambda: recognizer.predict(path), args.runs)
    print(f"full path, one 3-s 16-bit WAV file (decode, prepare, model): {file_ms:.1f} ms")
    clip_ms = median_ms(lambda: recognizer.predict(clip), args.runs)
    minute_ms = median_ms(lambda: recognizer.predict(minute), max(args.runs // 5, 5), warmup=2)
    print(f"predict() on a 3-s clip (trim, level, window, model): {clip_ms:.1f} ms")
    n_windows = len(recognizer.predict(minute).window_starts)
    ratio = minute_ms / clip_ms
    print(f"predict() on a 60-s recording ({n_windows} windows): {minute_ms:.1f} ms = {ratio:.1f}x one clip")

    prediction = recognizer.predict(clip)
    speech = prediction.speech[: model.config.n_samples]
    print(f"  pitch and loudness (YIN + frame RMS): {median_ms(lambda: measure_prosody(speech), 20, 3):.1f} ms")
    spectrogram_ms = median_ms(lambda: to_jpeg(render_spectrogram(prediction)), 20, 3)
    print(f"  spectrogram figure with pitch, loudness and attention, as JPEG: {spectrogram_ms:.1f} ms")
    attention_ms = median_ms(lambda: to_jpeg(render_attention_maps(prediction)), 20, 3)
    print(f"  attention maps figure, as JPEG: {attention_ms:.1f} ms")
    app_ms = median_ms(lambda: figures(recognizer.predict(clip)), 20, 3)
    print(f"app server time, 3-s clip, audio in to every figure out: {app_ms:.1f} ms (target <= 60 ms)")

    def app_request_long() -> None:
        prediction = recognizer.predict(minute)
        figures(prediction)
        render(plot_timeline(prediction))

    print(f"app server time, 60-s recording with its timeline: {median_ms(app_request_long, 5, 1):.0f} ms")
    take = LiveTake(recognizer)
    half_second = (48000, (speech_like(0.5) * 32767).astype(np.int16)[np.arange(24000) // 3])  # as a browser sends
    for _ in range(6):  # a full window of audio, so every reading scores one
        take.add(half_second)
    print(
        f"live update, one 0.5-s chunk in, a meter reading out: {median_ms(lambda: take.add(half_second), 50):.1f} ms"
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
