"""Hold a checkpoint to what a classroom does to a voice: python -m train.robustness --data DIR [--model M] [--json F]

Every RAVDESS clip under DIR is scored clean and under each channel condition below, made from it by
``train.channels`` with fixed seeds, noise and impulse responses of their own (training draws from
``TrainConfig.seed``; these from ROBUSTNESS_SEED), so any two checkpoints meet exactly the same audio.
A degraded clip goes through ``EmotionRecognizer.predict`` as an upload would; one the app would refuse
counts as wrong and is reported as refused. Under the ``actors`` protocol (``python -m train``) each fold's
model is scored this way on its own held-out actors. The shipped model heard every actor here: on this
data its table measures fit, not generalisation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ser_model import DEFAULT_CHECKPOINT, AudioError, EmotionNet, EmotionRecognizer, ModelLoadError
from ser_model.audio import SAMPLE_RATE

from . import channels
from .data import Clip, load_recordings, parse_ravdess

ROBUSTNESS_SEED = 2026_11_29
ROOM_RT60, ROOM_DRR_DB = 0.6, 0.0  # a reverberant classroom, the speaker a few metres from the microphone

Degrade = Callable[[np.ndarray, torch.Generator, list[np.ndarray]], np.ndarray]


def _noise(colour: str, snr_db: float) -> Degrade:
    def degrade(recording, generator, others):
        x = torch.from_numpy(recording)[None]
        if colour == "babble":  # four other speakers of the evaluated set, as a classroom's chatter: continuous
            picks = torch.randperm(len(others), generator=generator)[: channels.BABBLE_TALKERS]
            talkers = torch.stack([_fit_length(others[int(i)], len(recording), generator) for i in picks])
            noise = channels.babble(talkers)[None]
        else:
            noise = channels.coloured_noise(tuple(x.shape), colour, generator)
        return channels.add_noise(x, torch.tensor([len(recording)]), noise, torch.tensor([snr_db]))[0].numpy()

    return degrade


def _reverb(recording, generator, others):
    response = channels.impulse_response(ROOM_RT60, ROOM_DRR_DB, generator)
    return channels.reverberate(torch.from_numpy(recording)[None], response[None])[0].numpy()


def _telephone(recording, generator, others):
    return channels.telephone(torch.from_numpy(recording)[None])[0].numpy()


def _codec(name: str) -> Degrade:
    return lambda recording, generator, others: channels.codec(recording, name)


def _quiet(gain_db: float) -> Degrade:
    def degrade(recording, generator, others):
        quieter = channels.gain_and_clip(torch.from_numpy(recording)[None], torch.tensor([gain_db]))[0]
        return channels.to_16_bit(quieter).numpy()

    return degrade


def _room_noise_around(recording, generator, others):
    return channels.surround_with_noise(recording, seconds=2.0, snr_db=30.0, generator=generator)


CONDITIONS: dict[str, Degrade | None] = {
    "clean": None,
    "white noise 10 dB SNR": _noise("white", 10.0),
    "pink noise 5 dB SNR": _noise("pink", 5.0),
    "babble 10 dB SNR": _noise("babble", 10.0),
    f"reverberant room RT60 {ROOM_RT60} s": _reverb,
    "telephone (8 kHz, 300-3400 Hz, mu-law)": _telephone,
    "MP3 8 kbit/s": _codec("mp3"),
    "Opus 9 kbit/s": _codec("opus"),
    "quiet -30 dB": _quiet(-30.0),
    "quiet -40 dB": _quiet(-40.0),
    "2 s of room noise before and after": _room_noise_around,
}


def score_conditions(
    model: EmotionNet, clips: list[Clip], recordings: list[np.ndarray], device: torch.device | str = "cpu"
) -> dict[str, dict]:
    """Accuracy, UA and the refused count of ``model`` on ``recordings`` under every condition of CONDITIONS."""
    recognizer = EmotionRecognizer(model, device)
    labels = np.array([model.config.labels.index(c.emotion) for c in clips])
    # Babble talkers are other speakers of the set (any other clip, if the set holds one speaker).
    other_speakers = {
        actor: [r for c, r in zip(clips, recordings) if c.actor != actor] or recordings
        for actor in {c.actor for c in clips}
    }
    table = {}
    for k, (name, degrade) in enumerate(CONDITIONS.items()):
        predicted, refused = [], 0
        for i, (clip, recording) in enumerate(tqdm(list(zip(clips, recordings)), desc=name, leave=False)):
            audio = recording
            if degrade is not None:
                generator = torch.Generator().manual_seed(ROBUSTNESS_SEED + 1000 * k + i)
                audio = degrade(recording, generator, other_speakers[clip.actor])
            try:
                predicted.append(recognizer.labels.index(recognizer.predict((SAMPLE_RATE, audio)).label))
            except AudioError:
                predicted.append(-1)  # the app refuses it: the user gets no answer, which counts as wrong
                refused += 1
        hits = np.array(predicted) == labels
        table[name] = {
            "n": len(clips),
            "accuracy": float(hits.mean()),
            "unweighted_recall": float(np.mean([hits[labels == label].mean() for label in np.unique(labels)])),
            "refused": refused,
        }
    return table


def summarize_conditions(tables: list[dict[str, dict]]) -> dict[str, dict]:
    """Per-fold condition tables -> the mean over folds of each condition, with its drop from clean."""
    summary = {}
    for name in tables[0]:
        accuracy = [t[name]["accuracy"] for t in tables]
        ua = [t[name]["unweighted_recall"] for t in tables]
        summary[name] = {
            "n": sum(t[name]["n"] for t in tables),
            "accuracy": float(np.mean(accuracy)),
            "accuracy_std": float(np.std(accuracy)),
            "unweighted_recall": float(np.mean(ua)),
            "refused": sum(t[name]["refused"] for t in tables),
        }
    clean = summary["clean"]["accuracy"]
    for row in summary.values():
        row["drop"] = clean - row["accuracy"]
    return summary


def format_table(summary: dict[str, dict]) -> str:
    """A markdown table: condition, accuracy, UA, drop from clean, refused."""
    lines = ["| condition | clips | accuracy | UA | drop from clean | refused |", "|---|---|---|---|---|---|"]
    for name, row in summary.items():
        drop = "" if name == "clean" else f"{-100 * row['drop']:+.1f} points"
        accuracy, ua = f"{row['accuracy']:.1%}", f"{row['unweighted_recall']:.1%}"
        lines.append(f"| {name} | {row['n']} | {accuracy} | {ua} | {drop} | {row['refused']} |")
    return "\n".join(lines)


def _fit_length(recording: np.ndarray, n: int, generator: torch.Generator) -> torch.Tensor:
    """A talker looped or cut to ``n`` samples from a random point of its recording, so babble covers the whole
    recording. Every RAVDESS recording pauses at its start and end: talkers taken from their starts would all
    pause where the voice does, and babble scaled to "10 dB" over the recording would lie 7 dB below the voice."""
    start = int(torch.randint(len(recording), (1,), generator=generator))
    return torch.from_numpy(np.resize(np.roll(recording, -start), n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.robustness", description=__doc__)
    parser.add_argument("--data", required=True, help="folder of RAVDESS clips (WAV, FLAC, OGG/Opus or MP3)")
    parser.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder or Hub repo id")
    parser.add_argument("--revision", help="Hub revision to pin")
    parser.add_argument("--actors", type=int, nargs="*", help="score only these actors")
    parser.add_argument("--json", help="write the condition table here")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        model = EmotionNet.from_pretrained(args.model, revision=args.revision)
        clips = parse_ravdess(args.data)
    except (ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.actors:
        clips = [c for c in clips if c.actor in set(args.actors)]
    readable, recordings = [], []
    for clip in clips:  # a clip that cannot be decoded is left out here, as train.evaluate reports it
        try:
            recordings.append(load_recordings([clip])[0])
            readable.append(clip)
        except AudioError as e:
            print(f"skipped {clip.path}: {e}", file=sys.stderr)
    from ser_model.inference import resolve_device

    summary = summarize_conditions([score_conditions(model, readable, recordings, resolve_device(args.device))])
    print(f"{args.model} on {len(readable)} clips from actors {sorted({c.actor for c in readable})}:")
    print(format_table(summary))
    if args.json:
        rows = [{"condition": name, **row} for name, row in summary.items()]
        Path(args.json).write_text(json.dumps({"model": args.model, "data": args.data, "conditions": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
