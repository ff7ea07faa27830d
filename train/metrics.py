"""Classification metrics and the plots that go into a checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # training runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def classification_metrics(targets: np.ndarray, predictions: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, unweighted average recall (UA), macro-F1, per-class recall and the confusion matrix.

    ``confusion[i][j]`` counts clips of true class ``i`` predicted as ``j``.
    """
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predictions), 1)
    true_counts, predicted_counts, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = true_counts > 0  # UA and macro-F1 average over the classes the set contains
    recall = np.divide(hits, true_counts, out=np.zeros(n), where=true_counts > 0)
    precision = np.divide(hits, predicted_counts, out=np.zeros(n), where=predicted_counts > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    return {
        "n": int(len(targets)),
        "accuracy": float(hits.sum() / max(len(targets), 1)),
        "unweighted_recall": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_recall": {label: float(r) for label, r in zip(labels, recall)},
        "labels": list(labels),
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: list[list[int]], labels: list[str], path: str | Path, title: str) -> None:
    matrix = np.asarray(confusion, dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=120)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                int(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path, title: str) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    validated = all("val_loss" in h for h in history)  # a run without early stopping has no validation
    if validated:
        loss_ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    if validated:
        metric_ax.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
        metric_ax.plot(epochs, [h["val_unweighted_recall"] for h in history], label="validation UA")
        metric_ax.legend()
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylim(0, 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
