"""One checkpoint from several runs of one recipe, measured as honestly as one run.

    python -m train.ensemble --runs runs/seed0 runs/seed0-no-es --out checkpoints/ser-parallel

Each run is a finished ``python -m train --protocol actors`` folder (its folds and its final fit) over the same
clips, folds and model shape. The runs differ in their seed, or in how they use the two validation actors
(held out for early stopping, or trained on for the whole schedule with ``--no-early-stopping``). For every
fold, the ensemble of the runs' models of that fold (none of which heard the fold's test actors) is scored on
the fold's held-out actors, clean and under every channel condition of ``train.robustness``. The runs' final
models become the shipped :class:`EmotionEnsemble`, calibrated on the ensemble's out-of-fold predictions, with
its card and metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from ser_model import EmotionEnsemble, EmotionNet, ModelConfig

from .augment import ChannelConfig
from .calibrate import apply, calibrate, read_predictions
from .card import write_card
from .data import actor_folds, parse_ravdess
from .hub import push_folder
from .robustness import score_conditions
from .train import Corpus, TrainConfig, _device, _log, _write_json, evaluate, load_corpus, summarize_folds

# What makes the members of one recipe different models: the seed, and whether the two validation actors are held
# out to stop on or trained on for the whole schedule (a model that saw two more voices; docs/experiments.md).
MEMBER_VARIANTS = ("seed", "early_stopping")
# What else a member run may differ in: where and how it ran, and what it measured besides its folds' clean
# scores (the ensemble is scored under the channel conditions itself). Anything else makes it another recipe.
MAY_DIFFER = {
    *MEMBER_VARIANTS,
    "out",
    "cache_dir",
    "resume",
    "device",
    "threads",
    "protocols",
    "final",
    "push_to_hub",
    "only_folds",
    "robustness",
}


def read_config(run: Path) -> TrainConfig:
    """A run's TrainConfig, from the ``train_config.json`` it wrote."""
    saved = json.loads((run / "train_config.json").read_text())
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in saved.items() if k in known}  # fields of older versions drop out
    return TrainConfig(
        **saved | {"model": ModelConfig(**saved["model"]), "channels": ChannelConfig(**saved["channels"])}
    )


def check_runs(runs: list[Path], final: bool = True, only_folds: list[int] | None = None) -> list[TrainConfig]:
    """The runs' configs, after checking that they are one recipe's different models (``MEMBER_VARIANTS``), each
    finished (its folds, or just ``only_folds``, and with ``final`` its final fit)."""
    if len(runs) < 2:
        raise ValueError("An ensemble needs at least two runs.")
    configs = [read_config(run) for run in runs]
    # Through JSON, so a tuple of one config and the list of another (as read back) compare equal.
    recipe = [{k: v for k, v in json.loads(json.dumps(asdict(c))).items() if k not in MAY_DIFFER} for c in configs]
    for run, other in zip(runs[1:], recipe[1:]):
        if changed := sorted(k for k in other if other[k] != recipe[0][k]):
            raise ValueError(f"{run} differs from {runs[0]} in {', '.join(changed)}: one recipe makes one ensemble.")
    if len({tuple(getattr(c, k) for k in MEMBER_VARIANTS) for c in configs}) < len(configs):
        raise ValueError("Two runs share a seed and a schedule: they are the same model, not an ensemble.")
    if any((run / "clips.csv").read_text() != (runs[0] / "clips.csv").read_text() for run in runs):
        raise ValueError("The runs did not read the same clips.")
    for run, config in zip(runs, configs):
        needed = only_folds or range(1, config.n_folds + 1)
        if unfinished := [k for k in needed if not (run / "runs" / f"actors-fold{k}" / "result.json").is_file()]:
            raise ValueError(f"{run} has not finished folds {unfinished}; finish them with --resume.")
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        if final and "final" not in metrics:
            raise ValueError(f"{run} has no finished final fit (metrics.json); finish it with --resume.")
    return configs


