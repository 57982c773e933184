"""Training losses, one small class each (the sentence-transformers split).

- `IntentClassificationLoss`: cross-entropy with label smoothing on the intent logits.
- `InBatchContrastiveLoss`: multiple-negatives ranking on (anchor, positive) pairs: every other
  positive in the batch is a negative, except pairs from the same group (the same FAQ).
- `SoftTargetDistillationLoss` / `EmbeddingDistillationLoss`: match a teacher's softened intent
  distribution and its embeddings (used by the student's distillation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IntentClassificationLoss(nn.Module):
    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class InBatchContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over cosine similarities of L2-normalised embeddings.

    `scale` is the inverse temperature (20 as in sentence-transformers' MultipleNegativesRankingLoss).
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = True) -> None:
        super().__init__()
        self.scale = float(scale)
        self.symmetric = symmetric

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        scores = anchors @ positives.T * self.scale
        if groups is not None:
            # Two pairs of the same FAQ in one batch are not negatives of each other.
            same = groups.unsqueeze(0) == groups.unsqueeze(1)
            same.fill_diagonal_(False)
            scores = scores.masked_fill(same, torch.finfo(scores.dtype).min)
        target = torch.arange(scores.size(0), device=scores.device)
        loss = F.cross_entropy(scores, target)
        if self.symmetric:
            loss = (loss + F.cross_entropy(scores.T, target)) / 2
        return loss


class SoftTargetDistillationLoss(nn.Module):
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton et al.)."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t


class EmbeddingDistillationLoss(nn.Module):
    """1 - cosine between student and teacher sentence embeddings (keeps retrieval in the same space)."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
