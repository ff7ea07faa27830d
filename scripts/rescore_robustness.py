"""Score a finished run's fold models again under every channel condition, and rewrite the tables that hold them.

    python scripts/rescore_robustness.py --run experiments/late-cb2-90-s4 --checkpoint checkpoints/ser-parallel

For when the benchmark or the app's audio handling changes after a run has trained (the models stay as they
are): each fold's model is scored on its own held-out actors under every condition of ``train.robustness``,
exactly as ``python -m train`` scores it, and the run's ``metrics.json`` is rewritten. With ``--checkpoint``
(the run's final fit, which holds a copy of those metrics) its metrics and model card are rewritten too.
Prints the old and new table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ser_model import EmotionNet  # noqa: E402
from train.card import write_card  # noqa: E402
from train.data import load_recordings, parse_ravdess  # noqa: E402
from train.ensemble import read_config  # noqa: E402
from train.robustness import format_table, score_conditions, summarize_conditions  # noqa: E402
from train.train import _write_json  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished `python -m train --protocol actors` folder")
    parser.add_argument("--checkpoint", help="the run's final fit, whose metrics and card to rewrite as well")
    parser.add_argument("--data", help="RAVDESS folder (default: the one the run trained on)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    config = read_config(run)
    torch.set_num_threads(config.threads)
    metrics = json.loads((run / "metrics.json").read_text())
    clips = parse_ravdess(args.data or config.data)
    recordings = load_recordings(clips, config.cache_dir)

    before = metrics["actors"]["robustness"]
    for k, fold in enumerate(metrics["actors"]["folds"]):
        fold_dir = run / "runs" / f"actors-fold{k + 1}"
        model = EmotionNet.from_pretrained(fold_dir / "model")
        test_actors = set(fold["test_actors"])
        test_idx = [i for i, c in enumerate(clips) if c.actor in test_actors]
        if len(test_idx) != fold["n"]:
            raise SystemExit(f"fold {k + 1}: {len(test_idx)} clips of its actors here, {fold['n']} when it ran")
        fold["robustness"] = score_conditions(model, [clips[i] for i in test_idx], [recordings[i] for i in test_idx])
        result = json.loads((fold_dir / "result.json").read_text())
        _write_json(fold_dir / "result.json", result | {"robustness": fold["robustness"]})
    metrics["actors"]["robustness"] = summarize_conditions([f["robustness"] for f in metrics["actors"]["folds"]])
    print("before:\n" + format_table(before) + "\nnow:\n" + format_table(metrics["actors"]["robustness"]))

    _write_json(run / "metrics.json", metrics)
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        shipped = json.loads((checkpoint / "metrics.json").read_text())
        shipped["actors"] = metrics["actors"]
        _write_json(checkpoint / "metrics.json", shipped)
        write_card(checkpoint, read_config(checkpoint), shipped, EmotionNet.from_pretrained(checkpoint))


if __name__ == "__main__":
    main()
