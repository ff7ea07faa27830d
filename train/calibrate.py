"""Calibrate a checkpoint's confidence on unseen speakers: python -m train.calibrate --checkpoint DIR

Reads the actors protocol's out-of-fold predictions (DIR/predictions_actors.csv: each clip scored by a model that
never heard its speaker) and fits a temperature for the logits (Guo et al. 2017, https://arxiv.org/abs/1706.04599),
so that "70% confident" means right about 70% of the time. A verdict is then "not sure" when its calibrated
probability is below NOT_SURE_BELOW: when it is more likely wrong than right. Every figure is cross-validated over
the folds (the temperature for each fold's clips fitted on the other folds); the temperature fitted on all folds,
and the threshold, are written into DIR/config.json, which the app reads.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from huggingface_hub import constants

NOT_SURE_BELOW = 0.5
TEMPERATURES = np.round(np.arange(0.25, 5.0, 0.01), 2)
N_BINS = 10  # for the expected calibration error


def read_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Out-of-fold log-probabilities (N, C), true class indices (N,), folds (N,) and the class names."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [name[2:] for name in rows[0] if name.startswith("p_")]
    probabilities = np.array([[float(row[f"p_{label}"]) for label in labels] for row in rows])
    targets = np.array([labels.index(row["true"]) for row in rows])
    folds = np.array([int(row["fold"]) for row in rows])
    return np.log(np.clip(probabilities, 1e-6, 1.0)), targets, folds, labels


def softmax(log_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of logits / T; log-probabilities are the logits up to a constant per clip, which cancels."""
    scaled = log_probabilities / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(log_probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of the true classes (a grid of 0.01 steps)."""
    nll = [
        -np.log(softmax(log_probabilities, t)[np.arange(len(targets)), targets] + 1e-12).mean() for t in TEMPERATURES
    ]
    return float(TEMPERATURES[int(np.argmin(nll))])


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by how many verdicts fall in each."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == targets
    bins = np.minimum((confidence * N_BINS).astype(int), N_BINS - 1)
    return float(
        sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    )


def calibrate(log_probabilities: np.ndarray, targets: np.ndarray, folds: np.ndarray) -> dict:
    """Cross-validated calibration report and the temperature fitted on every fold."""
    calibrated = np.zeros_like(log_probabilities)
    cross_validated = len(np.unique(folds)) > 1  # with one fold (quick runs), the report is in-sample
    for fold in np.unique(folds):
        held_out = folds == fold
        fit_on = ~held_out if cross_validated else held_out
        calibrated[held_out] = softmax(
            log_probabilities[held_out], fit_temperature(log_probabilities[fit_on], targets[fit_on])
        )
    raw = softmax(log_probabilities, 1.0)
    sure = calibrated.max(axis=1) >= NOT_SURE_BELOW
    correct = calibrated.argmax(axis=1) == targets
    return {
        "temperature": fit_temperature(log_probabilities, targets),
        "not_sure_below": NOT_SURE_BELOW,
        "n": len(targets),
        "cross_validated": cross_validated,
        "ece_before": expected_calibration_error(raw, targets),
        "ece_after": expected_calibration_error(calibrated, targets),
        "share_sure": float(sure.mean()),
        "accuracy_sure": float(correct[sure].mean()) if sure.any() else None,
        "accuracy_not_sure": float(correct[~sure].mean()) if (~sure).any() else None,
        "top_two_accuracy_not_sure": float(
            np.mean([t in np.argsort(p)[-2:] for p, t in zip(calibrated[~sure], targets[~sure])])
        )
        if (~sure).any()
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder with predictions_actors.csv")
    parser.add_argument("--dry-run", action="store_true", help="report only; leave config.json as it is")
    args = parser.parse_args(argv)
    folder = Path(args.checkpoint)
    predictions = folder / "predictions_actors.csv"
    if not predictions.is_file():
        print(f"error: {predictions} not found; run `python -m train --protocol actors` first", file=sys.stderr)
        return 1
    report = calibrate(*read_predictions(predictions)[:3])
    print(
        f"{report['n']} unseen-speaker clips: temperature {report['temperature']:.2f}; "
        f"ECE {report['ece_before']:.1%} -> {report['ece_after']:.1%} (cross-validated over folds)"
    )
    share = lambda key: "n/a" if report[key] is None else f"{report[key]:.1%}"  # noqa: E731
    print(
        f"verdicts at >= {NOT_SURE_BELOW:.0%}: {report['share_sure']:.0%} of clips, right {share('accuracy_sure')}; "
        f"'not sure': right {share('accuracy_not_sure')}, the true emotion among the two named "
        f"{share('top_two_accuracy_not_sure')}"
    )
    if not args.dry_run:
        apply(folder, report)
    return 0


def apply(folder: str | Path, report: dict) -> None:
    """Write the fitted temperature and threshold into the checkpoint's config.json, and the report beside it."""
    folder = Path(folder)
    (folder / "calibration.json").write_text(json.dumps(report, indent=2))
    config_file = folder / constants.CONFIG_NAME
    config = json.loads(config_file.read_text())
    config |= {"temperature": report["temperature"], "not_sure_below": report["not_sure_below"]}
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
