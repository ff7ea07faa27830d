"""Print an ablation (scripts/ablation.sh, scripts/ablation_channels.sh) as Markdown tables.

python scripts/ablation_summary.py [runs/ablation]                # clean accuracy per variant
python scripts/ablation_summary.py --channels [runs/ablation-channels]   # and accuracy under each condition
python scripts/ablation_summary.py --ensemble RUN RUN ...         # each run's folds, and their probabilities' mean
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np


def ensemble_fold_scores(run_dirs: list[Path]) -> list[dict]:
    """Clean accuracy on each fold's held-out actors of each run (same folds, e.g. other seeds) and of the mean
    of their probabilities: what an ensemble of the runs would score on speakers none of them heard. One dict
    per fold that every run has finished: ``fold``, ``test_actors``, ``single`` (one per run), ``ensemble``,
    ``agreement`` (the share of clips on which each later run's verdict is the first run's)."""
    folds = sorted(
        set.intersection(*({p.parent.name for p in d.glob("runs/actors-fold*/result.json")} for d in run_dirs))
    )
    if not folds:
        return []
    with open(run_dirs[0] / "clips.csv", newline="") as table:
        clips = list(csv.DictReader(table))  # in corpus order, which each fold's probabilities follow
    scores = []
    for fold in folds:
        results = [json.loads((d / "runs" / fold / "result.json").read_text()) for d in run_dirs]
        actors, labels = results[0]["test_actors"], results[0]["labels"]
        truth = np.array([labels.index(c["emotion"]) for c in clips if int(c["actor"]) in actors])
        probabilities = [np.array(r["probabilities"]) for r in results]
        scores.append(
            dict(
                fold=int(fold.removeprefix("actors-fold")),
                test_actors=actors,
                single=[float((p.argmax(1) == truth).mean()) for p in probabilities],
                ensemble=float((np.mean(probabilities, axis=0).argmax(1) == truth).mean()),
                agreement=float(
                    np.mean([(p.argmax(1) == probabilities[0].argmax(1)).mean() for p in probabilities[1:]])
                ),
            )
        )
    return scores


def mean_drop(robustness: dict[str, dict]) -> float:
    """The mean over the degraded conditions of a robustness table (metrics.json) of their drop from clean."""
    return float(np.mean([row["drop"] for condition, row in robustness.items() if condition != "clean"]))


def print_ensemble(run_dirs: list[Path]) -> None:
    print("| fold | test actors | " + " | ".join(d.name for d in run_dirs) + " | ensemble | agreement |")
    print("|---|---|" + "---|" * (len(run_dirs) + 2))
    scores = ensemble_fold_scores(run_dirs)
    for fold in scores:
        cells = " | ".join(f"{a:.1%}" for a in fold["single"])
        print(
            f"| {fold['fold']} | {fold['test_actors']} | {cells} | **{fold['ensemble']:.1%}** "
            f"| {fold['agreement']:.0%} |"
        )
    single = np.mean([fold["single"] for fold in scores], axis=0)
    ensemble, agreement = (np.mean([fold[k] for fold in scores]) for k in ("ensemble", "agreement"))
    cells = " | ".join(f"{a:.1%}" for a in single)
    print(f"| mean | {len(scores)} folds | {cells} | **{ensemble:.1%}** | {agreement:.0%} |")


def main() -> None:
    if "--ensemble" in sys.argv:
        print_ensemble([Path(a) for a in sys.argv[1:] if a != "--ensemble"])
        return

    channels = "--channels" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--channels"]
    root = Path(args[0] if args else "runs/ablation-channels" if channels else "runs/ablation")
    runs = sorted(root.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    print("| augmentation | folds | test clips | accuracy | UA | macro-F1 |")
    print("|---|---|---|---|---|---|")
    for metrics_file in runs:
        actors = json.loads(metrics_file.read_text())["actors"]
        acc, ua, f1 = (actors[m]["mean"] for m in ("accuracy", "unweighted_recall", "macro_f1"))
        folds = ", ".join(str(f["test_actors"]) for f in actors["folds"])
        name = metrics_file.parent.name
        print(f"| {name} | {folds} | {actors['pooled']['n']} | {acc:.1%} | {ua:.1%} | {f1:.1%} |")

    if channels:
        tables = {p.parent.name: json.loads(p.read_text())["actors"].get("robustness") for p in runs}
        tables = {name: table for name, table in tables.items() if table}
        if tables:
            conditions = list(next(iter(tables.values())))
            print("\nAccuracy under each condition (mean over folds; in brackets, the drop from clean):\n")
            print("| condition | " + " | ".join(tables) + " |")
            print("|---|" + "---|" * len(tables))
            for condition in conditions:
                cells = []
                for table in tables.values():
                    row = table[condition]
                    cells.append(
                        f"{row['accuracy']:.1%}" + ("" if condition == "clean" else f" ({-100 * row['drop']:+.1f})")
                    )
                print(f"| {condition} | " + " | ".join(cells) + " |")
            drops = [mean_drop(table) for table in tables.values()]
            print("| **mean drop over conditions** | " + " | ".join(f"{100 * d:.1f} points" for d in drops) + " |")


if __name__ == "__main__":
    main()
