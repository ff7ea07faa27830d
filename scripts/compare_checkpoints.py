"""Two checkpoints' unseen-speaker results side by side, as a choice between them needs them.

python scripts/compare_checkpoints.py checkpoints/ser-parallel/metrics.json runs/pair/metrics.json

Reads the ``metrics.json`` that ``python -m train`` or ``python -m train.ensemble`` writes (actors protocol,
scored under the channel conditions) and prints a Markdown table: each condition's accuracy for both, the
difference, and each one's drop from clean; then the folds, the worst fold, the mean over clean audio and the
conditions, and the mean drop. It applies no rule: a rule is written down before the runs it judges.
"""

import argparse
import json
from pathlib import Path

from ablation_summary import mean_drop  # scripts/ is on the path when a script here runs


def read_actors(path: Path) -> dict:
    actors = json.loads(path.read_text()).get("actors")
    if not actors or "robustness" not in actors:
        raise SystemExit(f"{path} has no actors-protocol results scored under the channel conditions.")
    return actors


def comparison(before: dict, after: dict, names: tuple[str, str]) -> str:
    """The Markdown table and summary lines for ``before`` -> ``after`` (each a metrics.json's ``actors``)."""
    conditions = [c for c in before["robustness"] if c in after["robustness"]]
    rows = [
        f"| condition | {names[0]} | {names[1]} | difference | drop from clean |",
        "|---|---|---|---|---|",
    ]
    for condition in conditions:
        old, new = before["robustness"][condition]["accuracy"], after["robustness"][condition]["accuracy"]
        drops = [t["robustness"][condition]["drop"] * 100 for t in (before, after)]
        drop = "" if condition == "clean" else f"{drops[0]:.1f} -> {drops[1]:.1f} points"
        rows.append(f"| {condition} | {old:.1%} | {new:.1%} | {(new - old) * 100:+.1f} points | {drop} |")

    def summary(results: dict) -> str:
        folds = [f["accuracy"] for f in results["folds"]]
        table = results["robustness"]
        overall = sum(table[c]["accuracy"] for c in conditions) / len(conditions)
        return (
            f"folds {' / '.join(f'{a:.1%}' for a in folds)} (worst {min(folds):.1%}); mean over clean and the "
            f"{len(conditions) - 1} conditions {overall:.1%}; mean drop {mean_drop(table) * 100:.1f} points"
        )

    return "\n".join([*rows, "", f"{names[0]}: {summary(before)}", f"{names[1]}: {summary(after)}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="metrics.json of the checkpoint to compare against")
    parser.add_argument("after", type=Path, help="metrics.json of the candidate")
    args = parser.parse_args()
    names = (args.before.parent.name or "before", args.after.parent.name or "after")
    print(comparison(read_actors(args.before), read_actors(args.after), names))


if __name__ == "__main__":
    main()
