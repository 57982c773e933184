"""The in-batch contrastive loss on N processes gives the same gradients as on one process with
the global batch: its negatives are gathered from every process, with their gradients."""
from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers import free_port
from training.losses import InBatchContrastiveLoss

ROWS, DIM = 8, 6


def _batch() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(DIM, DIM)
    anchors, positives = torch.randn(ROWS, DIM), torch.randn(ROWS, DIM)
    groups = torch.tensor([0, 1, 2, 2, 3, 4, 5, 1])   # rows 2/3 and 1/7 share a group (not negatives)
    return layer, anchors, positives, groups


def _grads(layer: torch.nn.Linear, anchors, positives, groups) -> tuple[float, torch.Tensor]:
    norm = torch.nn.functional.normalize
    loss = InBatchContrastiveLoss(scale=20.0)(norm(layer(anchors), dim=-1), norm(layer(positives), dim=-1), groups)
    loss.backward()
    return float(loss.detach()), layer.weight.grad.clone()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    layer, anchors, positives, groups = _batch()
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    loss, grad = _grads(layer, anchors[rows], positives[rows], groups[rows])
    dist.all_reduce(grad)            # what DDP does: the mean of the processes' gradients
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, torch.tensor([loss]))
    if rank == 0:
        torch.save({"grad": grad / world, "loss": float(torch.cat(losses).mean())}, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one_with_the_global_batch(tmp_path):
    layer, anchors, positives, groups = _batch()
    loss, grad = _grads(layer, anchors, positives, groups)
    out = str(tmp_path / "two.pt")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2)
    two = torch.load(out)
    assert two["loss"] == pytest.approx(loss, rel=1e-5)
    torch.testing.assert_close(two["grad"], grad, rtol=1e-4, atol=1e-6)


def test_local_negatives_alone_would_differ():
    # The check above can fail: with only each half's own negatives the loss is another number.
    layer, anchors, positives, groups = _batch()
    loss, _ = _grads(layer, anchors, positives, groups)
    half = [_grads(*_batch()[:1], anchors[s], positives[s], groups[s])[0] for s in (slice(0, 4), slice(4, 8))]
    assert abs(sum(half) / 2 - loss) > 1e-3


def _ce_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from training.losses import IntentClassificationLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    layer, logits_in, labels = _ce_batch()
    rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    loss = IntentClassificationLoss(0.1)(layer(logits_in[rows]), labels[rows], mask=labels[rows] >= 0)
    loss.backward()
    grad = layer.weight.grad.clone()
    dist.all_reduce(grad)
    if rank == 0:
        torch.save(grad / world, out)
    dist.destroy_process_group()


def _ce_batch():
    torch.manual_seed(1)
    layer = torch.nn.Linear(DIM, 3)
    labels = torch.tensor([0, 1, 2, -1, -1, -1, -1, 1])   # 3 labelled rows on process 0, 1 on process 1
    return layer, torch.randn(ROWS, DIM), labels


@pytest.mark.slow
def test_labelled_rows_weigh_the_same_on_two_processes(tmp_path):
    from training.losses import IntentClassificationLoss

    layer, inputs, labels = _ce_batch()
    IntentClassificationLoss(0.1)(layer(inputs), labels, mask=labels >= 0).backward()
    out = str(tmp_path / "ce.pt")
    mp.spawn(_ce_worker, args=(2, free_port(), out), nprocs=2)
    torch.testing.assert_close(torch.load(out), layer.weight.grad, rtol=1e-4, atol=1e-6)