def score_folds(
    runs: list[Path],
    config: TrainConfig,
    corpus: Corpus,
    out: Path,
    robustness: bool,
    only_folds: list[int] | None = None,
) -> dict:
    """The actors protocol's report for the ensemble of the runs: each fold's ensemble of the runs' models of that
    fold (or of ``only_folds``), scored on the fold's held-out actors (and under every channel condition, with
    ``robustness``)."""
    device, clips = _device(config), corpus.clips
    folds = actor_folds(clips, config.n_folds)
    fold_results, probabilities = [], np.zeros((len(clips), len(config.model.labels)))
    for k, test_actors in enumerate(folds):
        if only_folds and k + 1 not in only_folds:
            continue
        fold_runs = [run / "runs" / f"actors-fold{k + 1}" for run in runs]
        member_results = [json.loads((fold_run / "result.json").read_text()) for fold_run in fold_runs]
        for fold_run, member in zip(fold_runs, member_results):
            if sorted(member["test_actors"]) != sorted(test_actors):
                raise ValueError(f"{fold_run} held out actors {member['test_actors']}, not {test_actors}.")
        ensemble = EmotionEnsemble.from_members([EmotionNet.from_pretrained(r / "model") for r in fold_runs])
        ensemble = ensemble.to(device)
        test_idx = [i for i, c in enumerate(clips) if c.actor in test_actors]
        result = evaluate(ensemble, [corpus.speech[i] for i in test_idx], corpus.labels[test_idx], device)
        probabilities[test_idx] = result.pop("probabilities")
        result |= {
            "test_actors": test_actors,
            "val_actors": sorted({a for member in member_results for a in member["val_actors"]}),
            "member_accuracy": [member["accuracy"] for member in member_results],
        }
        if robustness:
            test_recordings = [corpus.recordings[i] for i in test_idx]
            result["robustness"] = score_conditions(ensemble, [clips[i] for i in test_idx], test_recordings, device)
        fold_results.append(result)
        _log(
            f"fold {k + 1}/{len(folds)} test actors {test_actors}: ensemble acc {result['accuracy']:.3f} "
            f"(members {', '.join(f'{a:.3f}' for a in result['member_accuracy'])})"
        )
    return summarize_folds(clips, folds, fold_results, probabilities, config.model.labels, out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="finished training output folders, one per member")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--data", help="RAVDESS folder (default: the one the runs trained on)")
    parser.add_argument("--robustness", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--no-final", action="store_false", dest="final", help="score the folds only; ship no model")
    parser.add_argument(
        "--only-folds",
        nargs="+",
        type=int,
        metavar="K",
        help="score just these folds (1-based), e.g. while the runs' other folds train; needs --no-final",
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the checkpoint folder (token: HF_TOKEN)")
    args = parser.parse_args(argv)
    if args.only_folds and args.final:
        parser.error("--only-folds scores part of the folds; a shipped model is measured on all of them (--no-final)")
    runs, out = [Path(r) for r in args.runs], Path(args.out)
    configs = check_runs(runs, args.final, args.only_folds)
    config = configs[0]
    if args.data:
        config.data = args.data
    torch.set_num_threads(config.threads)
    out.mkdir(parents=True, exist_ok=True)

    clips = parse_ravdess(config.data)
    if config.actors:
        clips = [c for c in clips if c.actor in set(config.actors)]
    # Scoring needs each clip's recording and speech, not the codec copies training draws from.
    corpus = load_corpus(clips, replace(config, channels=replace(config.channels, codec_prob=0.0)))
    summary = score_folds(runs, config, corpus, out, args.robustness, args.only_folds)
    results = {
        "seed": [c.seed for c in configs],
        "members": [{k: getattr(c, k) for k in MEMBER_VARIANTS} for c in configs],
        "n_clips": len(clips),
        "n_actors": len({c.actor for c in clips}),
        "command": "python -m train.ensemble " + " ".join(sys.argv[1:] if argv is None else argv),
        "actors": summary,
    }
    acc = summary["accuracy"]
    _log(f"ensemble of {len(runs)}: unseen speakers {acc['mean']:.1%} ± {acc['std']:.1%}")
    if not args.final:
        _write_json(out / "metrics.json", results)
        return results

    # The shipped ensemble: the runs' final models, calibrated on the ensemble's out-of-fold predictions.
    member_metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    finals = [m["final"] for m in member_metrics]
    results |= {
        "hardware": member_metrics[0].get("hardware", "CPU"),
        "member_commands": [m["command"] for m in member_metrics],
        "final": finals[0] | {"members": finals, "wall_seconds": sum(f["wall_seconds"] for f in finals)},
    }
    EmotionEnsemble.from_members([EmotionNet.from_pretrained(run) for run in runs]).save_pretrained(out)
    results["calibration"] = calibrate(*read_predictions(out / "predictions_actors.csv")[:3])
    apply(out, results["calibration"])
    for run, member_config in zip(runs, configs):  # each member's own training curves
        slug = f"seed{member_config.seed}" + ("" if member_config.early_stopping else "_no_early_stopping")
        shutil.copyfile(run / "training_curves.png", out / f"training_curves_{slug}.png")
    write_card(out, config, results, EmotionEnsemble.from_pretrained(out))
    _write_json(out / "metrics.json", results)
    _write_json(out / "train_config.json", asdict(config) | {"ensemble_members": results["members"]})
    _log(f"saved the ensemble to {out}")
    if args.push_to_hub:
        push_folder(out, args.push_to_hub)
    return results


if __name__ == "__main__":
    main()
