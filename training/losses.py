"""Training losses, one small class each (the sentence-transformers split).

- `IntentClassificationLoss`: cross-entropy with label smoothing on the intent logits.
- `InBatchContrastiveLoss`: multiple-negatives ranking on (anchor, positive) pairs: every other
  positive in the *global* batch is a negative (gathered from every process), except pairs from
  the same group (the same FAQ).
- `SoftTargetDistillationLoss` / `EmbeddingDistillationLoss`: match a teacher's softened intent
  distribution and its embeddings (used by the student's distillation).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IntentClassificationLoss(nn.Module):
    """Cross-entropy with label smoothing. With `mask`, the mean over the masked rows of the *global*
    batch (see `global_masked_mean`), so rows are weighted alike on any number of processes."""

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        per_row = F.cross_entropy(logits, labels.clamp_min(0), label_smoothing=self.label_smoothing, reduction="none")
        return global_masked_mean(per_row, mask)


def _world() -> tuple[int, int]:
    """(rank, processes) of the running process group, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """All processes' rows, in rank order; the backward pass sums every process's gradient for
    this process's rows, so a loss over the gathered rows trains exactly as one process would.

    Every process must hold the same number of rows (the loop only makes full batches)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), x.size(0)
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_across_processes(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every process's rows, the offset of this process's rows in them); `x` itself on one process."""
    rank, world = _world()
    if world == 1:
        return x, 0
    gathered = _GatherWithGrad.apply(x) if x.requires_grad else _all_gather(x)
    return gathered, rank * x.size(0)


def global_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over the rows where `mask` holds, across every process's batch.

    A per-process mean would weight a row by 1 / (its process's masked rows): with 10 labelled rows
    on one process and 2 on the other, the 2 would count five times as much as on one process.
    Here each process returns its sum x processes / (masked rows everywhere), so the mean that DDP
    takes of the processes' gradients is the gradient of the global mean.
    """
    mask = mask.to(values.dtype)
    count = mask.sum().detach()
    _, world = _world()
    if world > 1:
        import torch.distributed as dist

        count = count.clone()
        dist.all_reduce(count)
    return (values * mask).sum() * world / count.clamp_min(1.0)


class InBatchContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over cosine similarities of L2-normalised embeddings.

    `scale` is the inverse temperature (20 as in sentence-transformers' MultipleNegativesRankingLoss).
    On N processes the negatives are the whole global batch, gathered from every process with
    their gradients, so N processes optimise the same loss as one process with the global batch.
    """

    def __init__(self, scale: float = 20.0, symmetric: bool = True) -> None:
        super().__init__()
        self.scale = float(scale)
        self.symmetric = symmetric

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        all_anchors, offset = gather_across_processes(anchors)
        all_positives, _ = gather_across_processes(positives)
        all_groups = gather_across_processes(groups)[0] if groups is not None else None
        target = offset + torch.arange(anchors.size(0), device=anchors.device)
        loss = self._ranking(anchors @ all_positives.T * self.scale, target, groups, all_groups)
        if self.symmetric:
            loss = (loss + self._ranking(positives @ all_anchors.T * self.scale, target, groups, all_groups)) / 2
        return loss

    @staticmethod
    def _ranking(scores: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | None,
                 all_groups: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy of each row's own pair against every other column of the global batch."""
        if groups is not None:
            # Two pairs of the same FAQ in one batch are not negatives of each other.
            same = groups.unsqueeze(1) == all_groups.unsqueeze(0)
            same[torch.arange(scores.size(0), device=scores.device), target] = False
            scores = scores.masked_fill(same, torch.finfo(scores.dtype).min)
        return F.cross_entropy(scores, target)


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
