"""RAVDESS: the clip table, the evaluation splits, and the decoded-audio cache."""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ser_model.audio import SAMPLE_RATE, load_audio, prepare_speech
from ser_model.model import EMOTIONS

from . import channels

# 03-01-05-02-01-02-12.wav: modality, vocal channel, emotion, intensity, statement, repetition, actor
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")  # what ser_model.audio.load_audio decodes
FILENAME = re.compile(
    r"^(\d\d)-(\d\d)-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d\d)\.(wav|flac|ogg|opus|mp3)$", re.IGNORECASE
)
AUDIO_ONLY, SPEECH = "03", "01"


@dataclass(frozen=True)
class Clip:
    path: str
    emotion: str
    intensity: str  # "normal" or "strong"
    statement: int  # 1 "Kids are talking by the door", 2 "Dogs are sitting by the door"
    repetition: int
    actor: int
    gender: str  # odd actors are male

    @property
    def label(self) -> int:
        return EMOTIONS.index(self.emotion)


def parse_ravdess(root: str | Path) -> list[Clip]:
    """Every RAVDESS speech clip under ``root`` (official 48 kHz WAV, our 16 kHz FLAC, or OGG/Opus/MP3 copies
    under the same names), sorted by path.

    Files whose names do not parse are skipped with a warning that counts them.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No dataset folder at {root}.")
    clips, skipped = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        match = FILENAME.match(path.name)
        if not match or match[1] != AUDIO_ONLY or match[2] != SPEECH:
            skipped += 1
            continue
        emotion, intensity, statement, repetition, actor = (int(g) for g in match.groups()[2:7])
        clips.append(
            Clip(
                path=str(path),
                emotion=EMOTIONS[emotion - 1],
                intensity="normal" if intensity == 1 else "strong",
                statement=statement,
                repetition=repetition,
                actor=actor,
                gender="male" if actor % 2 else "female",
            )
        )
    if skipped:
        warnings.warn(
            f"Skipped {skipped} audio files under {root} whose names are not RAVDESS speech clips.", stacklevel=2
        )
    if not clips:
        raise ValueError(
            f"No RAVDESS speech files under {root}. Expected Actor_XX/03-01-EE-II-SS-RR-AA.wav "
            "(the official Audio_Speech_Actors_01-24 download) or the same names as .flac."
        )
    return clips


def write_table(clips: list[Clip], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(Clip)])
        writer.writeheader()
        writer.writerows(asdict(c) for c in clips)


def actor_folds(clips: list[Clip], n_folds: int = 5) -> list[list[int]]:
    """Split the actors into ``n_folds`` test groups with as many men as women in each.

    With RAVDESS's 20 actors here (10 male, 10 female) and 5 folds: 2 men and 2 women per fold.
    Actors are assigned in ID order, alternating, so the folds are the same on every machine.
    """
    by_gender = defaultdict(list)
    for actor in sorted({c.actor for c in clips}):
        by_gender[actor % 2].append(actor)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    for group in by_gender.values():
        for i, actor in enumerate(group):
            folds[i % n_folds].append(actor)
    return [sorted(f) for f in folds]


def validation_actors(train_actors: list[int]) -> list[int]:
    """One man and one woman from the training actors, held out for early stopping."""
    men = [a for a in train_actors if a % 2]
    women = [a for a in train_actors if not a % 2]
    return sorted(men[-1:] + women[-1:])


def random_split(clips: list[Clip], seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> tuple[list[int], ...]:
    """The notebook's comparison protocol: an 80/10/10 clip split stratified by emotion (speakers shared)."""
    rng = random.Random(seed)
    by_emotion = defaultdict(list)
    for i, clip in enumerate(clips):
        by_emotion[clip.emotion].append(i)
    train, val, test = [], [], []
    for indices in by_emotion.values():
        rng.shuffle(indices)
        n_val, n_test = round(fractions[1] * len(indices)), round(fractions[2] * len(indices))
        test += indices[:n_test]
        val += indices[n_test : n_test + n_val]
        train += indices[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)


def load_recordings(
    clips: list[Clip], cache_dir: str | Path | None = None, codec: str | None = None
) -> list[np.ndarray]:
    """Each clip decoded and resampled by ``ser_model.audio.load_audio``, untrimmed: the recording as the app
    receives it. With ``codec`` ("mp3", "opus"), the same recording after that codec (``channels.codec``).

    Decoding (and encoding) is the slowest part of a run, so it runs on every core (libsndfile lets go of
    Python's lock) and the result is cached in ``cache_dir`` (an ``.npz`` keyed by the file list, the codec and
    the audio settings), reused by every fold and run. The cache is written whole or not at all, so runs started
    together (a sweep) may each write it but never read half of one.
    """
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1(("\n".join(c.path for c in clips) + f"|{SAMPLE_RATE}|{codec}|v2").encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"recordings-{key}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as cached:
                flat, offsets = cached["flat"], cached["offsets"]
            return [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    with ThreadPoolExecutor() as pool:  # map keeps the clips' order
        if codec is None:
            work = pool.map(load_audio, [c.path for c in clips])
        else:
            work = pool.map(partial(channels.codec, name=codec), load_recordings(clips, cache_dir))
        recordings = list(
            tqdm(work, total=len(clips), desc=f"{codec} copies" if codec else "decoding", unit="clip", leave=False)
        )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial_file = cache_file.with_suffix(f".{os.getpid()}.tmp")
        with open(partial_file, "wb") as f:
            np.savez(f, flat=np.concatenate(recordings), offsets=np.cumsum([0] + [len(r) for r in recordings]))
        os.replace(partial_file, cache_file)
    return recordings


def load_speech(clips: list[Clip], cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """Each clip as the model hears it clean: its recording trimmed and levelled by ``prepare_speech``."""
    return [prepare_speech(r) for r in load_recordings(clips, cache_dir)]
