"""Which part of the spectrum a run's fold models lean on: each fold's model on its own held-out actors, its
voice filtered or its noise kept to one band, conditions the training never drew.

    python scripts/spectrum_diagnostic.py --run experiments/late-cb2-90-s4

A diagnostic, not the benchmark (``train.robustness`` is): brick-wall filters in the frequency domain over the
whole recording, and pink noise at 5 dB SNR (the benchmark's level) kept to one band, each with seeds of its own.
Prints each condition's accuracy over the folds asked for, and its drop from clean.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ser_model import AudioError, EmotionNet, EmotionRecognizer  # noqa: E402
from ser_model.audio import SAMPLE_RATE  # noqa: E402
from train import channels  # noqa: E402
from train.data import load_recordings, parse_ravdess  # noqa: E402
from train.ensemble import read_config  # noqa: E402

DIAGNOSTIC_SEED = 77
NYQUIST = SAMPLE_RATE / 2


def keep_band(samples: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """``samples`` with everything outside low_hz..high_hz removed (a brick wall, zero phase)."""
    spectrum = np.fft.rfft(samples)
    frequencies = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * ((frequencies >= low_hz) & (frequencies <= high_hz)), n=len(samples))


def pink_noise_in_band(low_hz: float, high_hz: float) -> Callable[[np.ndarray, torch.Generator], np.ndarray]:
    """Pink noise at 5 dB below the voice (as the benchmark's), then all of it outside low_hz..high_hz removed."""

    def degrade(samples, generator):
        x = torch.from_numpy(samples)[None]
        noise = channels.coloured_noise(tuple(x.shape), "pink", generator)
        noisy = channels.add_noise(x, torch.tensor([len(samples)]), noise, torch.tensor([5.0]))[0].numpy()
        return samples + keep_band(noisy - samples, low_hz, high_hz)

    return degrade


CONDITIONS: dict[str, Callable[[np.ndarray, torch.Generator], np.ndarray]] = {
    "clean": lambda x, g: x,
    "low-passed at 3.4 kHz": lambda x, g: keep_band(x, 0, 3400),
    "low-passed at 2 kHz": lambda x, g: keep_band(x, 0, 2000),
    "high-passed at 300 Hz": lambda x, g: keep_band(x, 300, NYQUIST),
    "band-passed 300-3400 Hz": lambda x, g: keep_band(x, 300, 3400),
    "pink noise 5 dB": pink_noise_in_band(0, NYQUIST),
    "pink noise 5 dB, below 1 kHz only": pink_noise_in_band(0, 1000),
    "pink noise 5 dB, above 1 kHz only": pink_noise_in_band(1000, NYQUIST),
    "pink noise 5 dB, above 3.4 kHz only": pink_noise_in_band(3400, NYQUIST),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `python -m train --protocol actors` folder with fold models")
    parser.add_argument("--folds", type=int, nargs="+", help="1-based; default: every fold with a model")
    parser.add_argument("--data", help="RAVDESS folder (default: the one the run trained on)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    config = read_config(run)
    torch.set_num_threads(config.threads)
    clips = parse_ravdess(args.data or config.data)
    recordings = load_recordings(clips, config.cache_dir)
    hits: dict[str, list[bool]] = {name: [] for name in CONDITIONS}
    for k in args.folds or range(1, 6):
        fold_dir = run / "runs" / f"actors-fold{k}"
        if not (fold_dir / "model").exists():
            continue
        test_actors = set(json.loads((fold_dir / "result.json").read_text())["test_actors"])
        recognizer = EmotionRecognizer(EmotionNet.from_pretrained(fold_dir / "model"))
        test_idx = [i for i, c in enumerate(clips) if c.actor in test_actors]
        for j, (name, degrade) in enumerate(CONDITIONS.items()):
            for i in test_idx:
                generator = torch.Generator().manual_seed(DIAGNOSTIC_SEED + 1000 * j + i)
                audio = degrade(recordings[i], generator).astype(np.float32)
                try:
                    hits[name].append(recognizer.predict((SAMPLE_RATE, audio)).label == clips[i].emotion)
                except AudioError:
                    hits[name].append(False)  # refused: no answer, counted wrong as the benchmark counts it
        print(f"fold {k}: {len(test_idx)} clips of actors {sorted(test_actors)}", flush=True)
    clean = np.mean(hits["clean"])
    print(f"\n{run}, {len(hits['clean'])} clips:\n| condition | accuracy | drop from clean |\n|---|---|---|")
    for name, h in hits.items():
        drop = "" if name == "clean" else f"{100 * (np.mean(h) - clean):+.1f} points"
        print(f"| {name} | {np.mean(h):.1%} | {drop} |")


if __name__ == "__main__":
    main()
