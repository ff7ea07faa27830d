"""Print an ablation (scripts/ablation.sh, scripts/ablation_channels.sh) as Markdown tables.

python scripts/ablation_summary.py [runs/ablation]                # clean accuracy per variant
python scripts/ablation_summary.py --channels [runs/ablation-channels]   # and accuracy under each condition
"""

import json
import sys
from pathlib import Path

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
        drops = [sum(t[c]["drop"] for c in conditions if c != "clean") / (len(conditions) - 1) for t in tables.values()]
        print("| **mean drop over conditions** | " + " | ".join(f"{100 * d:.1f} points" for d in drops) + " |")
