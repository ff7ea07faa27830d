"""Hold any checkpoint to RAVDESS clips: python -m train.evaluate --data DIR [--model PATH_OR_REPO] [--json FILE]

Every RAVDESS speech file under DIR is scored through the same path the app uses; nothing is trained.
Only clips the model never trained on give an honest number: the shipped model heard every actor here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ser_model import DEFAULT_CHECKPOINT, AudioError, EmotionNet, ModelLoadError, load_audio, prepare_speech
from ser_model.inference import resolve_device

from .data import parse_ravdess
from .metrics import classification_metrics, plot_confusion
from .train import predict_speech


def evaluate_folder(
    data: str | Path, model_name: str | Path = DEFAULT_CHECKPOINT, device: str = "auto", revision: str | None = None
) -> dict:
    """Metrics of ``model_name`` on every RAVDESS clip under ``data``: accuracy, UA, macro-F1, confusion.

    A clip that cannot be used (undecodable, silent, too short) is skipped and listed with its reason under
    ``skipped``; the metrics are over the clips that were scored.
    """
    clips = parse_ravdess(data)
    model = EmotionNet.from_pretrained(model_name, revision=revision).to(resolve_device(device))
    unknown = {c.emotion for c in clips} - set(model.config.labels)
    if unknown:
        raise ValueError(f"The model does not know the emotions {sorted(unknown)}.")
    scored, speech, skipped = [], [], []
    for clip in clips:
        try:
            speech.append(prepare_speech(load_audio(clip.path)))
            scored.append(clip)
        except AudioError as e:
            skipped.append({"path": clip.path, "reason": str(e)})
    if not scored:
        raise ValueError(f"None of the {len(clips)} RAVDESS clips under {data} could be used.")
    labels = np.array([model.config.labels.index(c.emotion) for c in scored])
    probabilities = predict_speech(model, speech, next(model.parameters()).device)
    metrics = classification_metrics(labels, probabilities.argmax(1), model.config.labels)
    return {
        "model": str(model_name),
        "data": str(data),
        "actors": sorted({c.actor for c in scored}),
        **metrics,
        "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    parser.add_argument("--data", required=True, help="RAVDESS clips (any subset; WAV, FLAC, OGG/Opus, MP3)")
    parser.add_argument("--model", default=str(DEFAULT_CHECKPOINT), help="checkpoint folder or Hub repo id")
    parser.add_argument("--revision", help="Hub revision to pin")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--confusion-png", help="write the confusion matrix plot here")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        metrics = evaluate_folder(args.data, args.model, args.device, args.revision)
    except (ModelLoadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{metrics['n']} clips from actors {metrics['actors']}: accuracy {metrics['accuracy']:.1%}, "
        f"UA {metrics['unweighted_recall']:.1%}, macro-F1 {metrics['macro_f1']:.1%}"
    )
    for label, recall in metrics["per_class_recall"].items():
        print(f"  {label:>10s} recall {recall:.1%}")
    if metrics["skipped"]:
        print(f"skipped {len(metrics['skipped'])} clips that could not be used:")
        for clip in metrics["skipped"]:
            print(f"  {clip['path']}: {clip['reason']}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    if args.confusion_png:
        plot_confusion(metrics["confusion"], metrics["labels"], args.confusion_png, f"{args.model} on {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
