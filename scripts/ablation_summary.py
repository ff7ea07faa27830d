"""Print the augmentation ablation (scripts/ablation.sh) as a Markdown table."""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation")
print("| augmentation | folds | test clips | accuracy | UA | macro-F1 |")
print("|---|---|---|---|---|---|")
for metrics_file in sorted(root.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime):
    actors = json.loads(metrics_file.read_text())["actors"]
    acc, ua, f1 = (actors[m]["mean"] for m in ("accuracy", "unweighted_recall", "macro_f1"))
    folds = ", ".join(str(f["test_actors"]) for f in actors["folds"])
    name = metrics_file.parent.name
    print(f"| {name} | {folds} | {actors['pooled']['n']} | {acc:.1%} | {ua:.1%} | {f1:.1%} |")
