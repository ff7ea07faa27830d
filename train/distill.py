"""Knowledge distillation: one model of the shipped size taught by an ensemble of earlier runs' models.

The mean of several seeds' probabilities scores 2-3 points above each seed on unseen speakers, but costs a
model per seed at inference. A student that matches the ensemble on the very inputs it trains on (the same
degraded, augmented log-mel: "function matching", Beyer et al. 2022) keeps the cost of one model.

A teacher is an earlier ``python -m train`` output folder; for each run (``actors-foldK``, ``final``) it lends
the model of its run of the same name, which must not have heard any actor the student holds out, so the
student's validation and test actors stay unseen by everything that taught it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ser_model.model import EmotionNet, ModelConfig


def load_teachers(
    folders: list[str], run_name: str, student_actors: set[int], config: ModelConfig, device: torch.device
) -> list[EmotionNet]:
    """The models of ``folders``' runs named ``run_name``, in eval mode, checked to have trained on
    ``student_actors`` only and to read the student's log-mel."""
    teachers = []
    for folder in map(Path, folders):
        model_dir, heard = _teacher_run(folder, run_name)
        if unseen := sorted(heard - student_actors):
            raise ValueError(
                f"The teacher {model_dir} trained on actors {unseen}, which {run_name} holds out; "
                "distil only from runs with the same folds."
            )
        teacher = EmotionNet.from_pretrained(model_dir).to(device).eval().requires_grad_(False)
        for field in ("labels", "n_mels", "clip_seconds"):
            if getattr(teacher.config, field) != getattr(config, field):
                raise ValueError(f"The teacher {model_dir} has another {field}; it cannot read the student's input.")
        teachers.append(teacher)
    return teachers


@torch.no_grad()
def ensemble_probabilities(teachers: list[EmotionNet], log_mel: Tensor, temperature: float) -> Tensor:
    """The mean of the teachers' probabilities at ``temperature``, on the log-mel the student sees."""
    return torch.stack([F.softmax(t.classify(log_mel).logits / temperature, dim=1) for t in teachers]).mean(0)


def distillation_loss(student_logits: Tensor, teacher_probabilities: Tensor, temperature: float) -> Tensor:
    """KL(teacher || student) at ``temperature``, scaled by its square so its gradients keep their size as the
    temperature changes (Hinton et al. 2015)."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher_probabilities, reduction="batchmean") * temperature**2


def _teacher_run(folder: Path, run_name: str) -> tuple[Path, set[int]]:
    """The model folder of ``folder``'s run ``run_name`` and the actors it trained on."""
    if not (folder / "clips.csv").is_file():
        raise ValueError(f"{folder} is not the output folder of a `python -m train` run (no clips.csv).")
    with open(folder / "clips.csv", newline="") as f:
        actors = {int(row["actor"]) for row in csv.DictReader(f)}
    try:
        if run_name == "final":  # the shipped model sits in the folder itself
            held_out = json.loads((folder / "metrics.json").read_text())["final"]["val_actors"]
            return folder, actors - set(held_out)
        result = json.loads((folder / "runs" / run_name / "result.json").read_text())
        held_out = result["test_actors"] + result["val_actors"]
    except (OSError, KeyError) as error:
        raise ValueError(
            f"{folder} has no finished, actor-disjoint run {run_name!r} to teach with ({error}); "
            "teachers serve the actors protocol and the final fit."
        ) from None
    return folder / "runs" / run_name / "model", actors - set(held_out)
