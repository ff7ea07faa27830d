"""A training-only objective that makes the Transformer branch hold the voice apart from the noise.

Under loud noise the model loses what clean audio gives it (pink noise at 5 dB SNR costs 11 points), and more
noise in training, louder noise, a curriculum and a consistency loss all left that where it was
(docs/experiments.md). Here a small decoder reads the branch's tokens and predicts the *clean* recording's
log-mel at the same place, max-pooled over each token's frames as the branch reads it; its L1 error is added to
the task's loss. The tokens must then carry the voice as it was, not the noise over it. The decoder is dropped
after training: the shipped model, its weights and its inference cost are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ser_model.model import ModelConfig

TARGET_RANGE_DB = 80.0  # the target is floored this far below each clip's loudest token: no error spent on silence
DB_PER_UNIT = 10.0  # the decoder predicts in units of 10 dB, so its L1 error is of the order of the task's loss


class CleanSpeechDecoder(nn.Module):
    """The Transformer branch's tokens (B, T', D) -> the clean log-mel they stand for (B, F, T'), in 10-dB units."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.d_model, 2 * config.d_model), nn.GELU(), nn.Linear(2 * config.d_model, config.n_mels)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens).transpose(1, 2)


def denoising_loss(predicted: Tensor, clean_log_mel: Tensor, time_pool: int) -> Tensor:
    """The L1 error of the decoder's ``predicted`` (B, F, T') against the clean log-mel (B, F, T) in dB, as the
    model's frontend gives it."""
    return F.l1_loss(predicted, clean_target(clean_log_mel, time_pool))


def clean_target(clean_log_mel: Tensor, time_pool: int) -> Tensor:
    """(B, F, T) dB -> (B, F, T // time_pool) in 10-dB units: max-pooled over time as ``TransformerBranch`` pools
    the log-mel it reads, and floored :data:`TARGET_RANGE_DB` below each clip's peak."""
    pooled = F.max_pool1d(clean_log_mel, time_pool)
    floor = pooled.amax(dim=(1, 2), keepdim=True) - TARGET_RANGE_DB
    return torch.maximum(pooled, floor) / DB_PER_UNIT
