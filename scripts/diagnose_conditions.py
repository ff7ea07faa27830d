"""Why a condition costs what it does: each fold's model of a run on its own held-out actors, under variants of
the benchmark's conditions that take one cause at a time.

    python scripts/diagnose_conditions.py --run experiments/late-cb2-90-s4 --set spectrum
    python scripts/diagnose_conditions.py --run experiments/late-cb2-90-s4 --set quiet
    python scripts/diagnose_conditions.py --run experiments/late-cb2-90-s4 --set floor

A diagnostic, not the benchmark (``train.robustness`` is), with seeds of its own. ``spectrum``: which part of
the spectrum the model leans on (brick-wall filters over the whole recording, and pink noise at the benchmark's
5 dB SNR kept to one band). ``quiet``: what the voice 40 dB quieter loses, level, rounding or noise (the
benchmark's condition beside the same voice in floating point, with the recorder's dither before rounding or
after it, and with independent white noise of the rounding noise's power). ``floor``: whether the model
reads the studio's silence (white noise far below the voice, which raises only the floor). Prints each
condition's accuracy over the folds asked for, and its drop from clean.
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


QUIET_GAIN = 10.0 ** (-40.0 / 20.0)
STEP = 1 / channels.PCM16_MAX  # one 16-bit step, as channels.to_16_bit rounds


def to_16_bit(samples: np.ndarray) -> np.ndarray:
    return channels.to_16_bit(torch.from_numpy(samples.astype(np.float32))[None])[0].numpy()


def triangular_dither(n: int, generator: torch.Generator) -> np.ndarray:
    """Triangular (TPDF) dither of one 16-bit step, as a recorder adds it before rounding."""
    return ((torch.rand(n, generator=generator) - torch.rand(n, generator=generator)) * STEP).numpy()


Degrade = Callable[[np.ndarray, torch.Generator], np.ndarray]
SPECTRUM: dict[str, Degrade] = {
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
QUIET: dict[str, Degrade] = {
    "clean": lambda x, g: x,
    "-40 dB in floating point": lambda x, g: QUIET_GAIN * x,
    "-40 dB stored as 16-bit (the benchmark's)": lambda x, g: to_16_bit(QUIET_GAIN * x),
    "-40 dB, dither before rounding": lambda x, g: to_16_bit(QUIET_GAIN * x + triangular_dither(len(x), g)),
    "-40 dB, dither after rounding": lambda x, g: to_16_bit(QUIET_GAIN * x) + triangular_dither(len(x), g),
    "-40 dB, white noise of the rounding's power": lambda x, g: (
        QUIET_GAIN * x + STEP / np.sqrt(12.0) * torch.randn(len(x), generator=g).numpy()
    ),
}


def white_noise_at(snr_db: float) -> Degrade:
    """White noise ``snr_db`` below the voice over the whole recording: at 40-50 dB it is barely audible, but it
    sets the floor that a studio recording's pauses otherwise show."""

    def degrade(samples, generator):
        x = torch.from_numpy(samples)[None]
        noise = channels.coloured_noise(tuple(x.shape), "white", generator)
        return channels.add_noise(x, torch.tensor([len(samples)]), noise, torch.tensor([snr_db]))[0].numpy()

    return degrade


FLOOR: dict[str, Degrade] = {"clean": lambda x, g: x} | {
    f"white noise {snr:.0f} dB below the voice": white_noise_at(snr) for snr in (60.0, 50.0, 40.0, 30.0)
}
SETS = {"spectrum": SPECTRUM, "quiet": QUIET, "floor": FLOOR}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `python -m train --protocol actors` folder with fold models")
    parser.add_argument("--set", choices=list(SETS), default="spectrum", help="which conditions")
    parser.add_argument("--folds", type=int, nargs="+", help="1-based; default: every fold with a model")
    parser.add_argument("--data", help="RAVDESS folder (default: the one the run trained on)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    config = read_config(run)
    torch.set_num_threads(config.threads)
    clips = parse_ravdess(args.data or config.data)
    recordings = load_recordings(clips, config.cache_dir)
    conditions = SETS[args.set]
    hits: dict[str, list[bool]] = {name: [] for name in conditions}
    for k in args.folds or range(1, 6):
        fold_dir = run / "runs" / f"actors-fold{k}"
        if not (fold_dir / "model").exists():
            continue
        test_actors = set(json.loads((fold_dir / "result.json").read_text())["test_actors"])
        recognizer = EmotionRecognizer(EmotionNet.from_pretrained(fold_dir / "model"))
        test_idx = [i for i, c in enumerate(clips) if c.actor in test_actors]
        for j, (name, degrade) in enumerate(conditions.items()):
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
