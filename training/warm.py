"""Warm start: a retrain that continues from the last trained model instead of the pretrained encoder.

A retrain with a few operator corrections that starts again from the pretrained encoder lands on a
model as different from the served one as a run with another seed: on the demo its held-out dialog
resolution moved by several points either way, whatever the corrections were. Continuing from the
model the last build trained, for a short schedule at a lower learning rate, learns the corrections
and keeps the rest of what that model knew (README, "Improve it").

    python -m training.pipeline --config configs/demo.yaml --warm-start    # both train and distill
    accelerate launch -m training.train --config configs/demo.yaml --set training.init_from=previous

`init_from` ("previous" or a model folder) is read by `training.train` (the teacher) and
`training.distill` (the student); `warm_epochs` and `warm_lr_scale` then replace the schedule.
The starting model's validation rows are kept as validation, so they stay unseen.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from core.errors import ArtifactError
from core.layout import MODEL_META_FILE

PREVIOUS = "previous"
S = TypeVar("S")


def warm_start(settings: S, output_dir: Path, base: Path | None = None) -> tuple[S, Path | None]:
    """(the settings this run trains with, the model folder to start from or None for a cold start).
    `output_dir`: where the run writes its model ("previous" reads it before it is replaced);
    `base`: the folder a relative `init_from` is resolved against (the config's)."""
    source = getattr(settings, "init_from", None)
    if not source:
        return settings, None
    folder = Path(output_dir) if source == PREVIOUS else Path(source)
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    if not (folder / MODEL_META_FILE).is_file():
        section = getattr(settings, "SECTION", "training")
        raise ArtifactError(f"{section}.init_from={source}: no trained model at {folder} to continue from; "
                            f"build one first (python -m training.pipeline) or drop the warm start")
    warm = replace(settings, epochs=settings.warm_epochs,
                   learning_rate=settings.learning_rate * settings.warm_lr_scale,
                   head_learning_rate=settings.head_learning_rate * settings.warm_lr_scale)
    return warm, folder.resolve()


def warm_overrides() -> list[str]:
    """`--set` overrides that make a whole build (teacher and student) a warm start."""
    return [f"training.init_from={PREVIOUS}", f"distill.init_from={PREVIOUS}"]
